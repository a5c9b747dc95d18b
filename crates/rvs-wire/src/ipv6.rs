//! IPv6 header view (RFC 8200) and the extension-header walk.

use crate::WireError;
use std::net::Ipv6Addr;

pub const HEADER_LEN: usize = 40;

pub mod next_header {
    pub const HOP_BY_HOP: u8 = 0;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const ESP: u8 = 50;
    pub const AH: u8 = 51;
    pub const NONE: u8 = 59;
    pub const DEST_OPTS: u8 = 60;
    pub const MOBILITY: u8 = 135;
    pub const HIP: u8 = 139;
    pub const SHIM6: u8 = 140;
}

/// A typed view over an IPv6 packet.
#[derive(Debug, Clone, Copy)]
pub struct Ipv6Packet<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// A whole packet: the header and `payload_len` bytes must be in `buf`.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let p = Self::new_quoted(buf)?;
        if HEADER_LEN + p.payload_len() > p.buf.as_ref().len() {
            return Err(WireError::Truncated);
        }
        Ok(p)
    }

    /// A possibly truncated packet (as quoted in an ICMPv6 error).
    pub fn new_quoted(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[0] >> 4 != 6 {
            return Err(WireError::Malformed);
        }
        Ok(Ipv6Packet { buf })
    }

    pub fn into_inner(self) -> T {
        self.buf
    }
    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }
    pub fn traffic_class(&self) -> u8 {
        (self.b()[0] << 4) | (self.b()[1] >> 4)
    }
    pub fn payload_len(&self) -> usize {
        usize::from(u16::from_be_bytes([self.b()[4], self.b()[5]]))
    }
    /// Header + payload length (what the packet occupies).
    pub fn total_len(&self) -> usize {
        HEADER_LEN + self.payload_len()
    }
    pub fn next_header(&self) -> u8 {
        self.b()[6]
    }
    pub fn hop_limit(&self) -> u8 {
        self.b()[7]
    }
    pub fn src_bytes(&self) -> [u8; 16] {
        let mut a = [0; 16];
        a.copy_from_slice(&self.b()[8..24]);
        a
    }
    pub fn dst_bytes(&self) -> [u8; 16] {
        let mut a = [0; 16];
        a.copy_from_slice(&self.b()[24..40]);
        a
    }
    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.src_bytes())
    }
    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.dst_bytes())
    }
    /// Payload (after the fixed header), cut at `payload_len` or the buffer end.
    pub fn payload(&self) -> &[u8] {
        let end = self.total_len().min(self.b().len());
        &self.b()[HEADER_LEN..end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    fn bm(&mut self) -> &mut [u8] {
        self.buf.as_mut()
    }
    pub fn set_src_addr(&mut self, a: [u8; 16]) {
        self.bm()[8..24].copy_from_slice(&a);
    }
    pub fn set_dst_addr(&mut self, a: [u8; 16]) {
        self.bm()[24..40].copy_from_slice(&a);
    }
    pub fn set_hop_limit(&mut self, v: u8) {
        self.bm()[7] = v;
    }
    pub fn set_payload_len(&mut self, v: u16) {
        self.bm()[4..6].copy_from_slice(&v.to_be_bytes());
    }
}

/// Where the walk of the extension headers ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtWalk {
    /// The upper-layer protocol (or the next header after a non-first fragment).
    pub protocol: u8,
    /// Offset of the upper-layer header from the start of the IPv6 payload.
    pub offset: usize,
    /// A fragment header was seen.
    pub fragmented: bool,
    /// A fragment header with a non-zero offset: no upper-layer header follows.
    pub non_first_fragment: bool,
}

/// Walks the extension headers of an IPv6 payload (hop-by-hop, routing, fragment,
/// destination options, AH, mobility, HIP, shim6), as the kernel's `ipv6_find_hdr`.
/// `data` may be truncated (quoted packets): headers that do not fit are an error.
pub fn walk_ext(first: u8, data: &[u8]) -> Result<ExtWalk, WireError> {
    use next_header::*;
    let mut nh = first;
    let mut off = 0usize;
    let mut fragmented = false;
    // Every extension header is at least 8 bytes, so the loop is bounded by data.len()/8;
    // a hard cap guards against pathological chains anyway.
    for _ in 0..64 {
        match nh {
            HOP_BY_HOP | ROUTING | DEST_OPTS | MOBILITY | HIP | SHIM6 | AH => {
                let h = data.get(off..off + 2).ok_or(WireError::Truncated)?;
                let len = if nh == AH {
                    (usize::from(h[1]) + 2) * 4
                } else {
                    (usize::from(h[1]) + 1) * 8
                };
                if off + len > data.len() {
                    return Err(WireError::Truncated);
                }
                nh = h[0];
                off += len;
            }
            FRAGMENT => {
                let h = data.get(off..off + 8).ok_or(WireError::Truncated)?;
                let frag_off = u16::from_be_bytes([h[2], h[3]]) & !7;
                // An atomic fragment (offset 0, M clear) is not really fragmented.
                fragmented |= frag_off != 0 || h[3] & 1 != 0;
                nh = h[0];
                off += 8;
                if frag_off != 0 {
                    return Ok(ExtWalk {
                        protocol: nh,
                        offset: off,
                        fragmented,
                        non_first_fragment: true,
                    });
                }
            }
            _ => {
                return Ok(ExtWalk {
                    protocol: nh,
                    offset: off,
                    fragmented,
                    non_first_fragment: false,
                });
            }
        }
    }
    Err(WireError::Malformed)
}
