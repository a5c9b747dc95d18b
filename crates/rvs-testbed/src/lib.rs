//! Test support: network namespaces, a director / real-server bed, the daemon under test.
//! See README.md. Everything here panics with a clear message on a set-up failure: it runs
//! in tests only.

use rvs_ctl::Client;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// What a namespace test needs from the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    Root,
    Tun,
    Iproute2,
    BusyboxHttpd,
}

/// Why the test cannot run here, if it cannot.
pub fn skip_reason(needs: &[Need]) -> Option<&'static str> {
    for need in needs {
        let missing = match need {
            // SAFETY: trivial libc call.
            Need::Root => (unsafe { libc::geteuid() } != 0).then_some("not root"),
            Need::Tun => (!Path::new("/dev/net/tun").exists()).then_some("no /dev/net/tun"),
            Need::Iproute2 => Command::new("ip")
                .arg("-V")
                .output()
                .is_err()
                .then_some("no iproute2"),
            Need::BusyboxHttpd => (!Command::new("busybox")
                .args(["httpd", "--help"])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stderr).contains("httpd")))
            .then_some("no busybox httpd"),
        };
        if missing.is_some() {
            return missing;
        }
    }
    None
}

/// `ip ARGS`, which must succeed.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ip ARGS`'s standard output, whatever its status.
pub fn ip_out(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Move this thread into the network namespace `ns`.
pub fn enter(ns: &str) {
    let f = std::fs::File::open(format!("/var/run/netns/{ns}")).expect("open netns");
    // SAFETY: a valid namespace fd; affects only this thread.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns {ns}: {}", std::io::Error::last_os_error());
}

/// Run `f` on a thread inside the network namespace `ns`.
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_string();
    thread::spawn(move || {
        enter(&ns);
        f()
    })
    .join()
    .expect("thread in namespace panicked")
}

/// A named network namespace with its loopback up; deleted on drop.
#[derive(Debug)]
pub struct Netns(String);

impl Netns {
    pub fn new(name: String) -> Netns {
        // One left over by a killed run of the same pid would make `add` fail.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        let ns = Netns(name);
        ip(&["-n", ns.name(), "link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.0
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// A fresh directory under the temporary directory; removed on drop.
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn new(name: &str) -> ScratchDir {
        let dir = std::env::temp_dir().join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        ScratchDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process, killed and reaped on drop.
#[derive(Debug)]
pub struct Process(Child);

impl Process {
    pub fn new(child: Child) -> Process {
        Process(child)
    }

    pub fn child(&mut self) -> &mut Child {
        &mut self.0
    }

    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// SIGKILL, as a crash, and reap it.
    pub fn kill(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How a [`DirectorBed`] is laid out.
#[derive(Clone, Copy, Debug)]
pub struct BedSpec<'a> {
    /// Tells apart the beds of tests (and processes) running at once: the namespaces are
    /// `rvs-<tag><pid>-d` and `-r`.
    pub tag: &'a str,
    /// The director's address on `d0`, with its prefix length (`10.77.1.1/24`); also the
    /// real servers' default route.
    pub director: &'a str,
    /// The real servers' addresses on `r0` (same prefix length).
    pub real_servers: &'a [&'a str],
}

/// A director namespace and a real-server namespace joined by a veth pair `d0` / `r0`, a
/// scratch directory, and the processes started in them; all removed on drop (processes
/// first, then the namespaces).
#[derive(Debug)]
pub struct DirectorBed {
    daemon: Option<Process>,
    processes: Vec<Process>,
    director: Netns,
    real: Netns,
    dir: ScratchDir,
}

impl DirectorBed {
    pub fn new(spec: BedSpec<'_>) -> DirectorBed {
        let id = format!("{}{}", spec.tag, std::process::id());
        let director = Netns::new(format!("rvs-{id}-d"));
        let real = Netns::new(format!("rvs-{id}-r"));
        let dir = ScratchDir::new(&format!("rvs-bed-{id}"));
        let (d, r) = (director.name(), real.name());
        ip(&[
            "link", "add", "d0", "netns", d, "type", "veth", "peer", "name", "r0", "netns", r,
        ]);
        ip(&["-n", d, "addr", "add", spec.director, "dev", "d0"]);
        let prefix = spec.director.split_once('/').map_or("32", |(_, p)| p);
        for a in spec.real_servers {
            ip(&[
                "-n",
                r,
                "addr",
                "add",
                &format!("{a}/{prefix}"),
                "dev",
                "r0",
            ]);
        }
        ip(&["-n", d, "link", "set", "d0", "up"]);
        ip(&["-n", r, "link", "set", "r0", "up"]);
        let gateway = spec.director.split('/').next().unwrap_or(spec.director);
        ip(&["-n", r, "route", "add", "default", "via", gateway]);
        DirectorBed {
            daemon: None,
            processes: Vec::new(),
            director,
            real,
            dir,
        }
    }

    /// The director namespace's name.
    pub fn d(&self) -> &str {
        self.director.name()
    }

    /// The real-server namespace's name.
    pub fn r(&self) -> &str {
        self.real.name()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The daemon's control socket.
    pub fn sock(&self) -> PathBuf {
        self.dir.join("rvs.sock")
    }

    /// `BIN daemon --socket S --state F ARGS` in the director namespace, stdout and stderr
    /// as given; returns once it answers a ping (30 s at most).
    pub fn start_daemon<I, A>(&mut self, bin: &str, args: I, stderr: Stdio)
    where
        I: IntoIterator<Item = A>,
        A: AsRef<OsStr>,
    {
        let child = Command::new("ip")
            .args(["netns", "exec", self.d(), bin, "daemon", "--socket"])
            .arg(self.sock())
            .arg("--state")
            .arg(self.dir.join("state.json"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn rvs daemon");
        self.daemon = Some(Process::new(child));
        let deadline = Instant::now() + Duration::from_secs(30);
        while Client::connect(&self.sock())
            .and_then(|mut c| c.ping())
            .is_err()
        {
            assert!(Instant::now() < deadline, "the daemon did not come up");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The running daemon, if any.
    pub fn daemon(&mut self) -> Option<&mut Child> {
        self.daemon.as_mut().map(Process::child)
    }

    /// Take the daemon out of the bed (to wait for its exit, say).
    pub fn take_daemon(&mut self) -> Option<Process> {
        self.daemon.take()
    }

    /// busybox httpd on `addr:80` in the real-server namespace, serving `body` as
    /// index.html; returns once it accepts connections (5 s at most).
    pub fn httpd(&mut self, addr: &str, body: &str) -> Process {
        let root = self.dir.join(format!("www-{addr}"));
        std::fs::create_dir_all(&root).expect("create httpd root");
        std::fs::write(root.join("index.html"), body).expect("write index.html");
        let child = Command::new("ip")
            .args(["netns", "exec", self.r(), "busybox", "httpd", "-f", "-p"])
            .arg(format!("{addr}:80"))
            .arg("-h")
            .arg(&root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn busybox httpd");
        let process = Process::new(child);
        let sa: SocketAddr = format!("{addr}:80").parse().expect("httpd address");
        in_ns(self.r(), move || {
            let t = Instant::now();
            while TcpStream::connect_timeout(&sa, Duration::from_millis(200)).is_err() {
                assert!(t.elapsed() < Duration::from_secs(5), "httpd {sa} not up");
                thread::sleep(Duration::from_millis(20));
            }
        });
        process
    }

    /// Keep `p` until the bed goes.
    pub fn keep(&mut self, p: Process) {
        self.processes.push(p);
    }
}

/// One request of an [`HttpLoad`]: when it started, and which real server answered
/// (1-based) or why none did.
#[derive(Clone, Debug)]
pub struct Hit {
    pub at: Instant,
    pub server: Result<usize, String>,
}

/// Clients in a namespace, each GETting `/index.html` from a virtual service one request
/// after another (5 ms apart); real server N answers `rsN\n` (as [`DirectorBed::httpd`]
/// serves it). Stopped on drop.
pub struct HttpLoad {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    hits: Arc<Mutex<Vec<Hit>>>,
    servers: usize,
}

impl HttpLoad {
    /// `clients` clients in `ns` against `vip`, real servers `rs1` to `rs<servers>`.
    pub fn start(ns: &str, vip: SocketAddr, clients: usize, servers: usize) -> HttpLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let threads = (0..clients)
            .map(|_| {
                let (stop, hits, ns) = (stop.clone(), hits.clone(), ns.to_string());
                thread::spawn(move || {
                    enter(&ns);
                    while !stop.load(Ordering::Relaxed) {
                        let at = Instant::now();
                        let server = http_get_server(vip, servers);
                        hits.lock().expect("hits").push(Hit { at, server });
                        thread::sleep(Duration::from_millis(5));
                    }
                })
            })
            .collect();
        HttpLoad {
            stop,
            threads,
            hits,
            servers,
        }
    }

    /// Hits started in [from, to): per real server (index N-1 for `rsN`) and the failures.
    pub fn tally(&self, from: Instant, to: Instant) -> (Vec<usize>, Vec<String>) {
        let mut n = vec![0; self.servers];
        let mut errs = Vec::new();
        for h in self
            .hits
            .lock()
            .expect("hits")
            .iter()
            .filter(|h| h.at >= from && h.at < to)
        {
            match &h.server {
                Ok(i) => n[i - 1] += 1,
                Err(e) => errs.push(e.clone()),
            }
        }
        (n, errs)
    }

    /// Stop the clients and wait for them.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for HttpLoad {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One HTTP/1.0 request to `vip`: which of `rs1`..`rs<servers>` answered.
pub fn http_get_server(vip: SocketAddr, servers: usize) -> Result<usize, String> {
    let mut s = TcpStream::connect_timeout(&vip, Duration::from_secs(2))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| format!("timeout: {e}"))?;
    s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&buf);
    (1..=servers)
        .find(|i| text.ends_with(&format!("rs{i}\n")))
        .ok_or_else(|| format!("answer: {text:?}"))
}
