//! The ipvsadm argument parser (through `run_with_names`, its public entry) on arbitrary
//! word lists: the input is split into words at NUL bytes (`fuzz/make_seeds.py` writes
//! recorded command lines that way). A MemBackend takes whatever the words ask for.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rvs_ipvsadm::{MemBackend, Names};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let args: Vec<String> = text.split('\0').map(str::to_string).collect();
    // Reading from standard input (-R) gets nothing.
    let mut stdin: &[u8] = b"";
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut backend = MemBackend::new();
    let names = Names::from_strs("10.0.0.1 vip\n", "http 80/tcp\nhttp 80/udp\n");
    let code =
        rvs_ipvsadm::run_with_names(&args, &names, &mut stdin, &mut out, &mut err, &mut backend);
    assert!((0..=255).contains(&code), "exit code {code}");
});
