//! Full-NAT's configuration in the daemon (`fullnat_set` / `fullnat_del` / `fullnat_list`):
//! rvs only, since ipvsadm and the kernel's netlink have no such thing. The services are
//! kept in a file next to the state (`STATE.fullnat`, JSON, replaced atomically on each
//! change), handed to the engine's translation table ([`rvs_engine::fullnat::FullNat`]),
//! and their pool addresses routed into rvs like VIPs (a local route, so that the
//! director answers ARP / neighbour solicitations for them and replies come back into the
//! TUN). The director's table is untouched: its real servers stay masquerading (`Masq`
//! in listings), so `ipvsadm` shows exactly what it would.

use super::Shared;
use crate::protocol::{
    ClientAddressMode, ErrorCode, FullnatKey, FullnatService, MAX_FULLNAT_POOL, Payload, Request,
    Response,
};
use rvs_core::Protocol;
use rvs_engine::fullnat::{ClientAddress, ServiceConfig, ServiceId};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The full-NAT services, by key.
pub type Services = BTreeMap<FullnatKey, FullnatService>;

/// Where the full-NAT services are kept: next to the state file.
pub fn path(state: &Path) -> PathBuf {
    let mut s = state.as_os_str().to_owned();
    s.push(".fullnat");
    PathBuf::from(s)
}

/// Reads the saved services (none when the file does not exist).
pub fn load(state: &Path) -> Result<Services, String> {
    let p = path(state);
    let text = match fs::read(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Services::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", p.display())),
    };
    let list: Vec<FullnatService> = serde_json::from_slice(&text)
        .map_err(|e| format!("{} is not a list of full-NAT services: {e}", p.display()))?;
    let mut out = Services::new();
    for s in list {
        validate(&s).map_err(|e| format!("{}: {e}", p.display()))?;
        out.insert(s.key, s);
    }
    Ok(out)
}

/// Writes the services (a temporary file, synced, renamed over the old one).
fn save(state: &Path, services: &Services) -> io::Result<()> {
    let p = path(state);
    let mut tmp = p.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let list: Vec<&FullnatService> = services.values().collect();
    let text = serde_json::to_vec_pretty(&list).map_err(io::Error::other)?;
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&text)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
    }
    fs::rename(&tmp, &p)?;
    if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Why a service cannot be full-NAT.
pub fn validate(s: &FullnatService) -> Result<(), String> {
    if s.key.protocol == Protocol::Sctp {
        return Err("full-NAT is for TCP and UDP services".into());
    }
    if s.pool.is_empty() {
        return Err("the pool needs at least one address".into());
    }
    if s.pool.len() > MAX_FULLNAT_POOL {
        return Err(format!("a pool holds at most {MAX_FULLNAT_POOL} addresses"));
    }
    for a in &s.pool {
        if a.is_ipv4() != s.key.addr.is_ipv4() {
            return Err(format!(
                "pool address {a} is not of the service's family ({})",
                s.key.addr
            ));
        }
        if a.is_unspecified() || a.is_multicast() || a.is_loopback() {
            return Err(format!("pool address {a} cannot be a source"));
        }
        if *a == s.key.addr {
            return Err(format!("pool address {a} is the service's address"));
        }
    }
    Ok(())
}

/// The services as the engine's table takes them.
pub fn engine_services(services: &Services) -> BTreeMap<ServiceId, ServiceConfig> {
    services
        .values()
        .map(|s| {
            (
                ServiceId {
                    protocol: s.key.protocol.number(),
                    addr: s.key.addr,
                    port: s.key.port,
                },
                ServiceConfig {
                    pool: s.pool.clone(),
                    client_address: match s.client_address {
                        ClientAddressMode::None => ClientAddress::None,
                        ClientAddressMode::ProxyV2 => ClientAddress::ProxyV2,
                        ClientAddressMode::Toa => ClientAddress::Toa,
                    },
                },
            )
        })
        .collect()
}

/// Every pool address.
pub fn pool_addrs(services: &Services) -> BTreeSet<IpAddr> {
    services
        .values()
        .flat_map(|s| s.pool.iter().copied())
        .collect()
}

/// How long a change waits for its routes before answering anyway.
const ROUTE_WAIT: Duration = Duration::from_secs(10);

/// Serves the full-NAT requests.
pub fn handle(shared: &Shared, req: &Request) -> Response {
    match change(shared, req) {
        Some(r) => r,
        None => Response::error(ErrorCode::Internal, "not a full-NAT request"),
    }
}

fn change(shared: &Shared, req: &Request) -> Option<Response> {
    let (key, new) = match req {
        Request::FullnatList => {
            let ctl = shared.control();
            return Some(Response::data(Payload::Fullnat {
                services: ctl.fullnat.values().cloned().collect(),
            }));
        }
        Request::FullnatSet { service } => {
            if let Err(e) = validate(service) {
                return Some(Response::error(ErrorCode::InvalidValue, e));
            }
            (service.key, Some(service.clone()))
        }
        Request::FullnatDel { key } => (*key, None),
        _ => return None,
    };
    let mut ctl = shared.control();
    let mut services = ctl.fullnat.clone();
    match &new {
        Some(s) => {
            services.insert(key, s.clone());
        }
        None => {
            if services.remove(&key).is_none() {
                return Some(Response::error(
                    ErrorCode::NotFound,
                    format!(
                        "{} {}:{} is not full-NAT",
                        key.protocol.name(),
                        key.addr,
                        key.port
                    ),
                ));
            }
        }
    }
    if let Err(e) = save(&shared.state_path, &services) {
        return Some(Response::error(
            ErrorCode::PersistFailed,
            format!("cannot write {}: {e}", path(&shared.state_path).display()),
        ));
    }
    shared.fullnat.set_services(engine_services(&services));
    let delta = ctl.targets.set_pools(pool_addrs(&services));
    ctl.fullnat = services;
    let route = shared.router.submit(delta);
    drop(ctl);
    if let Some(t) = route {
        shared.router.wait(t, ROUTE_WAIT);
    }
    Some(Response::ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(addr: &str, pool: &[&str]) -> FullnatService {
        FullnatService {
            key: FullnatKey {
                protocol: Protocol::Tcp,
                addr: addr.parse().unwrap(),
                port: 80,
            },
            pool: pool.iter().map(|a| a.parse().unwrap()).collect(),
            client_address: ClientAddressMode::ProxyV2,
        }
    }

    #[test]
    fn pools_are_checked() {
        assert!(validate(&svc("10.0.0.1", &["10.1.0.1", "10.1.0.2"])).is_ok());
        assert!(validate(&svc("fd00::1", &["fd01::1"])).is_ok());
        assert!(validate(&svc("10.0.0.1", &[])).is_err());
        assert!(validate(&svc("10.0.0.1", &["fd01::1"])).is_err());
        assert!(validate(&svc("10.0.0.1", &["10.0.0.1"])).is_err());
        assert!(validate(&svc("10.0.0.1", &["0.0.0.0"])).is_err());
        let mut s = svc("10.0.0.1", &["10.1.0.1"]);
        s.key.protocol = Protocol::Sctp;
        assert!(validate(&s).is_err());
    }

    #[test]
    fn saved_services_load_again() {
        let dir = std::env::temp_dir().join(format!("rvs-fullnat-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let state = dir.join("state.json");
        assert!(load(&state).unwrap().is_empty());
        let mut m = Services::new();
        let a = svc("10.0.0.1", &["10.1.0.1"]);
        let b = svc("fd00::1", &["fd01::1", "fd01::2"]);
        m.insert(a.key, a);
        m.insert(b.key, b);
        save(&state, &m).unwrap();
        assert_eq!(load(&state).unwrap(), m);
        assert_eq!(pool_addrs(&m).len(), 3);
        assert_eq!(engine_services(&m).len(), 2);
        fs::write(path(&state), b"[{\"key\":1}]").unwrap();
        assert!(load(&state).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
