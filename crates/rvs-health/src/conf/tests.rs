use super::*;

fn load(text: &str) -> (Config, Diags) {
    load_str(text, "t.conf")
}

fn errors(d: &Diags) -> Vec<String> {
    d.list
        .iter()
        .filter(|d| d.level == Level::Error)
        .map(ToString::to_string)
        .collect()
}

fn warnings(d: &Diags) -> Vec<String> {
    d.list
        .iter()
        .filter(|d| d.level == Level::Warning)
        .map(ToString::to_string)
        .collect()
}

#[test]
fn http_get_with_urls_digest_status_and_virtualhost() {
    let (cfg, d) = load(
        "virtual_server 192.168.200.100 443 {
    delay_loop 20
    lb_algo rr
    lb_kind NAT
    persistence_timeout 50
    protocol TCP
    virtualhost www.example.com
    real_server 192.168.201.100 443 {
        weight 1
        SSL_GET {
            url {
              path /
              digest ff20ad2481f97b1754ef3e12ecd3a9cc
            }
            url {
              path /mrtg/
              status_code 200-204 301 302
              virtualhost other.example.com
            }
            connect_timeout 3
            retry 3
            delay_before_retry 2.5
        }
    }
}
",
    );
    assert!(!d.has_errors(), "{:?}", d.list);
    let vs = &cfg.virtual_servers[0];
    assert_eq!(vs.scheduler.as_deref(), Some("rr"));
    assert_eq!(vs.persistence_timeout, Some(50));
    let rs = &vs.real_servers[0];
    let c = &rs.checkers[0];
    let CheckKind::Http(h) = &c.kind else {
        panic!()
    };
    assert!(h.tls);
    assert_eq!(h.urls.len(), 2);
    assert_eq!(h.urls[0].digest.unwrap()[0], 0xff);
    assert_eq!(h.urls[0].status_codes, [(200, 299)], "keepalived's default");
    assert!(h.urls[1].status_ok(203) && h.urls[1].status_ok(302) && !h.urls[1].status_ok(300));
    assert_eq!(h.urls[1].virtualhost.as_deref(), Some("other.example.com"));
    let t = c.timing();
    assert_eq!(t.connect_timeout, Ms(3_000));
    assert_eq!(t.retry, 3);
    assert_eq!(t.delay_before_retry, Ms(2_500));
    assert_eq!(
        t.delay_loop,
        Ms(20_000),
        "inherited from the virtual server"
    );
    assert_eq!(t.warmup, Ms(20_000), "warmup defaults to delay_loop");
}

#[test]
fn checker_defaults_follow_keepalived() {
    let (cfg, d) = load(
        "virtual_server 10.0.0.1 80 {
  lb_algo rr
  lb_kind DR
  real_server 10.0.0.2 80 {
    TCP_CHECK {
    }
    HTTP_GET {
      url {
        path /
      }
    }
    MISC_CHECK {
      misc_path /bin/true
    }
    DNS_CHECK {
      name example.com
      type A
    }
  }
}
",
    );
    assert!(!d.has_errors(), "{:?}", d.list);
    let cs = &cfg.virtual_servers[0].real_servers[0].checkers;
    let t: Vec<_> = cs.iter().map(Checker::timing).collect();
    assert_eq!(t[0].delay_loop, DEFAULT_DELAY_LOOP);
    assert_eq!(t[0].connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    assert_eq!((t[0].retry, t[0].delay_before_retry), (1, Ms(1_000)));
    assert_eq!((t[1].retry, t[1].delay_before_retry), (1, Ms(3_000)));
    assert_eq!(t[2].retry, 0);
    assert_eq!(
        (t[3].retry, t[3].delay_before_retry),
        (3, DEFAULT_DELAY_LOOP)
    );
    let CheckKind::Dns(dns) = &cs[3].kind else {
        panic!()
    };
    assert_eq!((dns.qtype, dns.name.as_str()), (DnsType::A, "example.com"));
}

#[test]
fn timing_inherits_vs_then_rs_then_checker() {
    let (cfg, _) = load(
        "virtual_server 10.0.0.1 80 {
  lb_algo rr
  lb_kind NAT
  delay_loop 30
  retry 5
  alpha
  inhibit_on_failure
  real_server 10.0.0.2 80 {
    delay_loop 7
    inhibit_on_failure false
    TCP_CHECK {
      retry 2
    }
  }
}
",
    );
    let rs = &cfg.virtual_servers[0].real_servers[0];
    let t = rs.checkers[0].timing();
    assert_eq!((t.delay_loop, t.retry, t.alpha), (Ms(7_000), 2, true));
    assert!(!rs.inhibit());
}

#[test]
fn misc_check_udp_check_and_notify_scripts() {
    let (cfg, d) = load(
        "virtual_server 10.10.10.2 1358 {
    lb_algo rr
    lb_kind NAT
    protocol UDP
    quorum_up \"/bin/q up\"
    real_server 192.168.200.6 1358 {
        weight 1
        notify_up /bin/notify up 1
        MISC_CHECK {
            misc_path \"/usr/local/bin/script.sh arg1 'arg 2'\"
            misc_timeout 5
            misc_dynamic
        }
        UDP_CHECK {
            payload 0a0b0c
            require_reply 0a
        }
    }
}
",
    );
    assert!(!d.has_errors(), "{:?}", d.list);
    let vs = &cfg.virtual_servers[0];
    assert_eq!(vs.protocol, Some(Protocol::Udp));
    assert_eq!(vs.quorum_up.as_deref(), Some("/bin/q up"));
    let rs = &vs.real_servers[0];
    assert_eq!(rs.notify_up.as_deref(), Some("/bin/notify up 1"));
    let CheckKind::Misc(m) = &rs.checkers[0].kind else {
        panic!()
    };
    assert_eq!(m.path, "/usr/local/bin/script.sh arg1 'arg 2'");
    assert_eq!(m.timeout, Some(Ms(5_000)));
    assert!(m.dynamic);
    let CheckKind::Udp(u) = &rs.checkers[1].kind else {
        panic!()
    };
    assert_eq!(u.payload, [10, 11, 12]);
    assert_eq!(u.require_reply.as_deref(), Some(&[10u8][..]));
}

#[test]
fn misc_check_user_is_resolved_or_the_checker_dropped() {
    let conf = |user: &str| {
        format!(
            "virtual_server 10.10.10.2 80 {{
    real_server 192.168.200.6 80 {{
        MISC_CHECK {{
            misc_path /bin/true
            user {user}
        }}
    }}
}}
"
        )
    };
    let (cfg, d) = load(&conf("root root"));
    assert!(!d.has_errors(), "{:?}", d.list);
    let CheckKind::Misc(m) = &cfg.virtual_servers[0].real_servers[0].checkers[0].kind else {
        panic!()
    };
    assert_eq!(
        m.run_as,
        Some(RunAs {
            user: "root".into(),
            uid: 0,
            gid: 0
        })
    );
    let (cfg, d) = load(&conf("rvs-no-such-user-x"));
    assert!(d.has_errors());
    assert!(
        d.list
            .iter()
            .any(|m| m.to_string().contains("Failed to set uid/gid")),
        "{:?}",
        d.list
    );
    assert!(cfg.virtual_servers[0].real_servers[0].checkers.is_empty());
    let (_, d) = load(&conf("root rvs-no-such-group-x"));
    assert!(d.has_errors());
}

#[test]
fn vrrp_and_unused_global_defs_are_warnings_with_file_and_line() {
    let (cfg, d) = load(
        "global_defs {
   router_id LVS_DEVEL
   lvs_timeouts tcp 900 tcpfin 30 udp 60
}
vrrp_instance VI_1 {
    state MASTER
    interface eth0
}
virtual_server 10.0.0.1 80 {
  lb_algo rr
  lb_kind NAT
  real_server 10.0.0.2 80 {
  }
}
",
    );
    assert!(!d.has_errors(), "{:?}", d.list);
    assert_eq!(
        warnings(&d),
        [
            "(t.conf: Line 2) global_defs router_id ignored",
            "(t.conf: Line 5) vrrp_instance ignored: rvs does the virtual servers only (keep keepalived for VRRP)"
        ]
    );
    assert_eq!(cfg.global.lvs_timeouts.tcp, 900);
    assert_eq!(cfg.global.lvs_timeouts.tcp_fin, 30);
    assert_eq!(cfg.global.lvs_timeouts.udp, 60);
}

#[test]
fn errors_are_reported_keepalived_style() {
    let (_, d) = load(
        "virtual_server 10.0.0.1 80 {
  lb_algo nope
  lb_kind BOGUS
  bogus_keyword 1
  quorum 0
  real_server 10.0.0.2 80 {
    weight -1
    TCP_CHECK {
      connect_port x
    }
  }
  real_server 10.0.0.2 80 {
  }
  real_server ::1 80 {
  }
}
virtual_server 10.0.0.300 80 {
}
virtual_server 10.0.0.3 80 {
  lb_algo rr
}
",
    );
    assert_eq!(
        errors(&d),
        [
            "(t.conf: Line 2) Invalid lvs_scheduler 'nope' - ignoring",
            "(t.conf: Line 3) PARSER : unknown [BOGUS] routing method for virtual server.",
            "(t.conf: Line 4) Unknown keyword 'bogus_keyword'",
            "(t.conf: Line 5) Quorum 0 must be in [1, 4294967295]. Setting to 1.",
            "(t.conf: Line 7) Real server weight -1 is outside range 0-2147483647",
            "(t.conf: Line 9) Invalid checker connect_port 'x'",
            "(t.conf: Line 14) Address family of virtual server and real server ::1 don't match - skipping real server.",
            "(t.conf: Line 17) Invalid virtual server IP address/port 10.0.0.300/80 - skipping",
            "(t.conf: Line 19) Virtual server 10.0.0.3:80 has no real servers - ignoring",
            "(t.conf: Line 12) VS 10.0.0.1:80: real server 10.0.0.2:80 is duplicated - removing second rs",
        ]
    );
}

#[test]
fn defaults_keepalived_sets_with_a_message() {
    let (cfg, d) = load(
        "virtual_server 10.0.0.1 80 {
  quorum 5
  hysteresis 9
  real_server 10.0.0.2 80 {
    weight 2
  }
  real_server 10.0.0.3 8080 {
    lb_kind DR
  }
}
",
    );
    assert!(!d.has_errors(), "{:?}", d.list);
    assert_eq!(
        warnings(&d),
        [
            "(t.conf: Line 1) Virtual server 10.0.0.1:80: no scheduler set, setting default 'wlc'",
            "(t.conf: Line 1) Virtual server 10.0.0.1:80: no forwarding method set, setting default NAT",
            "(t.conf: Line 7) WARNING - virtual server 10.0.0.1:80 and real server ports don't match - resetting",
            "(t.conf: Line 1) Warning - quorum 5 for 10.0.0.1:80 exceeds total weight of real servers 3, reducing quorum to 3",
            "(t.conf: Line 1) Virtual server 10.0.0.1:80: hysteresis 9 >= quorum 3; setting hysteresis to 2",
        ]
    );
    let vs = &cfg.virtual_servers[0];
    assert_eq!(vs.real_servers[1].port, 80);
    assert_eq!((vs.quorum, vs.hysteresis), (3, 2));
}

#[test]
fn groups_with_ranges_masks_and_fwmarks() {
    let (cfg, d) = load(
        "virtual_server_group G1 {
  192.168.200.1 1358
  192.168.201.1-10 80
  10.0.0.0/30 443
  2001:db8::1-3 80
  fwmark 7
  fwmark 8 inet6
}
virtual_server group G1 {
  lb_algo rr
  lb_kind DR
  real_server 192.168.200.9 0 {
  }
}
virtual_server group MISSING {
  lb_algo rr
  real_server 192.168.200.9 0 {
  }
}
",
    );
    assert_eq!(
        errors(&d),
        [
            "(t.conf: Line 15) Virtual server group MISSING specified but not configured - ignoring virtual server MISSING"
        ]
    );
    let g = &cfg.groups["G1"];
    assert_eq!(g.entries.len(), 6);
    let keys = cfg.virtual_servers[0].service_keys(&cfg.groups);
    assert_eq!(keys.len(), 1 + 10 + 4 + 3 + 2);
    assert_eq!(keys[10].to_string(), "TCP 192.168.201.10:80");
    assert_eq!(keys[14].to_string(), "TCP 10.0.0.3:443");
    assert_eq!(keys[17].to_string(), "TCP [2001:db8::3]:80");
    assert!(matches!(
        keys[19],
        rvs_core::ServiceKey::Fwmark {
            af: Af::V6,
            mark: 8
        }
    ));
}

#[test]
fn fwmark_services_tunnels_and_granularity() {
    let (cfg, d) = load(
        "virtual_server fwmark 1 {
  lb_algo sh
  sh-port
  ops
  lb_kind TUN type gue port 6080 csum
  persistence_timeout
  persistence_granularity 255.255.255.0
  real_server 10.0.0.2 80 {
  }
}
",
    );
    assert!(!d.has_errors(), "{:?}", d.list);
    let vs = &cfg.virtual_servers[0];
    assert_eq!(vs.persistence_timeout, Some(DEFAULT_PERSISTENCE_TIMEOUT));
    assert_eq!(
        vs.granularity,
        Some(Netmask::V4(Ipv4Addr::new(255, 255, 255, 0)))
    );
    assert_eq!(vs.flags, ServiceFlags::SCHED2 | ServiceFlags::ONEPACKET);
    let f = vs.real_servers[0].fwd.unwrap();
    assert_eq!(
        (f.fwd, f.tun_type, f.tun_port, f.tun_csum),
        (FwdMethod::Tunnel, TunType::Gue, 6080, TunCsum::Csum)
    );
    assert_eq!(
        vs.real_servers[0].port, 0,
        "fwmark services have no real server port"
    );
    assert!(warnings(&d)[0].contains("has port specified - clearing"));
    let (_, d) = load("virtual_server 1.1.1.1 80 {\n persistence_granularity 255.0.255.0\n}\n");
    assert!(
        errors(&d)[0].contains("IPv4 persistence_granularity netmask is not solid - 255.0.255.0")
    );
}

#[test]
fn sorry_server_and_its_settings() {
    let (cfg, d) = load(
        "virtual_server 10.0.0.1 80 {
  lb_algo rr
  lb_kind DR
  sorry_server_inhibit
  sorry_server 10.9.9.9 80
  sorry_server_inhibit
  sorry_server_lvs_method NAT
  real_server 10.0.0.2 80 {
  }
}
",
    );
    assert_eq!(
        errors(&d),
        ["(t.conf: Line 4) Ignoring sorry_server inhibit used before or without sorry_server"]
    );
    let s = cfg.virtual_servers[0].sorry.as_ref().unwrap();
    assert!(s.inhibit);
    assert_eq!(s.fwd.unwrap().fwd, FwdMethod::Masq);
}

#[test]
fn ignored_checkers_are_warned_about() {
    let (cfg, d) = load(
        "virtual_server 10.0.0.1 25 {
  lb_algo rr
  lb_kind NAT
  real_server 10.0.0.2 25 {
    SMTP_CHECK {
      helo_name foo
    }
    PING_CHECK {
    }
  }
}
",
    );
    assert!(!d.has_errors());
    assert_eq!(warnings(&d).len(), 2);
    assert!(warnings(&d)[0].starts_with("(t.conf: Line 5) SMTP_CHECK ignored"));
    assert!(cfg.virtual_servers[0].real_servers[0].checkers.is_empty());
}

#[test]
fn timers_take_decimals_and_reject_garbage() {
    assert_eq!(parse_timer(Some("1.5")), Some(Ms(1_500)));
    assert_eq!(parse_timer(Some("0.000999")), Some(Ms(0)));
    assert_eq!(parse_timer(Some("3")), Some(Ms(3_000)));
    assert_eq!(parse_timer(Some("x")), None);
    assert_eq!(parse_timer(Some("1.1234567")), None);
    assert_eq!(parse_timer(Some("-1")), None);
    assert_eq!(parse_timer(None), None);
    let (_, d) = load("virtual_server 1.1.1.1 80 {\n delay_loop 0\n}\n");
    assert_eq!(
        errors(&d)[0],
        "(t.conf: Line 2) virtual server delay_loop '0' invalid - ignoring"
    );
}

#[test]
fn a_missing_file_is_an_error() {
    let (cfg, d) = load_path("/nonexistent/keepalived.conf");
    assert!(cfg.is_none());
    assert!(
        errors(&d)[0].starts_with("Unable to read configuration file /nonexistent/keepalived.conf")
    );
}

fn load_path(p: &str) -> (Option<Config>, Diags) {
    super::load(Path::new(p))
}

#[test]
fn block_keywords_without_braces() {
    let (_, d) = load("global_defs\nvirtual_server 1.1.1.1 80\n");
    assert_eq!(
        errors(&d),
        [
            "(t.conf: Line 1) Missing '{' at beginning of configuration block",
            "(t.conf: Line 2) Missing '{' at beginning of configuration block",
            "(t.conf: Line 2) Virtual server 1.1.1.1:80 has no real servers - ignoring"
        ]
    );
}

/// Found by fuzzing (fuzz/regressions/keepalived_conf): a group range whose end is below
/// its start overflowed while counting its addresses.
#[test]
fn group_range_ending_below_its_start_is_refused() {
    assert_eq!(parse_range("192.168.201.13-8"), None);
    assert_eq!(parse_range("2001:db8::20-1f"), None);
    assert_eq!(
        parse_range("192.168.201.8-13"),
        Some(("192.168.201.8".parse().unwrap(), 6))
    );
    let (_, diags) = load("virtual_server_group G {\n    192.168.201.13-8 80\n}\n");
    assert!(!errors(&diags).is_empty());
}
