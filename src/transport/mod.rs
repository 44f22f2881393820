//! The tokio shells around the sans-IO SIP stack: UDP and TCP listeners that turn bytes
//! into parsed messages for the SIP core, and a [`Hub`] the core sends through.
//!
//! What happens to every received message, on any transport:
//! - it is parsed where it arrived (the receive task), so parsing spreads over cores;
//! - a request gets `received` and `rport` on its top Via (RFC 3261 §18.2.1, RFC 3581
//!   forced for every request, as phones behind NAT need answers at their source port);
//! - a request that fails to parse is answered statelessly (400/505/...), a response that
//!   fails is dropped;
//! - the rest goes to the core shard that owns its Call-ID ([`Inbound`]).
//!
//! TLS and WebSocket join as more [`TransportKind`]s with their own listener modules;
//! the hub, framing and dispatch stay as they are.

mod tcp;
mod udp;

use crate::admin::Stats;
use crate::config::{Listen, Transport};
use crate::sip::Host;
use crate::sip::checks::error_response;
use crate::sip::dialog::SentBy;
use crate::sip::transaction::{Peer, TransportKind};
use crate::sip::{Known, Message, ParseError, Request, SipStr, Via};
use bytes::Bytes;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// A parsed message on its way to the SIP core.
#[derive(Debug)]
pub struct Inbound {
    pub message: Message,
    pub source: Peer,
}

/// Messages waiting per shard before the receive tasks start dropping (overload: SIP
/// retransmits, and dropping beats an unbounded queue).
const SHARD_QUEUE: usize = 8192;

/// Routes each message to the shard owning its Call-ID, so a call's state lives in one
/// task without a global lock.
#[derive(Clone)]
pub struct Dispatcher {
    shards: Arc<[mpsc::Sender<Inbound>]>,
}

impl Dispatcher {
    pub fn new(n: usize) -> (Dispatcher, Vec<mpsc::Receiver<Inbound>>) {
        let (txs, rxs): (Vec<_>, Vec<_>) =
            (0..n.max(1)).map(|_| mpsc::channel(SHARD_QUEUE)).unzip();
        (Dispatcher { shards: txs.into() }, rxs)
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The shard for a Call-ID. Call-IDs switchboard makes for its own B legs start with
    /// `sb<shard>-`, which pins them to the shard of the call they belong to.
    pub fn shard_of(&self, call_id: &str) -> usize {
        let n = self.shards.len();
        if let Some(rest) = call_id.strip_prefix("sb")
            && let Some((idx, _)) = rest.split_once('-')
            && let Ok(i) = idx.parse::<usize>()
            && i < n
        {
            return i;
        }
        // FNV-1a: cheap, and stable across runs.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in call_id.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
        (h % n as u64) as usize
    }

    fn dispatch(&self, inbound: Inbound) -> bool {
        let call_id = inbound
            .message
            .headers()
            .get(Known::CallId)
            .map(|c| c.as_str())
            .unwrap_or("");
        let shard = self.shard_of(call_id);
        self.shards[shard].try_send(inbound).is_ok()
    }
}

/// A stream connection's writer, found by connection id or by remote address.
struct Stream {
    remote: SocketAddr,
    kind: TransportKind,
    tx: mpsc::UnboundedSender<Bytes>,
}

/// Every listening socket and open connection; the core sends through it.
pub struct Hub {
    /// UDP sockets with whether each is IPv6 (looked up per send, so kept, not asked).
    udp: Vec<(Arc<UdpSocket>, bool)>,
    /// Every listener's bound address, for Via sent-by and Contact.
    listening: Vec<(TransportKind, SocketAddr)>,
    streams: Mutex<StreamTable>,
    next_conn: AtomicU64,
    pub stats: Arc<Stats>,
    trace: bool,
    dispatcher: Dispatcher,
}

#[derive(Default)]
struct StreamTable {
    by_id: HashMap<u64, Stream>,
    by_remote: HashMap<(TransportKind, SocketAddr), u64>,
}

impl Hub {
    /// Binds every configured listener; fails naming the listener that could not bind.
    pub async fn bind(
        listen: &[Listen],
        stats: Arc<Stats>,
        trace: bool,
        dispatcher: Dispatcher,
    ) -> Result<(Arc<Hub>, Vec<Listener>), String> {
        let mut udp = Vec::new();
        let mut listeners: Vec<Listener> = Vec::new();
        for (i, l) in listen.iter().enumerate() {
            let bound = match l.transport {
                Transport::Udp => udp::bind(l.addr).map(|s| {
                    let s = Arc::new(s);
                    udp.push((s.clone(), l.addr.is_ipv6()));
                    Listener::Udp(s)
                }),
                Transport::Tcp => tcp::bind(l.addr).map(Listener::Tcp),
            };
            listeners.push(bound.map_err(|e| format!("sip.listen[{i}] ({l}): {e}"))?);
        }
        let mut listening = Vec::new();
        for l in &listeners {
            let (t, addr) = l.local_addr().map_err(|e| e.to_string())?;
            listening.push((
                if t == Transport::Tcp {
                    TransportKind::Tcp
                } else {
                    TransportKind::Udp
                },
                addr,
            ));
        }
        let hub = Arc::new(Hub {
            udp,
            listening,
            streams: Mutex::new(StreamTable::default()),
            next_conn: AtomicU64::new(1),
            stats,
            trace,
            dispatcher,
        });
        Ok((hub, listeners))
    }

    /// Starts the receive tasks; they end when `shutdown` resolves.
    pub fn start(
        self: &Arc<Self>,
        listeners: Vec<Listener>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        for l in listeners {
            match l {
                Listener::Udp(s) => {
                    tokio::spawn(udp::receive_loop(self.clone(), s, shutdown.clone()));
                }
                Listener::Tcp(t) => {
                    tokio::spawn(tcp::accept_loop(self.clone(), t, shutdown.clone()));
                }
            }
        }
    }

    /// Sends without waiting: UDP datagrams go out at once (a full socket buffer drops
    /// the packet, which SIP retransmission covers); stream messages are queued on their
    /// connection, opening one if there is none to that peer.
    pub fn send(self: &Arc<Self>, dest: &Peer, bytes: Bytes) {
        self.stats.messages_out.inc();
        self.stats.bytes_out.add(bytes.len() as u64);
        if self.trace {
            trace_message("sent to", dest, &bytes);
        }
        match dest.transport {
            TransportKind::Udp => {
                let Some(sock) = self.udp_socket_for(dest.addr.ip()) else {
                    tracing::warn!(dest = %dest.addr, "no UDP listener for this address family");
                    return;
                };
                if let Err(e) = sock.try_send_to(&bytes, dest.addr) {
                    self.stats.dropped.inc();
                    tracing::debug!(dest = %dest.addr, error = %e, "UDP send failed");
                }
            }
            kind => {
                let found = {
                    let table = self.streams.lock().unwrap_or_else(|p| p.into_inner());
                    let id = dest
                        .conn
                        .filter(|id| table.by_id.contains_key(id))
                        .or_else(|| table.by_remote.get(&(kind, dest.addr)).copied());
                    id.and_then(|id| table.by_id.get(&id)).map(|s| s.tx.clone())
                };
                match found {
                    Some(tx) if tx.send(bytes.clone()).is_ok() => {}
                    _ if kind == TransportKind::Tcp => {
                        tokio::spawn(tcp::connect_and_send(self.clone(), dest.addr, bytes));
                    }
                    _ => tracing::warn!(dest = %dest.addr, ?kind, "no connection to send on"),
                }
            }
        }
    }

    /// Our address as `peer` sees it: the IP of the listener for its transport and
    /// family, or, for a wildcard listener, the source address the kernel routes
    /// towards the peer from.
    pub fn local_addr_for(&self, peer: &Peer) -> SocketAddr {
        let v6 = peer.addr.ip().to_canonical().is_ipv6();
        let listener = self
            .listening
            .iter()
            .find(|(t, a)| *t == peer.transport && a.is_ipv6() == v6)
            .or_else(|| self.listening.iter().find(|(t, _)| *t == peer.transport))
            .map(|(_, a)| *a);
        let port = listener.map_or(5060, |a| a.port());
        let ip = match listener.map(|a| a.ip()) {
            Some(ip) if !ip.is_unspecified() => ip,
            _ => route_source_ip(peer.addr.ip()),
        };
        SocketAddr::new(ip, port)
    }

    /// Our Via sent-by (and Contact host) for requests to `peer`.
    pub fn sent_by(&self, peer: &Peer) -> SentBy {
        let local = self.local_addr_for(peer);
        SentBy {
            transport: peer.transport,
            host: Host::Ip(local.ip()),
            port: Some(local.port()),
        }
    }

    /// The UDP socket to send from: the first listener of the destination's family.
    fn udp_socket_for(&self, ip: IpAddr) -> Option<&Arc<UdpSocket>> {
        let v6 = ip.to_canonical().is_ipv6();
        self.udp
            .iter()
            .find(|(_, is_v6)| *is_v6 == v6)
            .or_else(|| self.udp.first())
            .map(|(s, _)| s)
    }

    fn register_stream(
        &self,
        kind: TransportKind,
        remote: SocketAddr,
        tx: mpsc::UnboundedSender<Bytes>,
    ) -> u64 {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let mut table = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        table.by_id.insert(id, Stream { remote, kind, tx });
        table.by_remote.insert((kind, remote), id);
        id
    }

    fn unregister_stream(&self, id: u64) {
        let mut table = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = table.by_id.remove(&id)
            && table.by_remote.get(&(s.kind, s.remote)) == Some(&id)
        {
            table.by_remote.remove(&(s.kind, s.remote));
        }
    }

    /// Open stream connections (for leak checks and the admin API).
    pub fn stream_count(&self) -> usize {
        self.streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_id
            .len()
    }

    /// Parses what arrived and hands it on; answers or drops what doesn't parse.
    /// Returns false when the bytes were so broken the stream must close.
    fn on_message(self: &Arc<Self>, bytes: Bytes, source: Peer, stream: bool) {
        self.stats.messages_in.inc();
        self.stats.bytes_in.add(bytes.len() as u64);
        if self.trace {
            trace_message("received from", &source, &bytes);
        }
        let parsed = if stream {
            crate::sip::parse_framed(bytes)
        } else {
            crate::sip::parse_datagram(bytes)
        };
        match parsed {
            Ok(Message::Request(mut req)) => {
                stamp_via(&mut req, &source);
                if !self.dispatcher.dispatch(Inbound {
                    message: Message::Request(req),
                    source,
                }) {
                    self.stats.dropped.inc();
                }
            }
            Ok(msg @ Message::Response(_)) => {
                if !self.dispatcher.dispatch(Inbound {
                    message: msg,
                    source,
                }) {
                    self.stats.dropped.inc();
                }
            }
            Err(ParseError::Reject {
                status,
                reason,
                headers,
            }) => {
                self.stats.parse_errors.inc();
                tracing::debug!(peer = %source.addr, status, reason, "rejecting malformed request");
                // Without a Via there is no transaction to answer (RFC 3261 §8.2 needs it).
                if headers.contains(Known::Via) && headers.contains(Known::CSeq) {
                    let resp = error_response(&headers, status, reason);
                    self.send(&source, Bytes::from(resp.to_bytes()));
                }
            }
            Err(ParseError::Drop(reason)) => {
                self.stats.parse_errors.inc();
                self.stats.dropped.inc();
                tracing::debug!(peer = %source.addr, reason, "dropped unparsable message");
            }
        }
    }
}

/// A bound socket whose receive task has not started yet.
pub enum Listener {
    Udp(Arc<UdpSocket>),
    Tcp(tokio::net::TcpListener),
}

impl Listener {
    pub fn local_addr(&self) -> std::io::Result<(Transport, SocketAddr)> {
        match self {
            Listener::Udp(s) => Ok((Transport::Udp, s.local_addr()?)),
            Listener::Tcp(t) => Ok((Transport::Tcp, t.local_addr()?)),
        }
    }
}

/// The local address the kernel would send from towards `ip` (a connected UDP socket
/// sends nothing); loopback peers get loopback.
pub fn route_source_ip(ip: IpAddr) -> IpAddr {
    if ip.is_loopback() {
        return ip;
    }
    let bind = if ip.is_ipv6() {
        SocketAddr::from(([0u16; 8], 0))
    } else {
        SocketAddr::from(([0, 0, 0, 0], 0))
    };
    std::net::UdpSocket::bind(bind)
        .and_then(|s| {
            s.connect((ip, 9))?;
            s.local_addr()
        })
        .map_or(ip, |a| a.ip())
}

/// RFC 3261 §18.2.1 and RFC 3581: record where the request really came from in its
/// top Via, so responses and later requests find their way back through NAT.
fn stamp_via(req: &mut Request, source: &Peer) {
    let Some(top) = req.headers.list(Known::Via).next() else {
        return;
    };
    let Ok(mut via) = Via::parse(&top, &top) else {
        return;
    };
    via.params.set(
        "received",
        Some(SipStr::from(source.addr.ip().to_canonical().to_string())),
    );
    via.params
        .set("rport", Some(SipStr::from(source.addr.port().to_string())));
    req.headers.remove_first_element(Known::Via);
    req.headers.push_front(Known::Via, via.to_string());
}

/// `--sip-trace`: the whole message with its direction and peer.
fn trace_message(direction: &str, peer: &Peer, bytes: &[u8]) {
    tracing::info!(target: "sip_trace", "{direction} {:?} {}\n{}", peer.transport, peer.addr, String::from_utf8_lossy(bytes));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_call_ids_pin_their_shard_and_others_spread() {
        let (d, _rx) = Dispatcher::new(4);
        assert_eq!(d.shard_of("sb2-abcdef"), 2);
        assert_eq!(d.shard_of("sb3-x"), 3);
        let spread: std::collections::HashSet<usize> = (0..64)
            .map(|i| d.shard_of(&format!("call-{i}@host")))
            .collect();
        assert_eq!(spread.len(), 4);
        assert_eq!(d.shard_of("abc"), d.shard_of("abc"));
    }

    #[test]
    fn stamp_via_adds_received_and_rport() {
        let text = "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bK1;rport, SIP/2.0/UDP x\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n";
        let Ok(Message::Request(mut req)) = crate::sip::parse_datagram(Bytes::from(text)) else {
            panic!()
        };
        let src = Peer::new(TransportKind::Udp, "203.0.113.7:40000".parse().unwrap());
        stamp_via(&mut req, &src);
        let vias = req.vias().unwrap();
        assert_eq!(vias.len(), 2);
        assert_eq!(vias[0].received(), Some("203.0.113.7"));
        assert_eq!(vias[0].rport(), Some(Some(40000)));
        assert_eq!(vias[0].branch(), Some("z9hG4bK1"));
        assert_eq!(src.reply_target(&vias[0]).addr, src.addr);
    }
}
