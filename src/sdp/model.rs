//! The SDP data model (RFC 8866) and its serializer.
//!
//! Lines switchboard interprets (o=, s=, c=, m= and a few attributes) are typed; every
//! other line and attribute is kept as written, so an SDP passed through the B2BUA
//! loses nothing but what the B2BUA chose to rewrite.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// A session description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sdp {
    pub origin: Origin,
    /// `s=`; `-` when the sender left it out.
    pub session_name: String,
    /// Session-level lines not interpreted here (`i= u= e= p= b= t= r= z= k=`), in the
    /// order received.
    pub lines: Vec<Line>,
    /// The session-level `c=`, the default for media sections without their own.
    pub connection: Option<Connection>,
    pub attributes: Vec<Attribute>,
    pub media: Vec<Media>,
}

/// An uninterpreted `<kind>=<value>` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub kind: char,
    pub value: String,
}

/// `o=<username> <sess-id> <sess-version> IN <addrtype> <address>`. The id and version
/// stay text: senders use numbers wider than 64 bits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub username: String,
    pub session_id: String,
    pub session_version: String,
    pub address: Address,
}

/// A unicast address or a host name, with the address type SDP writes for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    Ip(IpAddr),
    Name { addr_type: AddrType, name: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddrType {
    Ip4,
    Ip6,
}

/// `c=IN <addrtype> <address>[/<ttl>][/<count>]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    pub address: Address,
    /// The multicast `/ttl/count` suffix as written (without the leading `/`).
    pub multicast: Option<String>,
}

/// One `m=` section and the lines under it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Media {
    /// `audio`, `video`, `image`, `application`, ...
    pub kind: String,
    /// 0 marks a rejected or disabled stream (RFC 3264 §5.1, §6).
    pub port: u16,
    /// The `/<number of ports>` suffix.
    pub port_count: Option<u16>,
    /// `RTP/AVP`, `RTP/SAVP`, `udptl`, ...
    pub proto: String,
    /// Payload type numbers for RTP profiles, other tokens otherwise.
    pub formats: Vec<String>,
    /// Media-level lines not interpreted here (`i= b= k=`), in the order received.
    pub lines: Vec<Line>,
    pub connection: Option<Connection>,
    pub attributes: Vec<Attribute>,
}

/// An `a=` line. Known attributes whose value doesn't parse stay [`Attribute::Other`]
/// rather than failing the whole description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attribute {
    Rtpmap(Rtpmap),
    Fmtp {
        payload_type: u8,
        params: String,
    },
    /// `a=ptime` in milliseconds.
    Ptime(u32),
    Direction(Direction),
    /// `a=rtcp:<port> [IN <addrtype> <address>]` (RFC 3605).
    Rtcp {
        port: u16,
        connection: Option<Connection>,
    },
    Other {
        name: String,
        value: Option<String>,
    },
}

/// `a=rtpmap:<payload type> <encoding name>/<clock rate>[/<encoding parameters>]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rtpmap {
    pub payload_type: u8,
    pub encoding: String,
    pub clock_rate: u32,
    /// For audio, the channel count.
    pub params: Option<u16>,
}

/// The media direction attribute (RFC 3264 §5.1), seen from the side that wrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    pub fn from_name(name: &str) -> Option<Direction> {
        match name {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    pub fn from_flags(sends: bool, receives: bool) -> Direction {
        match (sends, receives) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }

    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// The direction an answer gives to an offered stream (RFC 3264 §6.1): the answerer
    /// receives what the offerer sends and sends what it receives.
    pub fn answer(self) -> Direction {
        Direction::from_flags(self.receives(), self.sends())
    }
}

impl Address {
    pub fn addr_type(&self) -> AddrType {
        match self {
            Address::Ip(IpAddr::V4(_)) => AddrType::Ip4,
            Address::Ip(IpAddr::V6(_)) => AddrType::Ip6,
            Address::Name { addr_type, .. } => *addr_type,
        }
    }

    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Address::Ip(ip) => Some(*ip),
            Address::Name { .. } => None,
        }
    }
}

impl Connection {
    pub fn ip(ip: IpAddr) -> Connection {
        Connection {
            address: Address::Ip(ip),
            multicast: None,
        }
    }

    /// True for `0.0.0.0` (or `::`): the RFC 2543 way of putting a stream on hold.
    pub fn is_hold_address(&self) -> bool {
        self.address.ip().is_some_and(|ip| ip.is_unspecified())
    }
}

impl Media {
    /// The `c=` that applies to this section: its own, else the session's.
    pub fn effective_connection<'a>(&'a self, sdp: &'a Sdp) -> Option<&'a Connection> {
        self.connection.as_ref().or(sdp.connection.as_ref())
    }

    pub fn is_rejected(&self) -> bool {
        self.port == 0
    }

    pub fn is_rtp(&self) -> bool {
        self.proto.split('/').any(|p| p == "RTP")
    }

    fn direction_attribute(&self) -> Option<Direction> {
        direction_in(&self.attributes)
    }

    pub fn rtpmap(&self, payload_type: u8) -> Option<&Rtpmap> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::Rtpmap(m) if m.payload_type == payload_type => Some(m),
            _ => None,
        })
    }

    pub fn fmtp(&self, payload_type: u8) -> Option<&str> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::Fmtp {
                payload_type: pt,
                params,
            } if *pt == payload_type => Some(params.as_str()),
            _ => None,
        })
    }

    pub fn has_attribute(&self, name: &str) -> bool {
        self.attributes.iter().any(|a| a.name() == name)
    }
}

pub(super) fn direction_in(attributes: &[Attribute]) -> Option<Direction> {
    attributes.iter().find_map(|a| match a {
        Attribute::Direction(d) => Some(*d),
        _ => None,
    })
}

impl Sdp {
    /// The direction of media section `index` as its writer means it: the media-level
    /// attribute, else the session-level one, else sendrecv; a `c=` of 0.0.0.0 (old
    /// style hold, RFC 3264 §8.4) means the writer receives nothing.
    pub fn direction(&self, index: usize) -> Option<Direction> {
        let media = self.media.get(index)?;
        let written = media
            .direction_attribute()
            .or_else(|| direction_in(&self.attributes))
            .unwrap_or(Direction::SendRecv);
        let held = media
            .effective_connection(self)
            .is_some_and(Connection::is_hold_address);
        Some(Direction::from_flags(
            written.sends(),
            written.receives() && !held,
        ))
    }

    /// Where to send RTP for media section `index`, if the writer gave a usable address.
    pub fn rtp_addr(&self, index: usize) -> Option<SocketAddr> {
        let media = self.media.get(index)?;
        let ip = media.effective_connection(self)?.address.ip()?;
        if media.port == 0 || ip.is_unspecified() {
            return None;
        }
        Some(SocketAddr::new(ip, media.port))
    }

    /// Where to send RTCP for media section `index`: `a=rtcp` (RFC 3605) if present,
    /// else the RTP port + 1 (RFC 3550 §11).
    pub fn rtcp_addr(&self, index: usize) -> Option<SocketAddr> {
        let rtp = self.rtp_addr(index)?;
        let rtcp = self.media[index].attributes.iter().find_map(|a| match a {
            Attribute::Rtcp { port, connection } => Some((*port, connection)),
            _ => None,
        });
        match rtcp {
            Some((port, Some(c))) => c.address.ip().map(|ip| SocketAddr::new(ip, port)),
            Some((port, None)) => Some(SocketAddr::new(rtp.ip(), port)),
            None => rtp
                .port()
                .checked_add(1)
                .map(|p| SocketAddr::new(rtp.ip(), p)),
        }
    }

    /// The serialized description, CRLF line ends.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }
}

impl Attribute {
    pub fn name(&self) -> &str {
        match self {
            Attribute::Rtpmap(_) => "rtpmap",
            Attribute::Fmtp { .. } => "fmtp",
            Attribute::Ptime(_) => "ptime",
            Attribute::Direction(d) => d.as_str(),
            Attribute::Rtcp { .. } => "rtcp",
            Attribute::Other { name, .. } => name,
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for AddrType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddrType::Ip4 => "IP4",
            AddrType::Ip6 => "IP6",
        })
    }
}

/// `IN <addrtype> <address>`, the tail shared by o=, c= and a=rtcp.
impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Ip(ip) => write!(f, "IN {} {ip}", self.addr_type()),
            Address::Name { addr_type, name } => write!(f, "IN {addr_type} {name}"),
        }
    }
}

impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.address)?;
        match &self.multicast {
            Some(suffix) => write!(f, "/{suffix}"),
            None => Ok(()),
        }
    }
}

impl fmt::Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attribute::Rtpmap(m) => {
                write!(
                    f,
                    "rtpmap:{} {}/{}",
                    m.payload_type, m.encoding, m.clock_rate
                )?;
                match m.params {
                    Some(p) => write!(f, "/{p}"),
                    None => Ok(()),
                }
            }
            Attribute::Fmtp {
                payload_type,
                params,
            } => write!(f, "fmtp:{payload_type} {params}"),
            Attribute::Ptime(ms) => write!(f, "ptime:{ms}"),
            Attribute::Direction(d) => f.write_str(d.as_str()),
            Attribute::Rtcp { port, connection } => match connection {
                Some(c) => write!(f, "rtcp:{port} {c}"),
                None => write!(f, "rtcp:{port}"),
            },
            Attribute::Other { name, value } => match value {
                Some(v) => write!(f, "{name}:{v}"),
                None => f.write_str(name),
            },
        }
    }
}

/// Writes `lines` whose kind is (or is not) among `kinds`, keeping their order.
fn write_lines(
    f: &mut fmt::Formatter<'_>,
    lines: &[Line],
    kinds: &str,
    wanted: bool,
) -> fmt::Result {
    for line in lines.iter().filter(|l| kinds.contains(l.kind) == wanted) {
        write!(f, "{}={}\r\n", line.kind, line.value)?;
    }
    Ok(())
}

fn write_attributes(f: &mut fmt::Formatter<'_>, attributes: &[Attribute]) -> fmt::Result {
    for a in attributes {
        write!(f, "a={a}\r\n")?;
    }
    Ok(())
}

/// Serializes in RFC 8866 §5 order: the lines that precede `c=` in the grammar are
/// written before it, the rest after, each group in received order.
impl fmt::Display for Sdp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.origin;
        write!(
            f,
            "v=0\r\no={} {} {} {}\r\ns={}\r\n",
            o.username, o.session_id, o.session_version, o.address, self.session_name
        )?;
        write_lines(f, &self.lines, "iuep", true)?;
        if let Some(c) = &self.connection {
            write!(f, "c={c}\r\n")?;
        }
        write_lines(f, &self.lines, "iuep", false)?;
        write_attributes(f, &self.attributes)?;
        for m in &self.media {
            write!(f, "m={} {}", m.kind, m.port)?;
            if let Some(n) = m.port_count {
                write!(f, "/{n}")?;
            }
            write!(f, " {}", m.proto)?;
            for format in &m.formats {
                write!(f, " {format}")?;
            }
            f.write_str("\r\n")?;
            write_lines(f, &m.lines, "i", true)?;
            if let Some(c) = &m.connection {
                write!(f, "c={c}\r\n")?;
            }
            write_lines(f, &m.lines, "i", false)?;
            write_attributes(f, &m.attributes)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    #[test]
    fn answer_direction_mirrors_the_offer() {
        use Direction::*;
        for (offer, answer) in [
            (SendRecv, SendRecv),
            (SendOnly, RecvOnly),
            (RecvOnly, SendOnly),
            (Inactive, Inactive),
        ] {
            assert_eq!(offer.answer(), answer);
        }
    }

    #[test]
    fn directions_of_hold_and_resume() {
        assert_eq!(sdp(HOLD_SENDONLY).direction(0), Some(Direction::SendOnly));
        assert_eq!(sdp(RESUME).direction(0), Some(Direction::SendRecv));
        assert_eq!(sdp(SIPP_UAC).direction(0), Some(Direction::SendRecv));
        assert_eq!(sdp(SIPP_UAC).direction(1), None);
        // The session-level attribute applies where a section has none.
        assert_eq!(sdp(TWO_STREAMS_LF).direction(0), Some(Direction::Inactive));
    }

    #[test]
    fn old_style_hold_means_the_holder_receives_nothing() {
        let mut s = sdp(HOLD_OLD_STYLE);
        assert_eq!(s.direction(0), Some(Direction::SendOnly));
        assert_eq!(s.rtp_addr(0), None);
        s.media[0]
            .attributes
            .push(Attribute::Direction(Direction::RecvOnly));
        assert_eq!(s.direction(0), Some(Direction::Inactive));
    }

    #[test]
    fn rtp_and_rtcp_addresses() {
        let held = sdp(HOLD_SENDONLY);
        assert_eq!(held.rtp_addr(0), Some("192.0.2.10:49170".parse().unwrap()));
        assert_eq!(held.rtcp_addr(0), Some("192.0.2.10:49171".parse().unwrap()));
        let sipp = sdp(SIPP_UAC);
        assert_eq!(
            sipp.rtcp_addr(0),
            Some("192.168.1.20:6001".parse().unwrap())
        );
        let two = sdp(TWO_STREAMS_LF);
        assert_eq!(
            two.rtp_addr(0),
            Some("[2001:db8::5]:30000".parse().unwrap())
        );
        assert_eq!(two.rtp_addr(1), None, "rejected stream");
        assert_eq!(two.rtcp_addr(1), None);
    }
}
