//! The in-memory location service: every stored binding, indexed by AOR, with the
//! runtime facts the store does not keep (where to send, qualify results). It mirrors
//! the store; the registrar writes the store first and this index after.

use super::{PingKey, PingTarget, RegistrationInfo, Target};
use crate::sip::Uri;
use crate::sip::transaction::{Peer, TransportKind};
use crate::store::Binding;
use std::collections::HashMap;
use std::time::Duration;

/// One live binding.
pub(super) struct Entry {
    pub binding: Binding,
    /// `binding.contact` parsed: the Request-URI of requests to this contact.
    pub uri: Uri,
    /// Where requests to this contact go; see [`delivery_peer`].
    pub peer: Peer,
    qualify: Qualify,
}

/// Where requests for a registered contact go. Over a stream, back on the REGISTER's
/// connection. Over UDP, to the REGISTER's source address, unless the Contact names
/// the very IP the REGISTER came from: then no NAT rewrote anything, and the Contact's
/// port is where the phone listens (phones and test tools may send from another port).
/// A Contact on any other IP is never used, so behind NAT the reachable address wins
/// and nobody can point us at a third party.
pub(super) fn delivery_peer(
    contact: &Uri,
    transport: TransportKind,
    source: std::net::SocketAddr,
    conn: Option<u64>,
) -> Peer {
    let mut peer = Peer {
        transport,
        addr: source,
        conn,
    };
    if transport == TransportKind::Udp
        && let Some(sip) = contact.as_sip()
        && sip.host.ip().map(|ip| ip.to_canonical()) == Some(source.ip().to_canonical())
    {
        peer.addr.set_port(sip.port.unwrap_or(5060));
    }
    peer
}

/// Reachability from OPTIONS pings (UDP contacts only).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Qualify {
    next_at: u64,
    reachable: Option<bool>,
    rtt: Option<Duration>,
    /// Results of pings numbered below this are ignored: they were sent before a later
    /// result arrived, or to an address the binding no longer has.
    floor: u64,
}

impl Entry {
    /// `None` for a record that cannot be used (unknown transport, contact that does
    /// not parse); the caller logs it.
    fn new(binding: Binding, next_ping_at: u64, floor: u64) -> Option<Entry> {
        let uri = Uri::parse_str(&binding.contact).ok()?;
        let transport = transport_kind(&binding.transport)?;
        let peer = delivery_peer(&uri, transport, binding.source, binding.connection_id);
        Some(Entry {
            binding,
            uri,
            peer,
            qualify: Qualify {
                next_at: next_ping_at,
                floor,
                ..Qualify::default()
            },
        })
    }

    pub(super) fn is_live(&self, now: u64) -> bool {
        self.binding.expires_at_unix > now
    }
}

#[derive(Default)]
pub(super) struct Location {
    aors: HashMap<String, Vec<Entry>>,
    /// Numbers the pings handed out; see [`Qualify::floor`].
    pings_sent: u64,
}

impl Location {
    /// The index for bindings loaded at start. Their reachability is unknown, so they
    /// are pinged at once.
    pub(super) fn load(bindings: Vec<Binding>, now: u64) -> Location {
        let mut location = Location::default();
        for binding in bindings {
            let (aor, contact) = (binding.aor.clone(), binding.contact.clone());
            match Entry::new(binding, now, 0) {
                Some(entry) => location.aors.entry(aor).or_default().push(entry),
                None => {
                    tracing::warn!(%aor, %contact, "stored binding ignored: unusable contact or transport")
                }
            }
        }
        location
    }

    /// Adds or replaces a binding (same AOR and contact). A refresh from the same
    /// address keeps the qualify state; from a new one it starts over.
    pub(super) fn put(&mut self, binding: Binding, now: u64, qualify_interval: u64) {
        let floor = self.pings_sent + 1;
        let Some(mut new) = Entry::new(binding, now + qualify_interval, floor) else {
            return;
        };
        let entries = self.aors.entry(new.binding.aor.clone()).or_default();
        match entries
            .iter_mut()
            .find(|e| e.binding.contact == new.binding.contact)
        {
            Some(old) => {
                if old.peer == new.peer {
                    new.qualify = old.qualify;
                }
                *old = new;
            }
            None => entries.push(new),
        }
    }

    pub(super) fn remove(&mut self, aor: &str, contact: &str) {
        if let Some(entries) = self.aors.get_mut(aor) {
            entries.retain(|e| e.binding.contact != contact);
            if entries.is_empty() {
                self.aors.remove(aor);
            }
        }
    }

    /// Every binding of `aor`, expired ones included (the REGISTER logic needs them for
    /// its Call-ID/CSeq rules).
    pub(super) fn entries(&self, aor: &str) -> &[Entry] {
        self.aors.get(aor).map_or(&[], Vec::as_slice)
    }

    /// The live bindings of `aor` as call targets, highest q first, then the most
    /// recently refreshed.
    pub(super) fn targets(&self, aor: &str, now: u64) -> Vec<Target> {
        let mut live: Vec<&Entry> = self
            .entries(aor)
            .iter()
            .filter(|e| e.is_live(now))
            .collect();
        live.sort_by_key(|e| {
            (
                std::cmp::Reverse(e.binding.q_thousandths),
                std::cmp::Reverse(e.binding.expires_at_unix),
            )
        });
        live.into_iter()
            .map(|e| Target {
                contact: e.uri.clone(),
                peer: e.peer,
                q_thousandths: e.binding.q_thousandths,
                reachable: e.qualify.reachable,
            })
            .collect()
    }

    /// Every live binding for the admin listing, ordered by AOR then contact.
    pub(super) fn registrations(&self, now: u64) -> Vec<RegistrationInfo> {
        let mut out: Vec<RegistrationInfo> = self
            .aors
            .values()
            .flatten()
            .filter(|e| e.is_live(now))
            .map(|e| RegistrationInfo {
                aor: e.binding.aor.clone(),
                contact: e.binding.contact.clone(),
                source: e.binding.source,
                transport: e.binding.transport.clone(),
                expires_in: e.binding.expires_at_unix - now,
                q: f64::from(e.binding.q_thousandths) / 1000.0,
                user_agent: e.binding.user_agent.clone(),
                reachable: e.qualify.reachable,
                rtt_ms: e.qualify.rtt.map(|d| d.as_secs_f64() * 1000.0),
            })
            .collect();
        out.sort_by(|a, b| (&a.aor, &a.contact).cmp(&(&b.aor, &b.contact)));
        out
    }

    /// Drops bindings that expired at or before `now`; returns how many.
    pub(super) fn purge(&mut self, now: u64) -> usize {
        let mut removed = 0;
        self.aors.retain(|_, entries| {
            let before = entries.len();
            entries.retain(|e| e.is_live(now));
            removed += before - entries.len();
            !entries.is_empty()
        });
        removed
    }

    /// The UDP contacts whose next ping is due, each scheduled `interval` later.
    pub(super) fn due_pings(&mut self, now: u64, interval: u64) -> Vec<PingTarget> {
        let mut due = Vec::new();
        for entry in self.aors.values_mut().flatten() {
            if entry.peer.transport != TransportKind::Udp
                || !entry.is_live(now)
                || entry.qualify.next_at > now
            {
                continue;
            }
            self.pings_sent += 1;
            entry.qualify.next_at = now + interval;
            due.push(PingTarget {
                key: PingKey {
                    aor: entry.binding.aor.clone(),
                    contact: entry.binding.contact.clone(),
                    seq: self.pings_sent,
                },
                peer: entry.peer,
                request_uri: entry.uri.clone(),
            });
        }
        due
    }

    /// Records a ping's outcome: answered after `rtt`, or not answered (`None`).
    pub(super) fn ping_result(&mut self, key: &PingKey, rtt: Option<Duration>) {
        let Some(entry) = self.aors.get_mut(&key.aor).and_then(|entries| {
            entries
                .iter_mut()
                .find(|e| e.binding.contact == key.contact)
        }) else {
            return;
        };
        if key.seq < entry.qualify.floor {
            return;
        }
        entry.qualify.floor = key.seq + 1;
        entry.qualify.reachable = Some(rtt.is_some());
        entry.qualify.rtt = rtt;
    }
}

/// The transport names kept in [`Binding::transport`].
pub(super) fn transport_name(kind: TransportKind) -> &'static str {
    match kind {
        TransportKind::Udp => "UDP",
        TransportKind::Tcp => "TCP",
        TransportKind::Tls => "TLS",
        TransportKind::Ws => "WS",
        TransportKind::Wss => "WSS",
    }
}

fn transport_kind(name: &str) -> Option<TransportKind> {
    [
        TransportKind::Udp,
        TransportKind::Tcp,
        TransportKind::Tls,
        TransportKind::Ws,
        TransportKind::Wss,
    ]
    .into_iter()
    .find(|&k| transport_name(k) == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(contact: &str, transport: TransportKind, source: &str) -> Peer {
        delivery_peer(
            &Uri::parse_str(contact).unwrap(),
            transport,
            source.parse().unwrap(),
            Some(3),
        )
    }

    #[test]
    fn natted_contacts_are_reached_at_the_source() {
        let p = peer(
            "sip:1001@192.168.1.20:5060",
            TransportKind::Udp,
            "203.0.113.9:40111",
        );
        assert_eq!(p.addr, "203.0.113.9:40111".parse().unwrap());
    }

    #[test]
    fn a_contact_on_the_source_ip_keeps_its_port() {
        let p = peer(
            "sip:1001@127.0.0.1:5070",
            TransportKind::Udp,
            "127.0.0.1:40111",
        );
        assert_eq!(p.addr, "127.0.0.1:5070".parse().unwrap());
        let p = peer("sip:1001@127.0.0.1", TransportKind::Udp, "127.0.0.1:40111");
        assert_eq!(p.addr.port(), 5060);
    }

    #[test]
    fn streams_go_back_on_their_connection() {
        let p = peer(
            "sip:1001@127.0.0.1:5070;transport=tcp",
            TransportKind::Tcp,
            "127.0.0.1:40111",
        );
        assert_eq!((p.addr.port(), p.conn), (40111, Some(3)));
    }
}
