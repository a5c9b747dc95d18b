//! The `-R` reader and the all-or-nothing `--atomic` reader on arbitrary input.
//!
//! Property: whatever table either produced, its `-S -n` output restores (with `-R`, and
//! with `--atomic`) to a table whose `-S -n` output has the same lines. In any order: the
//! listing sorts real servers with ipvsadm's comparison (`ntohl(a) - ntohl(b)` as an int),
//! which is not transitive for addresses more than 2^31 apart, so for some tables the
//! order depends on the order they were added in (as with the kernel and ipvsadm 1.31).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rvs_ipvsadm::{MemBackend, Names};

fn names() -> Names {
    Names::from_strs("10.0.0.1 vip\n", "http 80/tcp\nhttp 80/udp\n")
}

fn restore_r(input: &[u8], backend: &mut MemBackend) -> i32 {
    let args = vec!["-R".to_string()];
    let mut stdin = input;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    rvs_ipvsadm::run_with_names(&args, &names(), &mut stdin, &mut out, &mut err, backend)
}

fn restore_atomic(input: &[u8], backend: &mut MemBackend) -> i32 {
    let mut stdin = input;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    rvs_ipvsadm::restore_atomic_with_names(&mut stdin, &mut out, &mut err, backend, &names())
}

fn save(backend: &mut MemBackend) -> Vec<u8> {
    let args = vec!["-S".to_string(), "-n".to_string()];
    let mut stdin: &[u8] = b"";
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code =
        rvs_ipvsadm::run_with_names(&args, &names(), &mut stdin, &mut out, &mut err, backend);
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

fn check_round_trip(saved: &[u8]) {
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
        lines(saved),
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
        lines(saved),
        "--atomic of a saved table gave another table"
    );
}

fuzz_target!(|data: &[u8]| {
    let mut by_line = MemBackend::new();
    restore_r(data, &mut by_line);
    check_round_trip(&save(&mut by_line));

    let mut atomic = MemBackend::new();
    let code = restore_atomic(data, &mut atomic);
    let saved = save(&mut atomic);
    if code != 0 {
        assert!(
            saved.is_empty(),
            "a failed --atomic restore changed the table"
        );
    }
    check_round_trip(&saved);
});
