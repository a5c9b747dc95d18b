use super::*;
use crate::conf::load_str;

fn health(text: &str) -> (Health, Vec<Action>) {
    let (cfg, d) = load_str(text, "t.conf");
    assert!(!d.has_errors(), "{:?}", d.list);
    Health::start(&cfg, Time::ZERO, 7)
}

fn ops(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .map(|a| match a {
            Action::Apply(Op::AddService(s)) => format!("add-svc {}", s.key),
            Action::Apply(Op::AddDest(_, d)) => format!("add {} w{}", d.addr, d.weight),
            Action::Apply(Op::EditDest(_, d)) => format!("edit {} w{}", d.addr, d.weight),
            Action::Apply(Op::DelDest(_, a, _)) => format!("del {a}"),
            Action::Apply(Op::DelService(k)) => format!("del-svc {k}"),
            Action::Apply(op) => format!("{op:?}"),
            Action::Run(n) => format!("run {}", n.command),
        })
        .collect()
}

const TWO: &str = "
virtual_server 10.0.0.1 80 {
  lb_algo rr
  lb_kind NAT
  delay_loop 10
  real_server 10.1.0.1 80 {
    weight 3
    notify_up /bin/up1
    notify_down /bin/down1
    TCP_CHECK {
      connect_timeout 2
      retry 2
      delay_before_retry 4
      warmup 0
    }
  }
  real_server 10.1.0.2 80 {
    TCP_CHECK { warmup 0 }
  }
}
";

#[test]
fn start_adds_real_servers_up_and_schedules_after_bootstrap() {
    let (h, a) = health(TWO);
    assert_eq!(
        ops(&a),
        [
            "add-svc TCP 10.0.0.1:80",
            "add 10.1.0.1 w3",
            "add 10.1.0.2 w1"
        ]
    );
    assert_eq!(h.next_due(), Some(Time(1_000)));
    assert_eq!(h.is_alive(0, 0), Some(true));
}

#[test]
fn first_failure_without_alpha_takes_the_server_down_at_once() {
    let (mut h, _) = health(TWO);
    let due = h.take_due(Time(1_000));
    assert_eq!(due.len(), 2);
    assert_eq!(h.next_due(), None, "running checks are not due again");
    let a = h.report(CheckerId(0), Outcome::Failure, Time(1_500));
    assert_eq!(ops(&a), ["del 10.1.0.1", "run /bin/down1"]);
    assert_eq!(h.is_alive(0, 0), Some(false));
    // Down: next check after delay_loop.
    assert_eq!(h.next_check(CheckerId(0)), Some(Time(11_500)));
}

#[test]
fn retries_with_delay_before_retry_before_going_down() {
    let (mut h, _) = health(TWO);
    h.take_due(Time(1_000));
    assert_eq!(
        ops(&h.report(CheckerId(0), Outcome::Success, Time(1_000))),
        Vec::<String>::new()
    );
    assert_eq!(h.next_check(CheckerId(0)), Some(Time(11_000)));
    // retry 2: two failures are retried after delay_before_retry (4 s) ...
    for (i, t) in [11_000u64, 15_000].into_iter().enumerate() {
        h.take_due(Time(t));
        let a = h.report(CheckerId(0), Outcome::Failure, Time(t));
        assert!(a.is_empty(), "failure {i} must not act yet: {a:?}");
        assert_eq!(h.next_check(CheckerId(0)), Some(Time(t + 4_000)));
        assert_eq!(h.is_alive(0, 0), Some(true));
    }
    // ... and the third takes the server down.
    h.take_due(Time(19_000));
    let a = h.report(CheckerId(0), Outcome::Failure, Time(19_000));
    assert_eq!(ops(&a), ["del 10.1.0.1", "run /bin/down1"]);
    assert_eq!(h.next_check(CheckerId(0)), Some(Time(29_000)));
    // A success while retrying resets the count.
    let a = h.report(CheckerId(0), Outcome::Success, Time(29_000));
    assert_eq!(ops(&a), ["add 10.1.0.1 w3", "run /bin/up1"]);
}

#[test]
fn a_success_between_failures_resets_the_retry_count() {
    let (mut h, _) = health(TWO);
    h.report(CheckerId(0), Outcome::Success, Time(1_000));
    h.report(CheckerId(0), Outcome::Failure, Time(2_000));
    h.report(CheckerId(0), Outcome::Failure, Time(3_000));
    h.report(CheckerId(0), Outcome::Success, Time(4_000));
    assert!(
        h.report(CheckerId(0), Outcome::Failure, Time(5_000))
            .is_empty()
    );
    assert!(
        h.report(CheckerId(0), Outcome::Failure, Time(6_000))
            .is_empty()
    );
    assert_eq!(h.is_alive(0, 0), Some(true));
}

#[test]
fn warmup_spreads_the_first_check() {
    let text = TWO.replace("warmup 0", "warmup 30");
    let (h, _) = health(&text);
    for (id, _) in h.checkers() {
        let t = h.next_check(id).unwrap();
        assert!(t >= Time(1_000) && t <= Time(31_000), "{t:?}");
    }
    // Without warmup, it defaults to delay_loop.
    let text = TWO.replace("warmup 0", "");
    let (h, _) = health(&text);
    let mut times: Vec<_> = h
        .checkers()
        .map(|(id, _)| h.next_check(id).unwrap())
        .collect();
    assert!(times.iter().all(|t| *t <= Time(11_000)));
    times.dedup();
    assert_eq!(times.len(), 2, "two checkers are spread apart: {times:?}");
}

#[test]
fn alpha_starts_down_and_the_first_success_brings_it_up() {
    let text = TWO.replace("lb_kind NAT", "lb_kind NAT\n  alpha");
    let (mut h, a) = health(&text);
    assert_eq!(ops(&a), ["add-svc TCP 10.0.0.1:80"]);
    assert_eq!(h.is_alive(0, 0), Some(false));
    let a = h.report(CheckerId(0), Outcome::Success, Time(1_000));
    assert_eq!(ops(&a), ["add 10.1.0.1 w3", "run /bin/up1"]);
    // alpha: a first failure only notifies down.
    let a = h.report(CheckerId(1), Outcome::Failure, Time(1_000));
    assert!(ops(&a).is_empty(), "{a:?}");
    assert_eq!(h.is_alive(0, 1), Some(false));
}

#[test]
fn inhibit_on_failure_sets_weight_zero_instead_of_removing() {
    let text = TWO.replace("weight 3", "weight 3\n    inhibit_on_failure");
    let (mut h, _) = health(&text);
    let a = h.report(CheckerId(0), Outcome::Failure, Time(1_000));
    assert_eq!(ops(&a), ["edit 10.1.0.1 w0", "run /bin/down1"]);
    let a = h.report(CheckerId(0), Outcome::Success, Time(2_000));
    assert_eq!(ops(&a), ["edit 10.1.0.1 w3", "run /bin/up1"]);
    // With alpha and inhibit, the server starts in the table at weight 0.
    let text = text.replace("lb_kind NAT", "lb_kind NAT\n  alpha");
    let (_, a) = health(&text);
    assert_eq!(ops(&a), ["add-svc TCP 10.0.0.1:80", "add 10.1.0.1 w0"]);
}

#[test]
fn two_checkers_both_must_pass() {
    let text = TWO.replace(
        "TCP_CHECK { warmup 0 }",
        "TCP_CHECK { warmup 0 }\n    TCP_CHECK {\n connect_port 81\n warmup 0\n }",
    );
    let (mut h, _) = health(&text);
    let a = h.report(CheckerId(1), Outcome::Failure, Time(1_000));
    assert_eq!(ops(&a), ["del 10.1.0.2"]);
    let a = h.report(CheckerId(2), Outcome::Failure, Time(1_000));
    assert!(a.is_empty());
    // One recovering is not enough.
    assert!(
        h.report(CheckerId(1), Outcome::Success, Time(2_000))
            .is_empty()
    );
    assert_eq!(h.is_alive(0, 1), Some(false));
    let a = h.report(CheckerId(2), Outcome::Success, Time(3_000));
    assert_eq!(ops(&a), ["add 10.1.0.2 w1"]);
}

const QUORUM: &str = "
virtual_server 10.0.0.1 80 {
  lb_algo rr
  lb_kind DR
  quorum 3
  hysteresis 1
  quorum_up /bin/qup
  quorum_down /bin/qdown
  sorry_server 10.9.9.9 80
  real_server 10.1.0.1 80 {
    weight 2
    TCP_CHECK { warmup 0 }
  }
  real_server 10.1.0.2 80 {
    weight 2
    TCP_CHECK { warmup 0 }
  }
  real_server 10.1.0.3 80 {
    weight 2
    TCP_CHECK { warmup 0 }
  }
}
";

#[test]
fn quorum_with_hysteresis_switches_to_the_sorry_server_and_back() {
    let (mut h, a) = health(QUORUM);
    // 6 >= 3 + 1: quorum gained at start (its notifier runs).
    assert_eq!(
        ops(&a),
        [
            "add-svc TCP 10.0.0.1:80",
            "add 10.1.0.1 w2",
            "add 10.1.0.2 w2",
            "add 10.1.0.3 w2",
            "run /bin/qup"
        ]
    );
    assert_eq!(h.has_quorum(0), Some(true));
    let a = h.report(CheckerId(0), Outcome::Failure, Time(1_000));
    assert_eq!(ops(&a), ["del 10.1.0.1"]);
    // 4 >= 3 - 1: still up. 2 = 3 - 1: still up (lost only below the threshold).
    let a = h.report(CheckerId(1), Outcome::Failure, Time(1_000));
    assert_eq!(ops(&a), ["del 10.1.0.2"]);
    assert_eq!(h.has_quorum(0), Some(true));
    // 0 < 2: lost; the sorry server replaces the remaining servers.
    let a = h.report(CheckerId(2), Outcome::Failure, Time(1_000));
    assert_eq!(
        ops(&a),
        ["del 10.1.0.3", "add 10.9.9.9 w1", "run /bin/qdown"]
    );
    assert_eq!(h.has_quorum(0), Some(false));
    // Coming back: 2 < 3 + 1, the table is not touched while the sorry server serves.
    let a = h.report(CheckerId(0), Outcome::Success, Time(2_000));
    assert!(ops(&a).is_empty(), "{a:?}");
    // 4 >= 4: quorum regained, sorry server out, alive servers back.
    let a = h.report(CheckerId(1), Outcome::Success, Time(2_000));
    assert_eq!(
        ops(&a),
        [
            "del 10.9.9.9",
            "add 10.1.0.1 w2",
            "add 10.1.0.2 w2",
            "run /bin/qup"
        ]
    );
}

#[test]
fn sorry_server_at_start_when_quorum_is_not_met() {
    let text = QUORUM.replace("lb_kind DR", "lb_kind DR\n  alpha");
    let (h, a) = health(&text);
    assert_eq!(
        ops(&a),
        [
            "add-svc TCP 10.0.0.1:80",
            "add 10.9.9.9 w1",
            "run /bin/qdown"
        ]
    );
    assert_eq!(h.has_quorum(0), Some(false));
}

#[test]
fn sorry_server_inhibit_keeps_it_at_weight_zero() {
    let text = QUORUM.replace(
        "sorry_server 10.9.9.9 80",
        "sorry_server 10.9.9.9 80\n  sorry_server_inhibit",
    );
    let (mut h, a) = health(&text);
    assert_eq!(ops(&a).last().unwrap(), "add 10.9.9.9 w0");
    for id in 0..3 {
        h.report(CheckerId(id), Outcome::Failure, Time(1_000));
    }
    let a = h.report(CheckerId(0), Outcome::Success, Time(2_000));
    assert!(a.is_empty());
    let a = h.report(CheckerId(1), Outcome::Success, Time(2_000));
    assert_eq!(ops(&a)[0], "edit 10.9.9.9 w0");
}

#[test]
fn without_a_sorry_server_losing_quorum_only_notifies() {
    let text = QUORUM.replace("  sorry_server 10.9.9.9 80\n", "");
    let (mut h, _) = health(&text);
    h.report(CheckerId(0), Outcome::Failure, Time(1_000));
    h.report(CheckerId(1), Outcome::Failure, Time(1_000));
    let a = h.report(CheckerId(2), Outcome::Failure, Time(1_000));
    assert_eq!(ops(&a), ["del 10.1.0.3", "run /bin/qdown"]);
}

const MISC: &str = "
virtual_server 10.0.0.1 80 {
  lb_algo wrr
  lb_kind NAT
  real_server 10.1.0.1 80 {
    weight 10
    MISC_CHECK {
      misc_path \"/bin/check a\"
      misc_dynamic
      warmup 0
    }
  }
}
";

#[test]
fn misc_dynamic_exit_codes_set_the_weight() {
    let (mut h, _) = health(MISC);
    // Exit 7: weight 5.
    let a = h.report(CheckerId(0), Outcome::Weight(7), Time(1_000));
    assert_eq!(ops(&a), ["edit 10.1.0.1 w5"]);
    // Same code again: nothing.
    assert!(
        h.report(CheckerId(0), Outcome::Weight(7), Time(2_000))
            .is_empty()
    );
    // Exit 0: back to the configured weight.
    let a = h.report(CheckerId(0), Outcome::Success, Time(3_000));
    assert_eq!(ops(&a), ["edit 10.1.0.1 w10"]);
    // Exit 1: down (MISC_CHECK retries 0 by default).
    let a = h.report(CheckerId(0), Outcome::Failure, Time(4_000));
    assert_eq!(ops(&a), ["del 10.1.0.1"]);
    // Exit 2 brings it back at weight 0.
    let a = h.report(CheckerId(0), Outcome::Weight(2), Time(5_000));
    assert_eq!(ops(&a), ["add 10.1.0.1 w0"]);
}

#[test]
fn misc_without_dynamic_treats_other_codes_as_failure() {
    let text = MISC.replace("misc_dynamic", "");
    let (mut h, _) = health(&text);
    let a = h.report(CheckerId(0), Outcome::Weight(7), Time(1_000));
    assert_eq!(ops(&a), ["del 10.1.0.1"]);
}

#[test]
fn stop_removes_everything_and_omega_runs_the_down_notifiers() {
    let text = QUORUM
        .replace("lb_kind DR", "lb_kind DR\n  omega")
        .replace("weight 2\n", "weight 2\n    notify_down /bin/rsdown\n");
    let (mut h, _) = health(&text);
    let a = h.stop();
    let o = ops(&a);
    assert_eq!(
        o,
        [
            "del 10.1.0.1",
            "run /bin/rsdown",
            "del 10.1.0.2",
            "run /bin/rsdown",
            "del 10.1.0.3",
            "run /bin/rsdown",
            "run /bin/qdown",
            "del-svc TCP 10.0.0.1:80"
        ]
    );
    assert_eq!(h.next_due(), None);
    // Without omega: no scripts.
    let (mut h, _) = health(QUORUM);
    assert!(h.stop().iter().all(|a| matches!(a, Action::Apply(_))));
}

#[test]
fn groups_apply_every_change_to_every_service() {
    let text = "
virtual_server_group G {
  10.0.0.1-2 80
  fwmark 5
}
virtual_server group G {
  lb_algo rr
  lb_kind DR
  real_server 10.1.0.1 80 {
    TCP_CHECK { warmup 0 }
  }
}
";
    let (mut h, a) = health(text);
    assert_eq!(
        ops(&a),
        [
            "add-svc TCP 10.0.0.1:80",
            "add-svc TCP 10.0.0.2:80",
            "add-svc FWM 5",
            "add 10.1.0.1 w1",
            "add 10.1.0.1 w1",
            "add 10.1.0.1 w1"
        ]
    );
    let a = h.report(CheckerId(0), Outcome::Failure, Time(1_000));
    assert_eq!(ops(&a).len(), 3);
}

fn load(text: &str) -> Config {
    let (cfg, d) = load_str(text, "t.conf");
    assert!(!d.has_errors(), "{:?}", d.list);
    cfg
}

/// (address, weight) of every destination the desired table holds.
fn table_dests(h: &Health) -> Vec<String> {
    h.desired_table()
        .iter()
        .filter_map(|o| match o {
            Op::AddDest(_, d) => Some(format!("{} w{}", d.addr, d.weight)),
            _ => None,
        })
        .collect()
}

/// Take the first real server of TWO down: its first check fails (one failure is enough
/// before the first success).
fn fail_first(h: &mut Health) {
    for t in [1_000] {
        let due = h.take_due(Time(t));
        assert!(due.contains(&CheckerId(0)), "{due:?} at {t}");
        for id in due {
            let o = if id == CheckerId(0) {
                Outcome::Failure
            } else {
                Outcome::Success
            };
            h.report(id, o, Time(t));
        }
    }
    assert_eq!(h.is_alive(0, 0), Some(false));
}

#[test]
fn desired_table_follows_the_state() {
    let (mut h, _) = health(TWO);
    assert_eq!(table_dests(&h), ["10.1.0.1 w3", "10.1.0.2 w1"]);
    fail_first(&mut h);
    assert_eq!(table_dests(&h), ["10.1.0.2 w1"]);
    assert_eq!(h.owned_keys().len(), 1);
}

#[test]
fn reload_of_the_same_file_keeps_every_state_and_timer() {
    let (mut h, _) = health(TWO);
    fail_first(&mut h);
    let before = (0..2)
        .map(|i| h.next_check(CheckerId(i)))
        .collect::<Vec<_>>();
    let (new, map) = h.reload(&load(TWO), Time(9_500), 99);
    assert_eq!(map.0, [Some(CheckerId(0)), Some(CheckerId(1))]);
    assert_eq!(new.is_alive(0, 0), Some(false));
    assert_eq!(new.desired_table(), h.desired_table());
    let after = (0..2)
        .map(|i| new.next_check(CheckerId(i)))
        .collect::<Vec<_>>();
    assert_eq!(before, after);
}

#[test]
fn reload_edits_weights_adds_servers_and_restarts_changed_checkers_only() {
    let (mut h, _) = health(TWO);
    fail_first(&mut h);
    // Server 1: weight 3 -> 5 (still down, so still out); server 2: another checker;
    // server 3: new.
    let edited = TWO
        .replace("weight 3", "weight 5")
        .replace("TCP_CHECK { warmup 0 }", "TCP_CHECK {\n      warmup 0\n      connect_timeout 7\n    }")
        .replace(
            "  real_server 10.1.0.2 80 {",
            "  real_server 10.1.0.3 80 {\n    weight 2\n    TCP_CHECK { warmup 0 }\n  }\n  real_server 10.1.0.2 80 {",
        );
    let (new, map) = h.reload(&load(&edited), Time(9_500), 99);
    assert_eq!(map.get(CheckerId(0)), Some(CheckerId(0)));
    assert_eq!(
        map.get(CheckerId(1)),
        None,
        "a changed checker starts again"
    );
    assert_eq!(
        new.is_alive(0, 0),
        Some(false),
        "the down server stays down"
    );
    assert_eq!(table_dests(&new), ["10.1.0.3 w2", "10.1.0.2 w1"]);
    // The changed checker is due again after the bootstrap delay (warmup 0).
    assert_eq!(new.next_check(CheckerId(2)), Some(Time(10_500)));

    // The down server comes back at its new weight.
    let mut new = new;
    new.take_due(Time(13_000));
    let a = new.report(CheckerId(0), Outcome::Success, Time(13_000));
    assert_eq!(ops(&a), ["add 10.1.0.1 w5", "run /bin/up1"]);
}

#[test]
fn reload_removing_a_virtual_server_leaves_it_out_of_the_scope() {
    let (h, _) = health(TWO);
    let other = TWO.replace("10.0.0.1 80", "10.0.0.2 80");
    let (new, map) = h.reload(&load(&other), Time(2_000), 1);
    assert_eq!(map.0, [None, None]);
    assert_ne!(new.owned_keys(), h.owned_keys());
    assert_eq!(table_dests(&new), ["10.1.0.1 w3", "10.1.0.2 w1"]);
}
