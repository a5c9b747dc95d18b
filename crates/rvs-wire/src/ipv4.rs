//! IPv4 header view (RFC 791), options included.

use crate::WireError;
use crate::checksum;
use std::net::Ipv4Addr;

pub const MIN_HEADER_LEN: usize = 20;

/// A typed view over an IPv4 packet.
#[derive(Debug, Clone, Copy)]
pub struct Ipv4Packet<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// A whole packet: the header and `total_len` bytes must be in `buf` (trailing bytes,
    /// e.g. link padding, are allowed and ignored).
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let p = Self::new_quoted(buf)?;
        let tl = p.total_len();
        if tl < p.header_len() {
            return Err(WireError::Malformed);
        }
        if tl > p.buf.as_ref().len() {
            return Err(WireError::Truncated);
        }
        Ok(p)
    }

    /// A possibly truncated packet (as quoted in an ICMP error): only the header must fit.
    pub fn new_quoted(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[0] >> 4 != 4 {
            return Err(WireError::Malformed);
        }
        let hl = usize::from(b[0] & 0x0f) * 4;
        if hl < MIN_HEADER_LEN {
            return Err(WireError::Malformed);
        }
        if hl > b.len() {
            return Err(WireError::Truncated);
        }
        Ok(Ipv4Packet { buf })
    }

    pub fn into_inner(self) -> T {
        self.buf
    }
    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }
    pub fn header_len(&self) -> usize {
        usize::from(self.b()[0] & 0x0f) * 4
    }
    pub fn dscp_ecn(&self) -> u8 {
        self.b()[1]
    }
    pub fn total_len(&self) -> usize {
        usize::from(u16::from_be_bytes([self.b()[2], self.b()[3]]))
    }
    pub fn ident(&self) -> u16 {
        u16::from_be_bytes([self.b()[4], self.b()[5]])
    }
    pub fn dont_frag(&self) -> bool {
        self.b()[6] & 0x40 != 0
    }
    pub fn more_frags(&self) -> bool {
        self.b()[6] & 0x20 != 0
    }
    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> usize {
        usize::from(u16::from_be_bytes([self.b()[6] & 0x1f, self.b()[7]])) * 8
    }
    /// Part of a fragmented datagram (first or later fragment).
    pub fn is_fragmented(&self) -> bool {
        self.more_frags() || self.frag_offset() != 0
    }
    pub fn ttl(&self) -> u8 {
        self.b()[8]
    }
    pub fn protocol(&self) -> u8 {
        self.b()[9]
    }
    pub fn checksum(&self) -> u16 {
        u16::from_be_bytes([self.b()[10], self.b()[11]])
    }
    pub fn src_bytes(&self) -> [u8; 4] {
        let b = self.b();
        [b[12], b[13], b[14], b[15]]
    }
    pub fn dst_bytes(&self) -> [u8; 4] {
        let b = self.b();
        [b[16], b[17], b[18], b[19]]
    }
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.src_bytes())
    }
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.dst_bytes())
    }
    pub fn options(&self) -> &[u8] {
        &self.b()[MIN_HEADER_LEN..self.header_len()]
    }
    /// The payload: up to `total_len`, or to the end of the buffer if it is shorter.
    pub fn payload(&self) -> &[u8] {
        let end = self.total_len().min(self.b().len());
        self.b().get(self.header_len()..end).unwrap_or(&[])
    }
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(&self.b()[..self.header_len()]) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    fn bm(&mut self) -> &mut [u8] {
        self.buf.as_mut()
    }
    pub fn set_ttl(&mut self, v: u8) {
        self.bm()[8] = v;
    }
    /// Sets the total length (the header checksum is left to the caller).
    pub fn set_total_len(&mut self, v: u16) {
        self.bm()[2..4].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_checksum(&mut self, v: u16) {
        self.bm()[10..12].copy_from_slice(&v.to_be_bytes());
    }
    /// Recomputes the header checksum from scratch.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let hl = self.header_len();
        let c = checksum::checksum(&self.b()[..hl]);
        self.set_checksum(c);
    }
    /// Sets the source address, updating the header checksum incrementally.
    pub fn set_src_addr(&mut self, a: [u8; 4]) {
        let old = self.src_bytes();
        let c = checksum::update(self.checksum(), &old, &a);
        self.bm()[12..16].copy_from_slice(&a);
        self.set_checksum(c);
    }
    /// Sets the destination address, updating the header checksum incrementally.
    pub fn set_dst_addr(&mut self, a: [u8; 4]) {
        let old = self.dst_bytes();
        let c = checksum::update(self.checksum(), &old, &a);
        self.bm()[16..20].copy_from_slice(&a);
        self.set_checksum(c);
    }
    /// Decrements the TTL with an incremental checksum update. Returns the new TTL.
    pub fn decrement_ttl(&mut self) -> u8 {
        let old = u16::from_be_bytes([self.b()[8], self.b()[9]]);
        let ttl = self.ttl().saturating_sub(1);
        self.set_ttl(ttl);
        let new = u16::from_be_bytes([self.b()[8], self.b()[9]]);
        let c = checksum::update16(self.checksum(), old, new);
        self.set_checksum(c);
        ttl
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (hl, end) = (self.header_len(), self.total_len().min(self.b().len()));
        self.bm().get_mut(hl..end).unwrap_or(&mut [])
    }
}
