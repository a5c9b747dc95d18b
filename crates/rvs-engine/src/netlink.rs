//! A small synchronous rtnetlink client for [`crate::Plumbing`]: messages are built and
//! parsed by `netlink-packet-route`, the socket is `netlink-sys`'s. What this adds is
//! batching: many requests go into one datagram and their acknowledgements are collected
//! afterwards, so that installing ten thousand routes costs a few hundred system calls, not
//! ten thousand round trips (nor ten thousand `ip` processes).

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_DUMP, NLM_F_MULTIPART, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR,
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use std::io;
use std::os::fd::AsRawFd;

/// Requests per datagram. Each acknowledgement occupies about a kilobyte of the socket's
/// receive buffer until it is read (the skb's overhead, not its 36 bytes), so a window this
/// size fits even the default buffer; the buffer is enlarged anyway (see [`Netlink::open`]).
const WINDOW: usize = 256;

/// Largest datagram read: dumps come in parts of at most 32 KiB.
const RECV_BUF: usize = 64 * 1024;

/// How long to wait for the kernel's answer before giving up (it answers synchronously, so
/// this only matters if an acknowledgement was lost to a full receive buffer).
const RECV_TIMEOUT_SECS: libc::time_t = 5;

/// One request of a batch: a message and the flags beyond `NLM_F_REQUEST | NLM_F_ACK`
/// (`NLM_F_CREATE`, `NLM_F_EXCL`, `NLM_F_REPLACE`).
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub msg: RouteNetlinkMessage,
    pub flags: u16,
}

/// A route netlink socket in the network namespace of the thread that opened it.
#[derive(Debug)]
pub(crate) struct Netlink {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

/// A request that failed: the kernel's error number (0 when no answer came) and text (its
/// extended-ack message, or why no answer came).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Nack {
    pub errno: i32,
    pub text: Option<String>,
}

impl Nack {
    fn transport(e: &io::Error) -> Nack {
        Nack {
            errno: e.raw_os_error().unwrap_or(0),
            text: Some(format!("netlink: {e}")),
        }
    }

    /// As an `io::Error`, saying what was asked.
    pub fn into_io(self, what: &str) -> io::Error {
        let base = if self.errno != 0 {
            io::Error::from_raw_os_error(self.errno)
        } else {
            io::Error::other("no answer")
        };
        let text = match self.text {
            Some(t) => format!("{what}: {base} ({t})"),
            None => format!("{what}: {base}"),
        };
        io::Error::new(base.kind(), text)
    }
}

/// The `NLMSGERR_ATTR_MSG` string of an error message's payload (the error code, the
/// request's header — capped: `NETLINK_CAP_ACK` is set — then attributes).
fn ext_ack_message(payload: &[u8]) -> Option<String> {
    const NLMSGERR_ATTR_MSG: u16 = 1;
    let mut rest = payload.get(4 + 16..)?;
    while rest.len() >= 4 {
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        let kind = u16::from_ne_bytes([rest[2], rest[3]]);
        if len < 4 || len > rest.len() {
            return None;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let text = &rest[4..len];
            let text = text.split(|&b| b == 0).next().unwrap_or(text);
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        rest = rest.get(len.next_multiple_of(4)..).unwrap_or(&[]);
    }
    None
}

/// The netlink messages of one datagram: (header fields, whole message bytes).
fn messages(data: &[u8]) -> impl Iterator<Item = (u16, u16, u32, &[u8])> {
    let mut off = 0;
    std::iter::from_fn(move || {
        let rest = data.get(off..)?;
        let b = NetlinkBuffer::new_checked(rest).ok()?;
        let len = b.length() as usize;
        let item = (
            b.message_type(),
            b.flags(),
            b.sequence_number(),
            &rest[..len],
        );
        off += len.next_multiple_of(4).max(16);
        Some(item)
    })
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Netlink> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        // Short acknowledgements, with the kernel's reason in text on errors. Both are
        // optional comforts (old kernels): failures to set them are ignored.
        let _ = sock.set_cap_ack(true);
        let _ = sock.set_ext_ack(true);
        // Room for a whole window of acknowledgements with a wide margin.
        let _ = sock.set_rx_buf_sz(4 * 1024 * 1024);
        let tv = libc::timeval {
            tv_sec: RECV_TIMEOUT_SECS,
            tv_usec: 0,
        };
        // SAFETY: a valid socket and a timeval of the size given.
        let r = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Netlink {
            sock,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Appends `msg` with sequence number `seq` to `out`, aligned.
    fn encode(out: &mut Vec<u8>, msg: &RouteNetlinkMessage, flags: u16, seq: u32) {
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = seq;
        let mut m = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg.clone()));
        m.finalize();
        let start = out.len();
        out.resize(start + m.buffer_len().next_multiple_of(4), 0);
        m.serialize(&mut out[start..]);
    }

    fn recv(&mut self) -> io::Result<()> {
        self.buf.clear();
        self.buf.reserve(RECV_BUF);
        let n = self.sock.recv(&mut self.buf, 0)?;
        if n > self.buf.len() {
            return Err(io::Error::other("netlink: datagram larger than the buffer"));
        }
        Ok(())
    }

    /// Sends every request and returns each one's outcome, in order. Requests go
    /// [`WINDOW`] to a datagram; the kernel handles the messages of a datagram one after
    /// the other, so a later request sees the effect of an earlier one.
    pub fn batch(&mut self, reqs: &[Request]) -> Vec<Result<(), Nack>> {
        let mut results = Vec::with_capacity(reqs.len());
        let mut out = Vec::new();
        for chunk in reqs.chunks(WINDOW) {
            out.clear();
            let first = self.seq.wrapping_add(1);
            for r in chunk {
                let seq = self.next_seq();
                Self::encode(&mut out, &r.msg, NLM_F_REQUEST | NLM_F_ACK | r.flags, seq);
            }
            let mut got: Vec<Option<Result<(), Nack>>> = vec![None; chunk.len()];
            let mut pending = chunk.len();
            let mut fail = self.sock.send(&out, 0).err();
            while fail.is_none() && pending > 0 {
                if let Err(e) = self.recv() {
                    fail = Some(e);
                    break;
                }
                for (kind, _, seq, msg) in messages(&self.buf) {
                    let i = seq.wrapping_sub(first) as usize;
                    if kind != NLMSG_ERROR || i >= chunk.len() || got[i].is_some() {
                        continue;
                    }
                    let payload = &msg[16..];
                    let Some(code) = payload.get(..4) else {
                        continue;
                    };
                    let code = i32::from_ne_bytes([code[0], code[1], code[2], code[3]]);
                    got[i] = Some(if code == 0 {
                        Ok(())
                    } else {
                        let flags = NetlinkBuffer::new(msg).flags();
                        let text = (flags & NLM_F_ACK_TLVS != 0)
                            .then(|| ext_ack_message(payload))
                            .flatten();
                        Err(Nack {
                            errno: code.saturating_abs(),
                            text,
                        })
                    });
                    pending -= 1;
                }
            }
            for g in got {
                results.push(match (g, &fail) {
                    (Some(r), _) => r,
                    (None, Some(e)) => Err(Nack::transport(e)),
                    (None, None) => Err(Nack {
                        errno: 0,
                        text: None,
                    }),
                });
            }
            if fail.is_some() {
                // Whatever is still queued belongs to this chunk: drop it so that the next
                // request does not read stale answers (their sequence numbers differ anyway).
                self.drain();
            }
        }
        results
    }

    fn drain(&mut self) {
        loop {
            self.buf.clear();
            self.buf.reserve(RECV_BUF);
            if self.sock.recv(&mut self.buf, libc::MSG_DONTWAIT).is_err() {
                return;
            }
        }
    }

    /// One request, its outcome.
    pub fn request(&mut self, req: Request) -> Result<(), Nack> {
        self.batch(&[req]).pop().unwrap_or(Err(Nack {
            errno: 0,
            text: None,
        }))
    }

    /// Everything a dump request (`RTM_GET*` with `NLM_F_DUMP`) returns. Messages this
    /// crate version cannot parse are skipped.
    pub fn dump(&mut self, msg: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.query(msg, NLM_F_DUMP)
    }

    /// The answer to a request that is not a dump (`RTM_GETROUTE` for one destination,
    /// `RTM_GETNEIGH` for one address): its one message, or the kernel's error.
    pub fn get(&mut self, msg: RouteNetlinkMessage) -> io::Result<Option<RouteNetlinkMessage>> {
        Ok(self.query(msg, 0)?.pop())
    }

    fn query(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        let seq = self.next_seq();
        let mut out = Vec::new();
        Self::encode(&mut out, &msg, NLM_F_REQUEST | flags, seq);
        self.sock.send(&out, 0)?;
        let mut found = Vec::new();
        loop {
            self.recv()?;
            let mut done = false;
            for (kind, flags, s, bytes) in messages(&self.buf) {
                if s != seq {
                    continue;
                }
                match kind {
                    NLMSG_DONE => done = true,
                    NLMSG_ERROR => {
                        let code = bytes
                            .get(16..20)
                            .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                            .unwrap_or(0);
                        if code != 0 {
                            return Err(io::Error::from_raw_os_error(code.saturating_abs()));
                        }
                        done = true;
                    }
                    _ => {
                        if let Ok(NetlinkMessage {
                            payload: NetlinkPayload::InnerMessage(m),
                            ..
                        }) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes)
                        {
                            found.push(m);
                        }
                        if flags & NLM_F_MULTIPART == 0 {
                            done = true;
                        }
                    }
                }
            }
            if done {
                return Ok(found);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ext_ack_text_is_found_after_the_capped_header() {
        let mut p = (-17i32).to_ne_bytes().to_vec();
        p.extend_from_slice(&[0u8; 16]);
        // An attribute of another type first, then the message (type 1).
        p.extend_from_slice(&8u16.to_ne_bytes());
        p.extend_from_slice(&2u16.to_ne_bytes());
        p.extend_from_slice(&[1, 2, 3, 4]);
        let text = b"File exists\0";
        p.extend_from_slice(&((4 + text.len()) as u16).to_ne_bytes());
        p.extend_from_slice(&1u16.to_ne_bytes());
        p.extend_from_slice(text);
        assert_eq!(ext_ack_message(&p).as_deref(), Some("File exists"));
        // Truncated or malformed payloads give nothing, never a panic.
        assert_eq!(ext_ack_message(&p[..10]), None);
        let mut bad = p[..20].to_vec();
        bad.extend_from_slice(&[200, 0, 1, 0]);
        assert_eq!(ext_ack_message(&bad), None);
    }

    #[test]
    fn messages_split_a_datagram_and_stop_at_garbage() {
        let mut out = Vec::new();
        let msg = RouteNetlinkMessage::GetRule(Default::default());
        Netlink::encode(&mut out, &msg, NLM_F_REQUEST, 7);
        Netlink::encode(&mut out, &msg, NLM_F_REQUEST, 8);
        out.extend_from_slice(&[1, 2, 3]);
        let seqs: Vec<u32> = messages(&out).map(|(_, _, s, _)| s).collect();
        assert_eq!(seqs, [7, 8]);
    }
}
