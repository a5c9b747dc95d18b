//! The driver against a fake daemon (a Unix socket answering the JSON-lines protocol):
//! the start-up table is programmed with one all-or-nothing batch computed against the
//! daemon's table (scoped to the file's services); a killed backend goes
//! to weight 0 (inhibit_on_failure) or is removed, and comes back.

use rvs_core::Op;
use rvs_ctl::protocol::{Payload, Request, Response};
use rvs_health::driver::Driver;
use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// Every request the fake daemon received, in order.
type Log = Arc<Mutex<Vec<Request>>>;

fn fake_daemon(path: &PathBuf) -> Log {
    let l = UnixListener::bind(path).unwrap();
    let log: Log = Arc::default();
    let log2 = log.clone();
    std::thread::spawn(move || {
        let Ok((s, _)) = l.accept() else { return };
        let mut reader = BufReader::new(s.try_clone().unwrap());
        let mut writer = s;
        let mut txn = Vec::new();
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            let req: Request = serde_json::from_str(line.trim_end()).unwrap();
            line.clear();
            let resp = match &req {
                Request::TxnOps { ops } => {
                    txn.extend(ops.iter().cloned());
                    Response::ok()
                }
                Request::TxnCommit => Response::data(Payload::Applied {
                    ops: std::mem::take(&mut txn),
                }),
                Request::Ping => Response::data(Payload::Pong {
                    daemon: "fake".into(),
                    version: "0".into(),
                    protocol: 1,
                    pid: 1,
                    dataplane: None,
                }),
                // An empty table with the kernel's defaults.
                Request::Snapshot { .. } => Response::data(Payload::Snapshot {
                    snapshot: serde_json::from_value(serde_json::json!({
                        "conn_tab_size": 4096,
                        "services": [],
                        "timeouts": {"tcp": 900, "tcp_fin": 120, "udp": 300},
                        "daemons": [],
                        "stats": {"conns": 0, "inpkts": 0, "outpkts": 0, "inbytes": 0, "outbytes": 0},
                        "rates": {"cps": 0, "inpps": 0, "outpps": 0, "inbps": 0, "outbps": 0},
                    }))
                    .unwrap(),
                }),
                _ => Response::ok(),
            };
            log2.lock().unwrap().push(req);
            let mut v = serde_json::to_vec(&resp).unwrap();
            v.push(b'\n');
            if writer.write_all(&v).is_err() {
                return;
            }
        }
    });
    log
}

fn applied(log: &Log) -> Vec<Op> {
    log.lock()
        .unwrap()
        .iter()
        .filter_map(|r| match r {
            Request::Apply { op } => Some(op.clone()),
            _ => None,
        })
        .collect()
}

async fn wait_for(log: &Log, what: &str, f: impl Fn(&[Op]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f(&applied(log)) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; applied: {:#?}",
            applied(log)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn weight_of(op: &Op, port: u16) -> Option<i32> {
    match op {
        Op::EditDest(_, d) | Op::AddDest(_, d) if d.port == port => Some(d.weight),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_killed_and_restored() {
    let dir = std::env::temp_dir().join(format!("rvs-health-driver-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("rvs.sock");
    let log = fake_daemon(&sock);

    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let p = backend.local_addr().unwrap().port();
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let q = closed.local_addr().unwrap().port();
    drop(closed);
    let flag = dir.join("down-notified");
    let conf = format!(
        "virtual_server 10.9.9.9 80 {{
    delay_loop 1
    lb_algo rr
    lb_kind NAT
    protocol TCP
    real_server 127.0.0.1 {p} {{
        weight 3
        inhibit_on_failure
        notify_down \"/usr/bin/touch {flag}\"
        TCP_CHECK {{
            connect_timeout 1
            retry 1
            delay_before_retry 1
        }}
    }}
    real_server 127.0.0.1 {q} {{
        weight 2
        TCP_CHECK {{
            connect_timeout 1
        }}
    }}
}}
",
        flag = flag.display()
    );
    let accept = tokio::spawn(async move {
        loop {
            let _ = backend.accept().await;
        }
    });
    let (stop_tx, stop_rx) = tokio::sync::mpsc::unbounded_channel();
    let socket = sock.clone();
    // The configuration is not Send: the driver runs on its own thread, as under
    // `rvs keepalived run`, with a current-thread runtime.
    let driver = std::thread::spawn(move || {
        let (cfg, diags) = rvs_health::conf::load_str(&conf, "test.conf");
        assert!(!diags.has_errors(), "{:?}", diags.list);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut out = Vec::new();
        let r = rt.block_on(
            Driver {
                socket,
                log: &mut out,
                seed: 1,
                file: None,
                remove_on_stop: true,
            }
            .run(&cfg, stop_rx),
        );
        (r, String::from_utf8_lossy(&out).into_owned())
    });

    // Start-up: both real servers in one batch (keepalived starts them up), after a look
    // at the table.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let reqs = log.lock().unwrap().clone();
        if let Some(at) = reqs
            .iter()
            .position(|r| matches!(r, Request::ApplyBatch { .. }))
        {
            assert!(
                reqs[..at]
                    .iter()
                    .any(|r| matches!(r, Request::Snapshot { .. })),
                "{reqs:?}"
            );
            let Request::ApplyBatch { ops } = reqs[at].clone() else {
                unreachable!()
            };
            assert!(matches!(ops[0], Op::AddService(_)), "{ops:?}");
            assert_eq!(
                ops.iter()
                    .filter_map(|o| weight_of(o, p))
                    .collect::<Vec<_>>(),
                [3]
            );
            assert_eq!(
                ops.iter()
                    .filter_map(|o| weight_of(o, q))
                    .collect::<Vec<_>>(),
                [2]
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no start-up transaction: {reqs:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The server on the closed port is removed (no inhibit_on_failure).
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    wait_for(&log, "the dead server's removal", |ops| {
        ops.iter()
            .any(|o| matches!(o, Op::DelDest(_, a, port) if *a == lo && *port == q))
    })
    .await;
    assert!(
        !applied(&log).iter().any(|o| weight_of(o, p).is_some()),
        "the live server was touched: {:?}",
        applied(&log)
    );

    // Kill the backend: inhibited to weight 0, and notify_down runs.
    accept.abort();
    let _ = accept.await;
    let killed = Instant::now();
    wait_for(&log, "weight 0", |ops| {
        ops.iter().any(|o| weight_of(o, p) == Some(0))
    })
    .await;
    // Down after retry (1) failures delay_before_retry (1 s) apart, plus delay_loop.
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "{:?}",
        killed.elapsed()
    );
    let t = Instant::now();
    while !flag.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "notify_down did not run"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Bring it back on the same port: weight 3 again.
    let backend = TcpListener::bind(("127.0.0.1", p)).await.unwrap();
    let accept = tokio::spawn(async move {
        loop {
            let _ = backend.accept().await;
        }
    });
    wait_for(&log, "weight 3 again", |ops| {
        ops.iter().rev().find_map(|o| weight_of(o, p)) == Some(3)
    })
    .await;

    // SIGTERM's path: keepalived's services are removed.
    stop_tx.send(rvs_health::driver::Command::Stop).unwrap();
    let (r, out) = tokio::task::spawn_blocking(move || driver.join().unwrap())
        .await
        .unwrap();
    assert_eq!(r, Ok(()), "{out}");
    assert!(
        matches!(applied(&log).last(), Some(Op::DelService(_))),
        "{:?}",
        applied(&log)
    );
    assert!(out.contains("TCP_CHECK"), "{out}");
    accept.abort();
    let _ = std::fs::remove_dir_all(&dir);
}
