//! The ipvsadm [`Backend`] over the control API: a thin adapter around [`rvs_ctl::Client`]
//! that turns the client's errors into rvs's own one-line messages.

use rvs_core::snapshot::{ConnSnap, Snapshot};
use rvs_core::{CtlError, Op, ServiceKey};
use rvs_ctl::Client;
use rvs_ipvsadm::{Backend, BackendError};

/// `ipvsadm` and `rvs restore` talking to the daemon.
pub struct CtlBackend(pub Client);

fn failure(e: rvs_ctl::Error) -> BackendError {
    BackendError(e.to_string())
}

impl Backend for CtlBackend {
    fn apply(&mut self, op: &Op) -> Result<Result<(), CtlError>, BackendError> {
        self.0.apply(op).map_err(failure)
    }

    fn apply_batch(&mut self, ops: &[Op]) -> Result<Result<(), (usize, CtlError)>, BackendError> {
        self.0.apply_batch(ops).map_err(failure)
    }

    fn apply_each(&mut self, ops: &[Op]) -> Result<Vec<Result<(), CtlError>>, BackendError> {
        self.0.apply_each(ops).map_err(failure)
    }

    fn start_each(
        &mut self,
        ops: &[Op],
    ) -> Result<Option<Vec<Result<(), CtlError>>>, BackendError> {
        self.0.start_apply_each(ops).map_err(failure)
    }

    fn finish_each(&mut self) -> Result<Vec<Result<(), CtlError>>, BackendError> {
        self.0.finish_apply_each().map_err(failure)
    }

    fn snapshot(&mut self) -> Result<Snapshot, BackendError> {
        self.0.snapshot().map_err(failure)
    }

    fn snapshot_service(
        &mut self,
        key: &ServiceKey,
    ) -> Result<Result<Snapshot, CtlError>, BackendError> {
        self.0.snapshot_service(key).map_err(failure)
    }

    fn connections(&mut self) -> Result<Vec<ConnSnap>, BackendError> {
        self.0.connections().map_err(failure)
    }
}

#[cfg(test)]
mod tests {
    //! The command line's messages against a scripted daemon on a temporary socket.

    use super::*;
    use crate::protocol::{
        ErrorCode, MAX_OPS_PER_REQUEST, MAX_REQUEST_BYTES, Payload, Request, Response,
    };
    use rvs_core::{Errno, Table, Time};
    use rvs_ipvsadm::Names;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::path::PathBuf;
    use std::thread::JoinHandle;

    struct Dir(PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    struct Peer {
        reader: BufReader<UnixStream>,
        writer: UnixStream,
    }

    impl Peer {
        fn raw(&mut self) -> String {
            let mut s = String::new();
            self.reader.read_line(&mut s).unwrap();
            s.trim_end().to_string()
        }

        fn req(&mut self) -> Request {
            let s = self.raw();
            serde_json::from_str(&s).unwrap_or_else(|e| panic!("{e}: {s}"))
        }

        fn send(&mut self, r: &Response) {
            let mut v = serde_json::to_vec(r).unwrap();
            v.push(b'\n');
            self.writer.write_all(&v).unwrap();
        }
    }

    /// A daemon whose one connection runs `script`, and a backend connected to it.
    fn daemon(
        tag: &str,
        script: impl FnOnce(&mut Peer) + Send + 'static,
    ) -> (Dir, CtlBackend, JoinHandle<()>) {
        let dir = Dir(std::env::temp_dir().join(format!("rvs-cli-{tag}-{}", std::process::id())));
        let _ = std::fs::remove_dir_all(&dir.0);
        std::fs::create_dir_all(&dir.0).unwrap();
        let path = dir.0.join("rvs.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let h = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut p = Peer {
                reader: BufReader::new(s.try_clone().unwrap()),
                writer: s,
            };
            script(&mut p);
        });
        let b = CtlBackend(Client::connect(&path).unwrap());
        (dir, b, h)
    }

    struct Out {
        rc: i32,
        stdout: String,
        stderr: String,
    }

    fn ipvsadm(b: &mut CtlBackend, line: &str, stdin: &str) -> Out {
        let args: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        let mut input = std::io::Cursor::new(stdin.as_bytes().to_vec());
        let (mut o, mut e) = (Vec::new(), Vec::new());
        let rc = rvs_ipvsadm::run_with_names(&args, &Names::empty(), &mut input, &mut o, &mut e, b);
        Out {
            rc,
            stdout: String::from_utf8_lossy(&o).into_owned(),
            stderr: String::from_utf8_lossy(&e).into_owned(),
        }
    }

    fn ctl(errno: Errno) -> Response {
        Response::CtlError {
            index: None,
            error: CtlError::new(errno),
        }
    }

    #[test]
    fn rvs_failures_are_not_kernel_messages() {
        let (_d, mut b, h) = daemon("busy", |p| {
            p.send(&Response::error(
                ErrorCode::Busy,
                "too many control clients",
            ));
        });
        h.join().unwrap();
        let r = ipvsadm(&mut b, "-Ln", "");
        assert_eq!(r.rc, 2);
        assert!(
            r.stderr.starts_with("rvs: the rvs daemon at "),
            "{}",
            r.stderr
        );
        assert!(r.stderr.contains("is busy"), "{}", r.stderr);
        assert!(!r.stderr.contains("Can't initialize"), "{}", r.stderr);
        assert!(r.stdout.is_empty());

        let (_d, mut b, h) = daemon("persist", |p| {
            let _ = p.req();
            p.send(&Response::error(ErrorCode::PersistFailed, "disk full"));
        });
        let r = ipvsadm(&mut b, "-A -t 10.0.0.1:80", "");
        h.join().unwrap();
        assert_eq!(r.rc, 2);
        assert_eq!(
            r.stderr,
            "rvs: the rvs daemon could not save the change, so it was not made: disk full\n"
        );
    }

    #[test]
    fn kernel_errors_keep_ipvsadms_words() {
        let (_d, mut b, h) = daemon("kernel", |p| {
            assert!(matches!(p.req(), Request::Apply { .. }));
            p.send(&ctl(Errno::Exist));
        });
        let r = ipvsadm(&mut b, "-A -t 10.0.0.1:80", "");
        h.join().unwrap();
        assert_eq!((r.rc, r.stderr.as_str()), (255, "Service already exists\n"));
    }

    #[test]
    fn listing_one_service_asks_for_that_service() {
        let (_d, mut b, h) = daemon("one", |p| {
            let raw = p.raw();
            assert_eq!(
                raw,
                r#"{"req":"snapshot","service":{"Addr":{"protocol":"Tcp","addr":"10.0.0.1","port":80}}}"#
            );
            let mut t = Table::new();
            let key = ServiceKey::Addr {
                protocol: rvs_core::Protocol::Tcp,
                addr: "10.0.0.1".parse().unwrap(),
                port: 80,
            };
            t.apply(
                &Op::AddService(rvs_core::ServiceConfig::new(key)),
                Time::ZERO,
            )
            .unwrap();
            p.send(&Response::data(Payload::Snapshot {
                snapshot: t.snapshot(4096),
            }));
            assert!(matches!(p.req(), Request::Snapshot { service: Some(_) }));
            p.send(&ctl(Errno::Srch));
        });
        let r = ipvsadm(&mut b, "-L -n -t 10.0.0.1:80", "");
        assert_eq!(r.rc, 0, "{}", r.stderr);
        assert!(r.stdout.contains("TCP  10.0.0.1:80 wlc"), "{}", r.stdout);
        let r = ipvsadm(&mut b, "-L -n -t 10.0.0.2:80", "");
        h.join().unwrap();
        assert_eq!((r.rc, r.stderr.as_str()), (1, "No such service\n"));
    }

    #[test]
    fn restore_sends_runs_with_apply_each() {
        let (_d, mut b, h) = daemon("each", |p| match p.req() {
            Request::ApplyEach { ops } => {
                assert_eq!(ops.len(), 25);
                let results = (0..25)
                    .map(|i| (i == 7).then(|| CtlError::new(Errno::Exist)))
                    .collect();
                p.send(&Response::data(Payload::Results { results }));
            }
            other => panic!("{other:?}"),
        });
        let input: String = (0..25)
            .map(|i| format!("-A -t 10.0.0.1:{}\n", i + 1))
            .collect();
        let r = ipvsadm(&mut b, "-R", &input);
        h.join().unwrap();
        assert_eq!((r.rc, r.stderr.as_str()), (0, "Service already exists\n"));
    }

    #[test]
    fn atomic_restore_of_110000_lines_streams_a_transaction() {
        const LINES: usize = 110_000;
        let (_d, mut b, h) = daemon("atomic", |p| {
            assert_eq!(p.req(), Request::TxnBegin { replace: false });
            p.send(&Response::ok());
            let mut total = 0;
            loop {
                let raw = p.raw();
                assert!(raw.len() <= MAX_REQUEST_BYTES);
                match serde_json::from_str::<Request>(&raw).unwrap() {
                    Request::TxnOps { ops } => {
                        assert!(!ops.is_empty() && ops.len() <= MAX_OPS_PER_REQUEST);
                        total += ops.len();
                        p.send(&Response::ok());
                    }
                    Request::TxnCommit => break,
                    other => panic!("{other:?}"),
                }
            }
            assert_eq!(total, LINES);
            p.send(&Response::CtlError {
                index: Some(LINES - 1),
                error: CtlError::new(Errno::NoEnt),
            });
        });
        let mut input = String::from("-A -t 10.0.0.1:80 -s rr\n");
        for i in 1..LINES {
            input.push_str(&format!(
                "-a -t 10.0.0.1:80 -r 10.{}.{}.{}:80 -m\n",
                i >> 16,
                (i >> 8) & 0xff,
                i & 0xff
            ));
        }
        let mut stdin = std::io::Cursor::new(input.into_bytes());
        let (mut o, mut e) = (Vec::new(), Vec::new());
        let rc = rvs_ipvsadm::restore_atomic_with_names(
            &mut stdin,
            &mut o,
            &mut e,
            &mut b,
            &Names::empty(),
        );
        h.join().unwrap();
        assert_eq!(rc, 255);
        assert_eq!(
            String::from_utf8_lossy(&e),
            format!("ipvsadm: line {LINES}: No such file or directory\n")
        );
    }
}
