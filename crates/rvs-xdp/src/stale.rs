//! An rvs XDP program left attached by a crashed rvs: found by the name of the program the
//! interface carries (netlink `IFLA_XDP`) and detached. A program attached through a BPF
//! link (what [`crate::XdpProgram`] does on kernels that have them) goes with its last
//! file descriptor, so this finds only netlink attachments; another program's is left alone.

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{LinkAttribute, LinkMessage, LinkXdp, XdpAttached};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use std::io;

const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

fn ask(msg: RouteNetlinkMessage, flags: u16) -> io::Result<Vec<RouteNetlinkMessage>> {
    let mut sock = Socket::new(NETLINK_ROUTE)?;
    sock.bind_auto()?;
    sock.connect(&SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | flags;
    header.sequence_number = 1;
    let mut m = NetlinkMessage::new(header, NetlinkPayload::from(msg));
    m.finalize();
    let mut buf = vec![0u8; m.buffer_len()];
    m.serialize(&mut buf);
    sock.send(&buf, 0)?;
    let mut out = Vec::new();
    let mut rbuf = vec![0u8; 64 * 1024];
    let n = sock.recv(&mut &mut rbuf[..], 0)?;
    let mut at = 0;
    while at < n {
        let Ok(m) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rbuf[at..n]) else {
            break;
        };
        let len = m.header.length as usize;
        match m.payload {
            NetlinkPayload::InnerMessage(r) => out.push(r),
            NetlinkPayload::Error(e) => {
                if let Some(code) = e.code {
                    return Err(io::Error::from_raw_os_error(-code.get()));
                }
            }
            _ => {}
        }
        if len == 0 {
            break;
        }
        at += len;
    }
    Ok(out)
}

/// The XDP program attached to `ifindex` by netlink: its id and mode flags.
fn attached(ifindex: u32) -> io::Result<Option<(u32, u32)>> {
    let mut m = LinkMessage::default();
    m.header.index = ifindex;
    for r in ask(RouteNetlinkMessage::GetLink(m), 0)? {
        let RouteNetlinkMessage::NewLink(l) = r else {
            continue;
        };
        for a in &l.attributes {
            let LinkAttribute::Xdp(x) = a else { continue };
            let mut id = None;
            let mut mode = 0;
            for v in x {
                match v {
                    LinkXdp::ProgId(i) => id = Some(*i),
                    LinkXdp::Attached(XdpAttached::Driver) => mode = XDP_FLAGS_DRV_MODE,
                    LinkXdp::Attached(XdpAttached::SocketBuffer) => mode = XDP_FLAGS_SKB_MODE,
                    _ => {}
                }
            }
            return Ok(id.filter(|&i| i != 0).map(|i| (i, mode)));
        }
    }
    Ok(None)
}

fn program_name(id: u32) -> Option<String> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .and_then(|p| p.name_as_str().map(str::to_string))
}

/// Detaches an rvs program from `ifindex` (`name` for the log); anything else stays.
pub(crate) fn remove(ifindex: u32, name: &str) {
    let Ok(Some((id, mode))) = attached(ifindex) else {
        return;
    };
    if program_name(id).as_deref() != Some(crate::program::PROGRAM) {
        return;
    }
    let mut m = LinkMessage::default();
    m.header.index = ifindex;
    m.attributes.push(LinkAttribute::Xdp(vec![
        LinkXdp::Fd(-1),
        LinkXdp::Flags(mode),
    ]));
    match ask(RouteNetlinkMessage::SetLink(m), NLM_F_ACK) {
        Ok(_) => eprintln!(
            "rvs xdp: removed the XDP program {} (id {id}) a previous rvs left on {name}",
            crate::program::PROGRAM
        ),
        // Attached through a live link: another rvs runs; attaching will say so.
        Err(e) => eprintln!("rvs xdp: cannot remove the rvs XDP program (id {id}) on {name}: {e}"),
    }
}
