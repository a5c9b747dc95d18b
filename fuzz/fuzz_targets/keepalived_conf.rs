//! rvs-health's keepalived.conf reader on arbitrary text. Relative `include`s resolve
//! under a folder that does not exist, so the file system stays out of it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = rvs_health::conf::load_str(&text, "/nonexistent-rvs-fuzz/keepalived.conf");
});
