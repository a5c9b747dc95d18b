//! rvs-k8s's KubeProxyConfiguration reader on arbitrary text, and what a loaded
//! configuration answers.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(loaded) = rvs_k8s::config::parse(&text) {
        let _ = format!("{loaded:?}");
    }
});
