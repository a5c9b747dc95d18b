//! Transport header views: TCP (RFC 9293), UDP (RFC 768), SCTP common header and chunks
//! (RFC 9260), ICMP (RFC 792) and ICMPv6 (RFC 4443).

use crate::WireError;

pub mod proto {
    pub const ICMP: u8 = 1;
    pub const IPIP: u8 = 4;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const IPV6: u8 = 41;
    pub const GRE: u8 = 47;
    pub const ICMPV6: u8 = 58;
    pub const SCTP: u8 = 132;
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// TCP header view.
#[derive(Debug, Clone, Copy)]
pub struct TcpPacket<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    pub const MIN_LEN: usize = 20;
    /// Checks that the fixed header fits and the data offset is sane.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < Self::MIN_LEN {
            return Err(WireError::Truncated);
        }
        let doff = usize::from(b[12] >> 4) * 4;
        if doff < Self::MIN_LEN {
            return Err(WireError::Malformed);
        }
        if doff > b.len() {
            return Err(WireError::Truncated);
        }
        Ok(TcpPacket { buf })
    }
    pub fn src_port(&self) -> u16 {
        be16(self.buf.as_ref(), 0)
    }
    pub fn dst_port(&self) -> u16 {
        be16(self.buf.as_ref(), 2)
    }
    pub fn seq(&self) -> u32 {
        let b = self.buf.as_ref();
        u32::from_be_bytes([b[4], b[5], b[6], b[7]])
    }
    pub fn header_len(&self) -> usize {
        usize::from(self.buf.as_ref()[12] >> 4) * 4
    }
    /// The flag byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10, URG 0x20, ...).
    pub fn flags(&self) -> u8 {
        self.buf.as_ref()[13]
    }
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), 16)
    }
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[self.header_len()..]
    }
    pub fn ack(&self) -> u32 {
        let b = self.buf.as_ref();
        u32::from_be_bytes([b[8], b[9], b[10], b[11]])
    }
    /// The option bytes (between the fixed header and the data offset).
    pub fn options(&self) -> &[u8] {
        &self.buf.as_ref()[Self::MIN_LEN..self.header_len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    pub fn set_seq(&mut self, v: u32) {
        self.buf.as_mut()[4..8].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_ack(&mut self, v: u32) {
        self.buf.as_mut()[8..12].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_checksum(&mut self, v: u16) {
        self.buf.as_mut()[16..18].copy_from_slice(&v.to_be_bytes());
    }
    /// Sets the data offset (`len` a multiple of 4, 20..=60; the caller has made the room).
    pub fn set_header_len(&mut self, len: usize) {
        let b = self.buf.as_mut();
        b[12] = (((len / 4) as u8) << 4) | (b[12] & 0x0f);
    }
    pub fn options_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buf.as_mut()[Self::MIN_LEN..hl]
    }
}

/// UDP header view.
#[derive(Debug, Clone, Copy)]
pub struct UdpPacket<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    pub const LEN: usize = 8;
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        if buf.as_ref().len() < Self::LEN {
            return Err(WireError::Truncated);
        }
        Ok(UdpPacket { buf })
    }
    pub fn src_port(&self) -> u16 {
        be16(self.buf.as_ref(), 0)
    }
    pub fn dst_port(&self) -> u16 {
        be16(self.buf.as_ref(), 2)
    }
    pub fn len(&self) -> u16 {
        be16(self.buf.as_ref(), 4)
    }
    pub fn is_empty(&self) -> bool {
        self.len() <= 8
    }
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), 6)
    }
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[Self::LEN..]
    }
}

/// SCTP common header view, with access to the first chunks.
#[derive(Debug, Clone, Copy)]
pub struct SctpPacket<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> SctpPacket<T> {
    pub const HEADER_LEN: usize = 12;
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        if buf.as_ref().len() < Self::HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(SctpPacket { buf })
    }
    pub fn src_port(&self) -> u16 {
        be16(self.buf.as_ref(), 0)
    }
    pub fn dst_port(&self) -> u16 {
        be16(self.buf.as_ref(), 2)
    }
    pub fn verification_tag(&self) -> u32 {
        let b = self.buf.as_ref();
        u32::from_be_bytes([b[4], b[5], b[6], b[7]])
    }
    /// The CRC32c as stored (little-endian on the wire, as the kernel does).
    pub fn checksum(&self) -> u32 {
        let b = self.buf.as_ref();
        u32::from_le_bytes([b[8], b[9], b[10], b[11]])
    }
    /// The checksum this packet should carry.
    pub fn compute_checksum(&self) -> u32 {
        let b = self.buf.as_ref();
        let c = crate::crc32c::update(!0, &b[..8]);
        let c = crate::crc32c::update(c, &[0; 4]);
        !crate::crc32c::update(c, &b[12..])
    }
    /// Type of the first chunk and of the next one (if its header is present).
    pub fn first_chunks(&self) -> Option<(u8, Option<u8>)> {
        let b = self.buf.as_ref();
        let first = b.get(12..16)?;
        let len = usize::from(u16::from_be_bytes([first[2], first[3]]));
        if len < 4 {
            return Some((first[0], None));
        }
        let next = 12usize.checked_add(len.div_ceil(4) * 4)?;
        Some((first[0], b.get(next..next + 4).map(|c| c[0])))
    }
}

/// ICMP / ICMPv6 header view (type, code, checksum, 4 bytes of rest-of-header).
#[derive(Debug, Clone, Copy)]
pub struct IcmpPacket<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    pub const HEADER_LEN: usize = 8;
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        if buf.as_ref().len() < Self::HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(IcmpPacket { buf })
    }
    pub fn msg_type(&self) -> u8 {
        self.buf.as_ref()[0]
    }
    pub fn code(&self) -> u8 {
        self.buf.as_ref()[1]
    }
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), 2)
    }
    /// For errors: the quoted packet.
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[Self::HEADER_LEN..]
    }
}

/// ICMPv4 types IPVS treats as errors related to a connection (§3.9).
pub fn icmpv4_is_related_error(t: u8) -> bool {
    matches!(t, 3 | 4 | 11)
}

/// ICMPv4 error types (never answered with another ICMP error).
pub fn icmpv4_is_error(t: u8) -> bool {
    matches!(t, 3 | 4 | 5 | 11 | 12)
}

/// ICMPv6 error types: every type below 128.
pub fn icmpv6_is_error(t: u8) -> bool {
    t < 128
}
