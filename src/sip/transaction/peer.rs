//! The far end of a message: which transport, which address, which connection.
//!
//! The transport shells (src/transport/) fill a [`Peer`] in for every message they
//! receive and read one out of every [`Transmit`](super::Transmit) they are asked to
//! send, so the protocol logic never holds a socket.

use crate::sip::Via;
use std::net::SocketAddr;

/// A SIP transport (RFC 3261 §18, RFC 7118 for WebSocket).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransportKind {
    Udp,
    Tcp,
    Tls,
    Ws,
    Wss,
}

impl TransportKind {
    /// Reliable transports deliver or fail loudly, so the transaction layer doesn't
    /// retransmit over them and its wait-for-stragglers timers are zero.
    pub fn is_reliable(self) -> bool {
        self != TransportKind::Udp
    }

    /// The port a Via sent-by without one means (RFC 3261 §18.2.2, §19.1.2).
    pub fn default_port(self) -> u16 {
        match self {
            TransportKind::Udp | TransportKind::Tcp | TransportKind::Ws => 5060,
            TransportKind::Tls | TransportKind::Wss => 5061,
        }
    }
}

/// Where a message came from or goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Peer {
    pub transport: TransportKind,
    pub addr: SocketAddr,
    /// The stream connection a message arrived on or should leave by; `None` for UDP
    /// and for a stream destination the shell should connect to (or reuse) by address.
    pub conn: Option<u64>,
}

impl Peer {
    pub fn new(transport: TransportKind, addr: SocketAddr) -> Peer {
        Peer {
            transport,
            addr,
            conn: None,
        }
    }

    pub fn is_reliable(&self) -> bool {
        self.transport.is_reliable()
    }

    /// Where responses to a request received from `self` go (RFC 3261 §18.2.2 with
    /// RFC 3581): over a stream, back on the same connection; over UDP, to the source
    /// address when the Via asks for `rport`, otherwise to the source IP at the Via's
    /// sent-by port. The shell may open a new connection to `addr` if `conn` has closed.
    pub fn reply_target(&self, top_via: &Via) -> Peer {
        if self.is_reliable() || top_via.rport().is_some() {
            return *self;
        }
        let port = top_via.port.unwrap_or(self.transport.default_port());
        Peer {
            addr: SocketAddr::new(self.addr.ip(), port),
            ..*self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::SipStr;

    fn via(s: &str) -> Via {
        let src = SipStr::from(s);
        Via::parse(&src, &src).unwrap()
    }

    #[test]
    fn replies_follow_rport_and_streams() {
        let udp = Peer::new(TransportKind::Udp, "192.0.2.7:40000".parse().unwrap());
        let to = udp.reply_target(&via("SIP/2.0/UDP 192.0.2.7:5062;branch=z9hG4bKa"));
        assert_eq!(to.addr, "192.0.2.7:5062".parse().unwrap());
        let to = udp.reply_target(&via("SIP/2.0/UDP phone.example;branch=z9hG4bKa"));
        assert_eq!(to.addr, "192.0.2.7:5060".parse().unwrap());
        let to = udp.reply_target(&via("SIP/2.0/UDP 10.0.0.2:5062;rport;branch=z9hG4bKa"));
        assert_eq!(to, udp);
        let tcp = Peer {
            conn: Some(9),
            ..Peer::new(TransportKind::Tcp, "192.0.2.7:40001".parse().unwrap())
        };
        assert_eq!(
            tcp.reply_target(&via("SIP/2.0/TCP 10.0.0.2:5062;branch=z9hG4bKa")),
            tcp
        );
    }
}
