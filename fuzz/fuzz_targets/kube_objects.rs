//! rvs-k8s's Kubernetes object decoding (Services, EndpointSlices, Nodes) on arbitrary text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = rvs_k8s::objects::parse(&text);
});
