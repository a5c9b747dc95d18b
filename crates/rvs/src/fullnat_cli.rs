//! `rvs fullnat add|del|list`: full-NAT's configuration (rvs only: ipvsadm has no flag
//! for it, see the README's "Full-NAT").

use crate::protocol::{ClientAddressMode, FullnatKey, FullnatService, MAX_FULLNAT_POOL};
use rvs_core::Protocol;
use rvs_ctl::Client;
use std::net::{IpAddr, SocketAddr};

pub const USAGE: &str = "\
usage: rvs fullnat add -t|-u VIP:PORT --pool ADDR[,ADDR|,ADDR/PREFIX...]
                       [--client-address none|proxy-v2|toa]
       rvs fullnat del -t|-u VIP:PORT
       rvs fullnat list [--json]";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Add(FullnatService),
    Del(FullnatKey),
    List { json: bool },
}

fn key(flag: &str, spec: &str) -> Result<FullnatKey, String> {
    let protocol = match flag {
        "-t" | "--tcp-service" => Protocol::Tcp,
        "-u" | "--udp-service" => Protocol::Udp,
        _ => return Err(format!("expected -t or -u, not {flag:?}")),
    };
    let sa: SocketAddr = spec
        .parse()
        .map_err(|_| format!("{spec:?} is not ADDR:PORT (IPv6: [ADDR]:PORT)"))?;
    Ok(FullnatKey {
        protocol,
        addr: sa.ip(),
        port: sa.port(),
    })
}

/// The addresses of `ADDR[,ADDR|,ADDR/PREFIX...]`; a prefix stands for its host
/// addresses (an IPv4 prefix shorter than /31 without its network and broadcast ones).
pub fn pool(spec: &str) -> Result<Vec<IpAddr>, String> {
    let mut out = Vec::new();
    for part in spec.split(',').filter(|p| !p.is_empty()) {
        let Some((a, len)) = part.split_once('/') else {
            out.push(
                part.parse()
                    .map_err(|_| format!("{part:?} is not an address"))?,
            );
            continue;
        };
        let a: IpAddr = a.parse().map_err(|_| format!("{part:?} is not a prefix"))?;
        let bits = if a.is_ipv4() { 32u32 } else { 128 };
        let len: u32 = len
            .parse()
            .ok()
            .filter(|l| *l <= bits)
            .ok_or_else(|| format!("{part:?} is not a prefix"))?;
        let host_bits = bits - len;
        if host_bits > 16 || (1u128 << host_bits) > (MAX_FULLNAT_POOL as u128) * 4 {
            return Err(format!(
                "{part:?} holds more than the {MAX_FULLNAT_POOL} addresses a pool may"
            ));
        }
        let base = match a {
            IpAddr::V4(v) => u128::from(u32::from(v)),
            IpAddr::V6(v) => u128::from(v),
        } & !((1u128 << host_bits) - 1);
        let n = 1u128 << host_bits;
        let skip_ends = a.is_ipv4() && host_bits >= 2;
        for i in 0..n {
            if skip_ends && (i == 0 || i == n - 1) {
                continue;
            }
            let x = base + i;
            out.push(match a {
                IpAddr::V4(_) => IpAddr::V4((x as u32).into()),
                IpAddr::V6(_) => IpAddr::V6(x.into()),
            });
        }
    }
    out.sort();
    out.dedup();
    if out.len() > MAX_FULLNAT_POOL {
        return Err(format!("a pool holds at most {MAX_FULLNAT_POOL} addresses"));
    }
    Ok(out)
}

pub fn parse(args: &[String]) -> Result<Command, String> {
    let Some((sub, rest)) = args.split_first() else {
        return Err("a subcommand is needed".into());
    };
    let mut key_spec = None;
    let mut pool_spec = None;
    let mut mode = ClientAddressMode::None;
    let mut json = false;
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "-t" | "-u" | "--tcp-service" | "--udp-service" => {
                key_spec = Some(key(a, &value()?)?);
            }
            "--pool" => pool_spec = Some(pool(&value()?)?),
            "--client-address" => {
                mode = match value()?.as_str() {
                    "none" => ClientAddressMode::None,
                    "proxy-v2" | "proxy" => ClientAddressMode::ProxyV2,
                    "toa" => ClientAddressMode::Toa,
                    v => return Err(format!("--client-address {v:?}: none, proxy-v2 or toa")),
                }
            }
            "--json" if sub == "list" => json = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    match sub.as_str() {
        "add" | "set" => Ok(Command::Add(FullnatService {
            key: key_spec.ok_or("-t or -u VIP:PORT is needed")?,
            pool: pool_spec.ok_or("--pool is needed")?,
            client_address: mode,
        })),
        "del" => Ok(Command::Del(key_spec.ok_or("-t or -u VIP:PORT is needed")?)),
        "list" => Ok(Command::List { json }),
        other => Err(format!("unknown subcommand {other:?}")),
    }
}

fn mode_name(m: ClientAddressMode) -> &'static str {
    match m {
        ClientAddressMode::None => "none",
        ClientAddressMode::ProxyV2 => "proxy-v2",
        ClientAddressMode::Toa => "toa",
    }
}

/// One line per service: `TCP  10.0.0.1:80  pool 10.1.0.1,10.1.0.2  client-address toa`.
pub fn listing(services: &[FullnatService]) -> String {
    let mut out = String::new();
    for s in services {
        let vip = SocketAddr::new(s.key.addr, s.key.port);
        let pool: Vec<String> = s.pool.iter().map(IpAddr::to_string).collect();
        out.push_str(&format!(
            "{:<4} {vip}  pool {}  client-address {}\n",
            s.key.protocol.name(),
            pool.join(","),
            mode_name(s.client_address)
        ));
    }
    out
}

/// Parses `args`, then connects (`connect`: a client or the exit status) and asks.
pub fn main(args: &[String], connect: impl FnOnce() -> Result<Client, i32>) -> i32 {
    let cmd = match parse(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rvs fullnat: {e}\n{USAGE}");
            return 2;
        }
    };
    let mut client = match connect() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let r = match cmd {
        Command::Add(s) => client.fullnat_set(s),
        Command::Del(k) => client.fullnat_del(k),
        Command::List { json } => client.fullnat_list().map(|l| {
            if json {
                println!("{}", serde_json::to_string_pretty(&l).unwrap_or_default());
            } else {
                print!("{}", listing(&l));
            }
        }),
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("rvs fullnat: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn command_lines() {
        let c = parse(&args(
            "add -t 10.0.0.1:80 --pool 10.1.0.1,10.1.0.8/30 --client-address proxy-v2",
        ))
        .unwrap();
        let Command::Add(s) = c else { panic!() };
        assert_eq!(s.key.protocol, Protocol::Tcp);
        assert_eq!(s.key.port, 80);
        let p: Vec<String> = s.pool.iter().map(|a| a.to_string()).collect();
        assert_eq!(p, ["10.1.0.1", "10.1.0.9", "10.1.0.10"]);
        assert_eq!(s.client_address, ClientAddressMode::ProxyV2);
        let c = parse(&args("add -u [fd11::1]:53 --pool fd12::200/127")).unwrap();
        let Command::Add(s) = c else { panic!() };
        assert_eq!(s.pool.len(), 2);
        assert_eq!(s.client_address, ClientAddressMode::None);
        assert!(matches!(
            parse(&args("del -u 10.0.0.1:53")),
            Ok(Command::Del(FullnatKey { port: 53, .. }))
        ));
        assert_eq!(
            parse(&args("list --json")),
            Ok(Command::List { json: true })
        );
        for bad in [
            "add -t 10.0.0.1:80",
            "add --pool 10.1.0.1",
            "add -t 10.0.0.1 --pool 10.1.0.1",
            "add -t 10.0.0.1:80 --pool 10.1.0.0/16",
            "add -t 10.0.0.1:80 --pool x",
            "add -t 10.0.0.1:80 --pool 10.1.0.1 --client-address maybe",
            "del",
            "frob",
            "",
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad}");
        }
        let l = listing(&[s]);
        assert_eq!(
            l,
            "UDP  [fd11::1]:53  pool fd12::200,fd12::201  client-address none\n"
        );
    }
}
