//! `ipvsadm -R` streams: runs of table operations are sent together with `apply_each`, yet
//! everything printed (and the exit code, and the table) is what the line-by-line run gives.

use proptest::prelude::*;
use proptest::test_runner::Config;
use rvs_core::snapshot::{ConnSnap, Snapshot};
use rvs_core::{CtlError, Op};
use rvs_ipvsadm::{Backend, BackendError, MemBackend, Names, run_with_names};

/// A [`MemBackend`] that holds back `pending` operations and records how `-R` sent them.
struct Paced {
    inner: MemBackend,
    pending: usize,
    /// The size of each `apply_each` call.
    each: Vec<usize>,
    /// `apply` calls (`-R` should make none).
    single: usize,
    /// Make `apply_each` fail as a lost daemon would.
    fail_each: bool,
    /// Answer `start_each` later, in `finish_each`, as a daemon over a socket does.
    pipelined: bool,
    outstanding: Option<Vec<Result<(), CtlError>>>,
}

impl Paced {
    fn new(pending: usize) -> Paced {
        Paced {
            inner: MemBackend::new(),
            pending,
            each: Vec::new(),
            single: 0,
            fail_each: false,
            pipelined: false,
            outstanding: None,
        }
    }

    fn pipelined(pending: usize) -> Paced {
        Paced {
            pipelined: true,
            ..Paced::new(pending)
        }
    }
}

impl Backend for Paced {
    fn apply(&mut self, op: &Op) -> Result<Result<(), CtlError>, BackendError> {
        self.single += 1;
        self.inner.apply(op)
    }
    fn apply_batch(&mut self, ops: &[Op]) -> Result<Result<(), (usize, CtlError)>, BackendError> {
        self.inner.apply_batch(ops)
    }
    fn apply_each(&mut self, ops: &[Op]) -> Result<Vec<Result<(), CtlError>>, BackendError> {
        if self.fail_each {
            return Err(BackendError(
                "rvs: lost the connection to the rvs daemon at /x: reset".into(),
            ));
        }
        self.each.push(ops.len());
        // Not through `apply`: the table changes only here, as in a daemon.
        Ok(ops
            .iter()
            .map(|op| self.inner.table.apply(op, self.inner.now))
            .collect())
    }
    fn start_each(
        &mut self,
        ops: &[Op],
    ) -> Result<Option<Vec<Result<(), CtlError>>>, BackendError> {
        let r = self.apply_each(ops)?;
        if !self.pipelined {
            return Ok(Some(r));
        }
        assert!(self.outstanding.is_none(), "two runs outstanding");
        self.outstanding = Some(r);
        Ok(None)
    }
    fn finish_each(&mut self) -> Result<Vec<Result<(), CtlError>>, BackendError> {
        Ok(self
            .outstanding
            .take()
            .expect("finish_each without start_each"))
    }
    fn pending_ops(&self) -> usize {
        self.pending
    }
    fn snapshot(&mut self) -> Result<Snapshot, BackendError> {
        self.inner.snapshot()
    }
    fn connections(&mut self) -> Result<Vec<ConnSnap>, BackendError> {
        self.inner.connections()
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Run {
    rc: i32,
    stdout: String,
    stderr: String,
    table: Snapshot,
}

fn names() -> Names {
    Names::from_strs("10.0.0.1 vip\n10.0.1.1 rs1\n", "http 80/tcp\n")
}

fn restore(b: &mut Paced, input: &str) -> Run {
    let mut stdin = std::io::Cursor::new(input.as_bytes().to_vec());
    let (mut o, mut e) = (Vec::new(), Vec::new());
    let rc = run_with_names(&["-R".to_string()], &names(), &mut stdin, &mut o, &mut e, b);
    Run {
        rc,
        stdout: String::from_utf8_lossy(&o).into_owned(),
        stderr: String::from_utf8_lossy(&e).into_owned(),
        table: b.inner.snapshot().unwrap(),
    }
}

#[test]
fn a_run_of_operations_is_one_apply_each() {
    let input: String = (1..=100)
        .map(|i| format!("-A -t 10.0.2.1:{i} -s rr\n"))
        .collect();
    let mut b = Paced::new(10_000);
    let r = restore(&mut b, &input);
    assert_eq!((r.rc, r.stderr.as_str()), (0, ""));
    assert_eq!(b.each, vec![100]);
    assert_eq!(b.single, 0);
    assert_eq!(r.table.services.len(), 100);
    // held back at most `pending` at a time
    let mut b = Paced::new(30);
    restore(&mut b, &input);
    assert_eq!(b.each, vec![30, 30, 30, 10]);
}

#[test]
fn a_listing_sees_every_line_before_it() {
    let input = "-A -t 10.0.2.1:1\n-A -t 10.0.2.1:2\n-A -t 10.0.2.1:1\n-S -n\n-A -t 10.0.2.1:3\n";
    let mut b = Paced::new(10_000);
    let r = restore(&mut b, input);
    assert_eq!(b.each, vec![3, 1]);
    assert_eq!(
        r.stdout,
        "-A -t 10.0.2.1:1 -s wlc\n-A -t 10.0.2.1:2 -s wlc\n"
    );
    assert_eq!(r.stderr, "Service already exists\n");
    // the last line succeeded: like ipvsadm, the exit code is the last line's
    assert_eq!(r.rc, 0);
    let r = restore(
        &mut Paced::new(10_000),
        "-A -t 10.0.2.1:1\n-A -t 10.0.2.1:1\n",
    );
    assert_eq!((r.rc, r.stderr.as_str()), (255, "Service already exists\n"));
}

#[test]
fn a_bad_line_reports_after_the_lines_before_it() {
    // a popt error returns -1 and the restore goes on
    let input = "-a -t 10.0.2.1:1 -r 10.0.3.1\n-A -t 10.0.2.1:1 --bogus\n-A -t 10.0.2.1:1\n-D -t 10.0.2.1:9\n";
    let mut b = Paced::new(10_000);
    let r = restore(&mut b, input);
    assert_eq!(
        r.stderr,
        "Service not defined\n\
         --bogus: unknown option\n\
         No such service\n"
    );
    assert_eq!(r.rc, 255);
    assert_eq!(b.each, vec![1, 2]);
    assert_eq!(r.table.services.len(), 1);
    // a line that makes ipvsadm exit ends the restore, after the lines before it
    let input = "-A -t 10.0.2.1:1\n-A -t 10.0.2.1:1\n-A -t 10.0.2.1:2 -x 3\n-A -t 10.0.2.1:3\n";
    let mut b = Paced::new(10_000);
    let r = restore(&mut b, input);
    assert_eq!(
        r.stderr,
        "Service already exists\n\
         Illegal 'u-threshold' option with the 'add-service' command\n"
    );
    assert_eq!(r.rc, 2);
    assert_eq!(b.each, vec![2]);
}

#[test]
fn a_failing_backend_is_reported_in_rvs_words() {
    let mut b = Paced::new(10_000);
    b.fail_each = true;
    let r = restore(&mut b, "-A -t 10.0.2.1:1\n-L -n\n");
    assert_eq!(r.rc, 2);
    assert_eq!(
        r.stderr,
        "rvs: lost the connection to the rvs daemon at /x: reset\n"
    );
    assert!(
        r.stdout.is_empty(),
        "the listing after the failure is not run"
    );
}

/// Lines for `-R`: mostly table operations on a few services and destinations (some of
/// them refused), with listings, saves, zeroing, bad lines and blank lines between.
fn line() -> impl Strategy<Value = String> {
    let port = 1u16..4;
    let rs = 1u8..4;
    prop_oneof![
        6 => port.clone().prop_map(|p| format!("-A -t 10.0.2.1:{p} -s rr")),
        2 => port.clone().prop_map(|p| format!("-D -t 10.0.2.1:{p}")),
        2 => port.clone().prop_map(|p| format!("-E -t 10.0.2.1:{p} -s wrr")),
        6 => (port.clone(), rs.clone(), 0i32..3)
            .prop_map(|(p, r, w)| format!("-a -t 10.0.2.1:{p} -r 10.0.3.{r} -m -w {w}")),
        2 => (port.clone(), rs.clone()).prop_map(|(p, r)| format!("-e -t 10.0.2.1:{p} -r 10.0.3.{r} -i")),
        2 => (port.clone(), rs.clone()).prop_map(|(p, r)| format!("-d -t 10.0.2.1:{p} -r 10.0.3.{r}")),
        1 => (port.clone(), rs).prop_map(|(p, r)| format!("-a -t 10.0.2.1:{p} -r 10.0.3.{r} -x 5 -y 9")),
        1 => Just("--set 5 6 7".to_string()),
        1 => Just("-Z".to_string()),
        1 => Just("-C".to_string()),
        1 => Just("--stop-daemon master".to_string()),
        1 => Just("-S -n".to_string()),
        1 => Just("-L -n --stats".to_string()),
        1 => port.clone().prop_map(|p| format!("-L -n -t 10.0.2.1:{p}")),
        1 => Just("-L --timeout".to_string()),
        1 => Just("-A -t 10.0.2.1:1 -w 3".to_string()),
        1 => Just("-A -t".to_string()),
        1 => Just("--bogus".to_string()),
        1 => Just(String::new()),
        1 => Just("-h".to_string()),
    ]
}

proptest! {
    #![proptest_config(Config { cases: 1500, failure_persistence: None, ..Config::default() })]

    #[test]
    fn streamed_restore_prints_what_line_by_line_prints(
        lines in prop::collection::vec(line(), 0..40),
        pending in prop_oneof![Just(2usize), Just(3), Just(7), Just(10_000)],
        trailing_newline in any::<bool>(),
    ) {
        let mut input = lines.join("\n");
        if trailing_newline {
            input.push('\n');
        }
        let mut one = Paced::new(1);
        let reference = restore(&mut one, &input);
        let mut batched = Paced::new(pending);
        let got = restore(&mut batched, &input);
        prop_assert_eq!(&got, &reference, "input:\n{}", input);
        // With the answer of each run fetched only after the next lines are parsed.
        let mut piped = Paced::pipelined(pending);
        let got = restore(&mut piped, &input);
        prop_assert_eq!(&got, &reference, "pipelined, input:\n{}", input);
        prop_assert!(piped.outstanding.is_none(), "a run left unanswered");
        prop_assert!(batched.each.iter().all(|&n| n <= pending));
        prop_assert_eq!(batched.each.iter().sum::<usize>(), one.each.iter().sum::<usize>());
        prop_assert_eq!(batched.single + one.single, 0);
    }
}
