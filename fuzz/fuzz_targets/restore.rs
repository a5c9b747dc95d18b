//! The `-R` reader and the all-or-nothing `--atomic` reader on arbitrary input.
//!
//! Property: whatever table either produced, its `-S -n` output restores (with `-R`, and
//! with `--atomic`) to a table whose `-S -n` output has the same lines. In any order: the
//! listing sorts real servers with ipvsadm's comparison (`ntohl(a) - ntohl(b)` as an int),
//! which is not transitive for addresses more than 2^31 apart, so for some tables the
//! order depends on the order they were added in (as with the kernel and ipvsadm 1.31).
//!
//! Cost: a restore is most of an execution (mh services rebuild their 4093-slot table on
//! every destination added), so each distinct saved table is restored once per reader, not
//! once per reader that produced it (when `--atomic` took the input whole it usually built
//! the same table as `-R`), and once per process (`first_time`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rvs_ipvsadm::{MemBackend, Names};
use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{LazyLock, Mutex, PoisonError};

/// Built once: parsing the two name files is not what is being fuzzed.
static NAMES: LazyLock<Names> =
    LazyLock::new(|| Names::from_strs("10.0.0.1 vip\n", "http 80/tcp\nhttp 80/udp\n"));

fn restore_r(input: &[u8], backend: &mut MemBackend) -> i32 {
    let args = vec!["-R".to_string()];
    let mut stdin = input;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    rvs_ipvsadm::run_with_names(&args, &NAMES, &mut stdin, &mut out, &mut err, backend)
}

fn restore_atomic(input: &[u8], backend: &mut MemBackend) -> i32 {
    let mut stdin = input;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    rvs_ipvsadm::restore_atomic_with_names(&mut stdin, &mut out, &mut err, backend, &NAMES)
}

fn save(backend: &mut MemBackend) -> Vec<u8> {
    let args = vec!["-S".to_string(), "-n".to_string()];
    let mut stdin: &[u8] = b"";
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = rvs_ipvsadm::run_with_names(&args, &NAMES, &mut stdin, &mut out, &mut err, backend);
    assert_eq!(code, 0, "-S -n failed: {}", String::from_utf8_lossy(&err));
    out
}

fn lines(text: &[u8]) -> Vec<String> {
    let mut v: Vec<String> = String::from_utf8_lossy(text)
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// ipvsadm 1.31 prints a firewall mark with `%d` (`-f %d` in `-S`, `FWM  %d` in `-L`), so
/// a mark of 2^31 or more is saved negative, and its own `-f` parser refuses a negative
/// mark: such a saved table does not restore, with ipvsadm as with rvs, which copies both
/// byte for byte (its CLI is ipvsadm's, errors included). The round trip is checked for
/// every other table.
fn has_negative_fwmark(saved_lines: &[String]) -> bool {
    saved_lines.iter().any(|l| l.contains(" -f -"))
}

fn check_round_trip(saved: &[u8], saved_lines: &[String]) {
    if has_negative_fwmark(saved_lines) {
        return;
    }
    let mut again = MemBackend::new();
    let code = restore_r(saved, &mut again);
    assert_eq!(
        code,
        0,
        "-R of a saved table failed:\n{}",
        String::from_utf8_lossy(saved)
    );
    assert_eq!(
        lines(&save(&mut again)),
        saved_lines,
        "-R of a saved table gave another table"
    );
    let mut atomic = MemBackend::new();
    let code = restore_atomic(saved, &mut atomic);
    assert_eq!(
        code,
        0,
        "--atomic of a saved table failed:\n{}",
        String::from_utf8_lossy(saved)
    );
    assert_eq!(
        lines(&save(&mut atomic)),
        saved_lines,
        "--atomic of a saved table gave another table"
    );
}

/// Whether this process has not yet checked the round trip of a table with these saved
/// lines: most mutations change a line that fails or a comment, not the table, and the
/// check's answer is the same for the same table. A crash input run alone (libFuzzer's
/// reproduction, the kept regressions) starts with an empty set, so it is checked.
fn first_time(saved_lines: &[String]) -> bool {
    static SEEN: LazyLock<Mutex<HashSet<u64>>> = LazyLock::new(Default::default);
    let mut h = DefaultHasher::new();
    saved_lines.hash(&mut h);
    let mut seen = SEEN.lock().unwrap_or_else(PoisonError::into_inner);
    if seen.len() >= 1 << 20 {
        seen.clear(); // bounded memory; a table seen again later is simply checked again
    }
    seen.insert(h.finish())
}

fuzz_target!(|data: &[u8]| {
    let mut by_line = MemBackend::new();
    restore_r(data, &mut by_line);
    let saved_r = save(&mut by_line);

    let mut atomic = MemBackend::new();
    let code = restore_atomic(data, &mut atomic);
    let saved_a = save(&mut atomic);
    if code != 0 {
        assert!(
            saved_a.is_empty(),
            "a failed --atomic restore changed the table"
        );
    }

    let lines_r = lines(&saved_r);
    if first_time(&lines_r) {
        check_round_trip(&saved_r, &lines_r);
    }
    let lines_a = lines(&saved_a);
    if lines_a != lines_r && first_time(&lines_a) {
        check_round_trip(&saved_a, &lines_a);
    }
});
