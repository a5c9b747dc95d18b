//! `rvs k8s plan` through the real binary, on the rvs-k8s fixture.

use std::process::Command;

#[test]
fn rvs_k8s_plan_prints_the_expected_table_and_sets() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../rvs-k8s/tests/fixtures");
    let out = Command::new(env!("CARGO_BIN_EXE_rvs"))
        .args([
            "k8s",
            "plan",
            "--objects",
            &format!("{fixtures}/cluster.json"),
            "--config",
            &format!("{fixtures}/kube-proxy.yaml"),
            "--node",
            "node-a",
            "--node-addresses",
            "127.0.0.1,192.168.1.10,10.244.1.1,fe80::1",
        ])
        .output()
        .expect("run rvs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = std::fs::read_to_string(format!("{fixtures}/cluster.expected")).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);
}
