//! `rvs keepalived plan`: keepalived.conf files in, `ipvsadm -Sn` out.

use rvs_health::cli;

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn run(args: &[&str]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = cli::main(&args, &mut out, &mut err);
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

fn plan(name: &str) -> (String, String) {
    let (code, out, err) = run(&["plan", &fixture(name)]);
    assert_eq!(code, 0, "{err}");
    (out, err)
}

#[test]
fn sample_with_vrrp_and_global_defs() {
    let (out, err) = plan("sample.conf");
    assert_eq!(
        out,
        "-A -t 10.10.10.2:1358 -s rr -p 50
-a -t 10.10.10.2:1358 -r 192.168.200.2:1358 -m -w 1
-a -t 10.10.10.2:1358 -r 192.168.200.3:1358 -m -w 2
-A -u 10.10.10.3:1358 -s wlc
-a -u 10.10.10.3:1358 -r 192.168.200.4:1358 -g -w 3
"
    );
    let f = fixture("sample.conf");
    assert!(
        err.contains(&format!("({f}: Line 12) vrrp_instance ignored")),
        "{err}"
    );
    assert!(
        err.contains(&format!("({f}: Line 8) global_defs router_id ignored")),
        "{err}"
    );
}

#[test]
fn alpha_with_inhibit_starts_at_weight_zero() {
    let (out, _) = plan("inhibit.conf");
    assert_eq!(
        out,
        "-A -t 192.168.200.100:80 -s wrr
-a -t 192.168.200.100:80 -r 192.168.201.100:80 -g -w 0
-a -t 192.168.200.100:80 -r 192.168.201.101:80 -g -w 7
-a -t 192.168.200.100:80 -r 192.168.201.102:80 -g -w 9
"
    );
}

#[test]
fn alpha_without_quorum_starts_on_the_sorry_server() {
    let (out, _) = plan("quorum.conf");
    assert_eq!(
        out,
        "-A -t 10.0.1.1:80 -s wrr -p 900
-a -t 10.0.1.1:80 -r 10.0.0.99:8080 -m -w 1
"
    );
}

#[test]
fn groups_expand_to_every_address_and_fwmark() {
    let (out, _) = plan("group.conf");
    assert_eq!(
        out,
        "-A -t 192.168.200.1:1358 -s rr -p 50
-a -t 192.168.200.1:1358 -r 192.168.200.10:1358 -g -w 1
-A -t 192.168.201.1:80 -s rr -p 50
-a -t 192.168.201.1:80 -r 192.168.200.10:1358 -g -w 1
-A -t 192.168.201.2:80 -s rr -p 50
-a -t 192.168.201.2:80 -r 192.168.200.10:1358 -g -w 1
-A -t 192.168.201.3:80 -s rr -p 50
-a -t 192.168.201.3:80 -r 192.168.200.10:1358 -g -w 1
-A -f 100 -s sh -p 900 -M 255.255.255.0
-a -f 100 -r 192.168.200.20:0 -i -w 2 --tun-type ipip
"
    );
}

#[test]
fn includes_are_read_in_order_and_a_missing_one_is_reported() {
    let (out, err) = plan("main.conf");
    assert_eq!(
        out,
        "-A -t 172.16.0.1:443 -s lc
-a -t 172.16.0.1:443 -r 10.1.1.1:8443 -m -w 1
-A -f 5 -s rr
-a -f 5 -r 10.1.1.2:0 -g -w 1
"
    );
    assert!(
        err.contains("main.conf: Line 3) Unable to find configuration file"),
        "{err}"
    );
}

#[test]
fn config_errors_exit_non_zero_with_keepalived_messages() {
    let f = fixture("bad.conf");
    let (code, out, err) = run(&["plan", &f]);
    assert_eq!(code, 1);
    assert_eq!(out, "");
    assert_eq!(
        err,
        format!(
            "({f}: Line 1) There is 1 missing '}}' or extra '{{'
({f}: Line 7) Unknown keyword 'connect_timout'
{f}: 2 configuration errors
"
        )
    );
    let (code, _, err) = run(&["plan", "/nonexistent.conf"]);
    assert_eq!(code, 1);
    assert!(err.starts_with("Unable to read configuration file /nonexistent.conf"));
}

#[test]
fn two_virtual_servers_for_one_service_are_refused() {
    let dir = std::env::temp_dir().join(format!("rvs-health-dup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("dup.conf");
    let vs = "virtual_server 10.0.0.1 80 {\n lb_algo rr\n lb_kind NAT\n real_server 10.0.0.2 80 {\n }\n}\n";
    std::fs::write(&f, format!("{vs}{vs}")).unwrap();
    let (code, _, err) = run(&["plan", f.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("Service already exists"), "{err}");
}

#[test]
fn usage() {
    assert_eq!(run(&[]).0, 2);
    assert_eq!(run(&["plan"]).0, 2);
    assert_eq!(run(&["frobnicate", "x"]).0, 2);
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("rvs keepalived plan FILE"));
}
