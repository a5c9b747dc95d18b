//! The control socket: accepting clients within a cap, reading bounded request lines with
//! idle and read timeouts, writing responses with a write timeout (a client that stops
//! reading is dropped, never buffered without bound), and the daemon's lifecycle: a
//! termination signal waits for the requests in flight to be answered.

use super::Shared;
use super::control;
use crate::protocol::{ErrorCode, MAX_REQUEST_BYTES, Response};
use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Bounds on control clients.
#[derive(Clone, Debug)]
pub struct ClientLimits {
    /// Concurrent connections; one more is told `busy` and closed.
    pub max_clients: usize,
    /// A connection with no request for this long is closed.
    pub idle_timeout: Duration,
    /// A request line must arrive whole within this long once it has started.
    pub read_timeout: Duration,
    /// A response (or one part of a streamed one) must be taken by the client within this
    /// long, or the connection is dropped.
    pub write_timeout: Duration,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            max_clients: 128,
            idle_timeout: Duration::from_secs(300),
            read_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
        }
    }
}

/// Requests in flight and whether the daemon is stopping: a signal ends the daemon only
/// between requests, so that a change is either answered as applied or not applied.
#[derive(Default)]
pub struct Lifecycle {
    state: Mutex<(bool, usize)>,
    idle: Condvar,
}

impl Lifecycle {
    /// Start a request; `false` when the daemon is stopping (the request must not run).
    pub fn enter(&self) -> bool {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if g.0 {
            return false;
        }
        g.1 += 1;
        true
    }

    pub fn leave(&self) {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        g.1 = g.1.saturating_sub(1);
        if g.1 == 0 {
            self.idle.notify_all();
        }
    }

    /// Refuse new requests and wait (at most `limit`) for those in flight to be answered.
    pub fn stop(&self, limit: Duration) {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        g.0 = true;
        let deadline = Instant::now() + limit;
        while g.1 > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                eprintln!("rvs daemon: {} request(s) still running at exit", g.1);
                return;
            }
            g = self
                .idle
                .wait_timeout(g, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// Accept clients until the process ends.
pub fn serve(shared: Arc<Shared>, listener: UnixListener) {
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                eprintln!("rvs daemon: accept: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let limits = &shared.limits;
        if active.load(Ordering::SeqCst) >= limits.max_clients {
            refuse_busy(stream, limits.max_clients);
            continue;
        }
        active.fetch_add(1, Ordering::SeqCst);
        let (sh, act) = (shared.clone(), active.clone());
        let spawned = std::thread::Builder::new()
            .name("rvs-client".into())
            .spawn(move || {
                serve_client(&sh, stream);
                act.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            active.fetch_sub(1, Ordering::SeqCst);
            eprintln!("rvs daemon: cannot start a client thread: {e}");
        }
    }
}

/// Tell a client over the cap why it is turned away, without letting it hold the accept
/// loop: the write is non-blocking and the line is short.
fn refuse_busy(mut stream: UnixStream, cap: usize) {
    let _ = stream.set_nonblocking(true);
    let resp = Response::error(
        ErrorCode::Busy,
        format!("too many control clients (the limit is {cap}); try again"),
    );
    let _ = stream.write_all(&encode(&resp));
}

fn encode(resp: &Response) -> Vec<u8> {
    let mut out = serde_json::to_vec(resp).unwrap_or_else(|e| {
        format!(
            "{{\"status\":\"error\",\"code\":\"internal\",\"message\":{:?}}}",
            e.to_string()
        )
        .into_bytes()
    });
    out.push(b'\n');
    out
}

/// Where a client's responses go: each line is written with the write timeout; a client
/// that does not read is dropped.
pub struct Replies<'a> {
    stream: &'a UnixStream,
    broken: bool,
}

impl Replies<'_> {
    pub fn send(&mut self, resp: &Response) -> bool {
        if self.broken {
            return false;
        }
        let mut s = self.stream;
        if s.write_all(&encode(resp)).is_err() {
            self.broken = true;
        }
        !self.broken
    }
}

/// What reading one request line gave.
enum Line {
    Request(Vec<u8>),
    /// The client closed the connection between requests.
    Closed,
    TooLong,
    IdleTimeout,
    ReadTimeout,
    Failed,
}

/// Reads request lines with bounded memory: at most `MAX_REQUEST_BYTES` per line, and the
/// buffer shrinks back after a large request.
struct LineReader {
    buf: Vec<u8>,
    /// Bytes of `buf` already scanned for a newline.
    scanned: usize,
}

/// The first read of a request, and what the buffer keeps between requests. Requests are a
/// few hundred bytes; a read of READ_MAX (zero-filled first) made every control client touch
/// 64 KiB, and with a thread per client, k clients at once held k times that: the daemon's RSS
/// stepped up the first time k control clients overlapped (bench/soak.sh, docs/abuse.md).
const READ_MIN: usize = 4 * 1024;
/// The largest read: a long request (a restore) is read in chunks that double up to this.
const READ_MAX: usize = 64 * 1024;
/// Poll period of a blocked read, so the idle and read timeouts are checked.
const READ_SLICE: Duration = Duration::from_millis(500);

impl LineReader {
    fn next(&mut self, mut stream: &UnixStream, limits: &ClientLimits) -> Line {
        let waiting_since = Instant::now();
        let mut started: Option<Instant> = (!self.buf.is_empty()).then(Instant::now);
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf[self.scanned..]) {
                let end = self.scanned + i;
                if end > MAX_REQUEST_BYTES {
                    return Line::TooLong;
                }
                // Hand the line over without copying it: what follows it (at most one read's
                // worth) moves to a new buffer instead.
                let rest = self.buf.split_off(end + 1);
                let mut line = std::mem::replace(&mut self.buf, rest);
                line.truncate(end);
                self.scanned = 0;
                if self.buf.capacity() < READ_MIN {
                    self.buf.reserve(READ_MIN);
                }
                return Line::Request(line);
            }
            self.scanned = self.buf.len();
            if self.buf.len() > MAX_REQUEST_BYTES {
                return Line::TooLong;
            }
            let old = self.buf.len();
            self.buf.resize(old + old.clamp(READ_MIN, READ_MAX), 0);
            let r = stream.read(&mut self.buf[old..]);
            match r {
                Ok(0) => {
                    self.buf.truncate(old);
                    return if old == 0 { Line::Closed } else { Line::Failed };
                }
                Ok(n) => {
                    self.buf.truncate(old + n);
                    started.get_or_insert_with(Instant::now);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    self.buf.truncate(old);
                    match started {
                        Some(t) if t.elapsed() > limits.read_timeout => return Line::ReadTimeout,
                        None if waiting_since.elapsed() > limits.idle_timeout => {
                            return Line::IdleTimeout;
                        }
                        _ => {}
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => self.buf.truncate(old),
                Err(_) => return Line::Failed,
            }
        }
    }
}

fn serve_client(shared: &Shared, stream: UnixStream) {
    let limits = &shared.limits;
    if stream.set_read_timeout(Some(READ_SLICE)).is_err()
        || stream
            .set_write_timeout(Some(limits.write_timeout))
            .is_err()
    {
        return;
    }
    let mut reader = LineReader {
        buf: Vec::new(),
        scanned: 0,
    };
    let mut replies = Replies {
        stream: &stream,
        broken: false,
    };
    let mut session = control::Session::default();
    loop {
        let line = match reader.next(&stream, limits) {
            Line::Request(l) => l,
            Line::Closed | Line::Failed => return,
            Line::TooLong => {
                replies.send(&Response::error(
                    ErrorCode::TooLarge,
                    format!(
                        "request line longer than {MAX_REQUEST_BYTES} bytes; nothing was \
                         done (split large changes into a transaction)"
                    ),
                ));
                return;
            }
            Line::IdleTimeout => {
                replies.send(&Response::error(
                    ErrorCode::Timeout,
                    format!(
                        "no request for {} s; connection closed",
                        limits.idle_timeout.as_secs()
                    ),
                ));
                return;
            }
            Line::ReadTimeout => {
                replies.send(&Response::error(
                    ErrorCode::Timeout,
                    format!(
                        "request line not complete after {} s; nothing was done",
                        limits.read_timeout.as_secs()
                    ),
                ));
                return;
            }
        };
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        let req = match crate::protocol::parse_request(line) {
            Ok(r) => r,
            Err(e) => {
                if !replies.send(&Response::error(
                    ErrorCode::BadRequest,
                    format!("bad request: {e}"),
                )) {
                    return;
                }
                continue;
            }
        };
        if !shared.lifecycle.enter() {
            replies.send(&Response::error(
                ErrorCode::Stopping,
                "the daemon is stopping; the request was not carried out",
            ));
            return;
        }
        control::handle(shared, &mut session, req, &mut replies);
        shared.lifecycle.leave();
        if replies.broken {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    fn reader() -> LineReader {
        LineReader {
            buf: Vec::new(),
            scanned: 0,
        }
    }

    #[test]
    fn short_requests_keep_a_small_buffer_and_long_lines_arrive_whole() {
        let (mut tx, rx) = UnixStream::pair().unwrap();
        rx.set_read_timeout(Some(READ_SLICE)).unwrap();
        let limits = ClientLimits::default();
        let mut r = reader();
        tx.write_all(b"{\"short\":1}\n").unwrap();
        match r.next(&rx, &limits) {
            Line::Request(l) => assert_eq!(l, b"{\"short\":1}"),
            _ => panic!("the short request"),
        }
        // What a control client's thread holds between requests (and touched to read one):
        // a few KiB, not a 64-KiB read buffer per client.
        assert!(
            r.buf.capacity() <= 8 * 1024,
            "capacity {}",
            r.buf.capacity()
        );
        // A line of 300 KiB, read in growing chunks, arrives whole; then a short one.
        let long = vec![b'x'; 300 * 1024];
        let writer = std::thread::spawn(move || {
            tx.write_all(&long).unwrap();
            tx.write_all(b"\nnext\n").unwrap();
            tx
        });
        match r.next(&rx, &limits) {
            Line::Request(l) => {
                assert_eq!(l.len(), 300 * 1024);
                assert!(l.iter().all(|&b| b == b'x'));
            }
            _ => panic!("the long request"),
        }
        match r.next(&rx, &limits) {
            Line::Request(l) => assert_eq!(l, b"next"),
            _ => panic!("the request after it"),
        }
        assert!(
            r.buf.capacity() <= 2 * READ_MAX,
            "the buffer shrank back: {}",
            r.buf.capacity()
        );
        drop(writer.join().unwrap());
        assert!(matches!(r.next(&rx, &limits), Line::Closed));
    }
}
