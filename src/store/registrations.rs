//! The location service's bindings (RFC 3261 §10), keyed by (AOR, contact URI) so one
//! AOR's contacts are adjacent and a re-REGISTER of the same contact replaces its row.

use super::{Store, StoreResult, decode, encode};
use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

pub(super) const TABLE: TableDefinition<(&str, &str), &str> = TableDefinition::new("registrations");
const NAME: &str = "registrations";

/// One contact registered for an AOR. Reachability and round-trip time are not here:
/// they are runtime facts of the qualify pinger and meaningless after a restart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// The address of record, e.g. the extension `"1001"`.
    pub aor: String,
    /// The Contact URI as the registrar canonicalized it; the binding's identity
    /// within its AOR.
    pub contact: String,
    pub expires_at_unix: u64,
    /// The contact's q-value in thousandths (`q=0.5` is 500; absent means 1000), exact
    /// because a qvalue has at most three decimals.
    pub q_thousandths: u16,
    pub call_id: String,
    pub cseq: u32,
    /// Where the REGISTER came from; requests to this contact go here (NAT).
    pub source: SocketAddr,
    /// The transport it arrived on: `"UDP"`, `"TCP"`, `"TLS"`, `"WS"`, `"WSS"`.
    pub transport: String,
    /// The connection-oriented transport's connection, while it lasts. Cleared by
    /// [`Store::open`], since a restart closed every connection.
    #[serde(default)]
    pub connection_id: Option<u64>,
    #[serde(default)]
    pub user_agent: Option<String>,
    pub registered_at_unix: u64,
}

impl Store {
    /// Inserts the binding, replacing one with the same AOR and contact.
    pub fn put_binding(&self, binding: &Binding) -> StoreResult<()> {
        let json = encode(NAME, binding)?;
        self.write(|txn| {
            txn.open_table(TABLE)?.insert(
                (binding.aor.as_str(), binding.contact.as_str()),
                json.as_str(),
            )?;
            Ok(())
        })
    }

    /// Removes one binding; `false` if there was none.
    pub fn remove_binding(&self, aor: &str, contact: &str) -> StoreResult<bool> {
        self.write(|txn| Ok(txn.open_table(TABLE)?.remove((aor, contact))?.is_some()))
    }

    /// Removes every binding of `aor` (`Contact: *`, Expires 0); returns how many.
    pub fn remove_all(&self, aor: &str) -> StoreResult<usize> {
        self.write(|txn| {
            let mut table = txn.open_table(TABLE)?;
            let mut contacts = Vec::new();
            for row in table.range((aor, "")..)? {
                let (key, _) = row?;
                let (row_aor, contact) = key.value();
                if row_aor != aor {
                    break;
                }
                contacts.push(contact.to_owned());
            }
            for contact in &contacts {
                table.remove((aor, contact.as_str()))?;
            }
            Ok(contacts.len())
        })
    }

    /// The bindings of `aor`, expired ones included until purged (callers compare
    /// `expires_at_unix` with their clock), ordered by contact.
    pub fn bindings(&self, aor: &str) -> StoreResult<Vec<Binding>> {
        self.read(|txn| {
            let table = txn.open_table(TABLE)?;
            let mut out = Vec::new();
            for row in table.range((aor, "")..)? {
                let (key, value) = row?;
                if key.value().0 != aor {
                    break;
                }
                out.push(decode(NAME, value.value())?);
            }
            Ok(out)
        })
    }

    /// Every binding, ordered by AOR then contact.
    pub fn all_bindings(&self) -> StoreResult<Vec<Binding>> {
        self.read(|txn| {
            let table = txn.open_table(TABLE)?;
            let mut out = Vec::new();
            for row in table.iter()? {
                let (_, value) = row?;
                out.push(decode(NAME, value.value())?);
            }
            Ok(out)
        })
    }

    /// Removes bindings with `expires_at_unix <= now_unix`; returns how many. A row that
    /// does not decode is kept (and reported by the readers) rather than deleted blind.
    pub fn purge_expired_bindings(&self, now_unix: u64) -> StoreResult<usize> {
        self.write(|txn| {
            let mut removed = 0;
            txn.open_table(TABLE)?.retain(|_, json| {
                let expired = serde_json::from_str::<Binding>(json)
                    .is_ok_and(|b| b.expires_at_unix <= now_unix);
                removed += usize::from(expired);
                !expired
            })?;
            Ok(removed)
        })
    }
}

/// Clears every binding's connection id; part of [`Store::open`].
pub(super) fn forget_connections(txn: &WriteTransaction) -> StoreResult<()> {
    let mut table = txn.open_table(TABLE)?;
    let mut updates = Vec::new();
    for row in table.iter()? {
        let (key, value) = row?;
        let mut binding: Binding = decode(NAME, value.value())?;
        if binding.connection_id.take().is_some() {
            let (aor, contact) = key.value();
            updates.push(((aor.to_owned(), contact.to_owned()), binding));
        }
    }
    for ((aor, contact), binding) in updates {
        table.insert(
            (aor.as_str(), contact.as_str()),
            encode(NAME, &binding)?.as_str(),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tempfile::TempDir;

    fn binding(aor: &str, contact: &str, expires_at_unix: u64) -> Binding {
        Binding {
            aor: aor.into(),
            contact: contact.into(),
            expires_at_unix,
            q_thousandths: 500,
            call_id: "a84b4c76e66710".into(),
            cseq: 314159,
            source: "192.0.2.10:5060".parse().unwrap(),
            transport: "TCP".into(),
            connection_id: Some(7),
            user_agent: Some("Yealink T46".into()),
            registered_at_unix: 50,
        }
    }

    #[test]
    fn bindings_round_trip_per_aor() {
        let tmp = TempDir::new().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let a1 = binding("1001", "sip:1001@10.0.0.2:5060", 5000);
        let a2 = binding("1001", "sip:1001@10.0.0.3:5060", 5000);
        // "10010" sorts right after "1001"'s rows and must not leak into them.
        let b = binding("10010", "sip:10010@10.0.0.4", 5000);
        for x in [&a1, &a2, &b] {
            store.put_binding(x).unwrap();
        }
        assert_eq!(
            store.bindings("1001").unwrap(),
            vec![a1.clone(), a2.clone()]
        );
        assert_eq!(store.bindings("100").unwrap(), vec![]);
        assert_eq!(
            store.all_bindings().unwrap(),
            vec![a1.clone(), a2.clone(), b.clone()]
        );

        // Re-registering the same contact replaces it.
        let refreshed = Binding {
            cseq: 314160,
            expires_at_unix: 9000,
            ..a1.clone()
        };
        store.put_binding(&refreshed).unwrap();
        assert_eq!(store.bindings("1001").unwrap(), vec![refreshed, a2.clone()]);

        assert!(store.remove_binding("1001", &a1.contact).unwrap());
        assert!(!store.remove_binding("1001", &a1.contact).unwrap());
        assert_eq!(store.bindings("1001").unwrap(), vec![a2]);
        store.put_binding(&a1).unwrap();
        assert_eq!(store.remove_all("1001").unwrap(), 2);
        assert_eq!(store.all_bindings().unwrap(), vec![b]);
    }

    #[test]
    fn bindings_survive_a_restart_without_their_connections() {
        let tmp = TempDir::new().unwrap();
        let tcp = binding("1001", "sip:1001@10.0.0.2;transport=tcp", 5000);
        let udp = Binding {
            connection_id: None,
            transport: "UDP".into(),
            ..binding("1002", "sip:1002@10.0.0.5", 6000)
        };
        {
            let store = Store::open(tmp.path()).unwrap();
            store.put_binding(&tcp).unwrap();
            store.put_binding(&udp).unwrap();
        }
        let store = Store::open(tmp.path()).unwrap();
        let tcp_after = Binding {
            connection_id: None,
            ..tcp
        };
        assert_eq!(store.all_bindings().unwrap(), vec![tcp_after, udp]);
    }

    #[test]
    fn purge_removes_only_expired() {
        let tmp = TempDir::new().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let gone = binding("1001", "sip:a", 100);
        let due_now = binding("1001", "sip:b", 200);
        let live = binding("1001", "sip:c", 201);
        let other_live = binding("1002", "sip:d", 1000);
        for x in [&gone, &due_now, &live, &other_live] {
            store.put_binding(x).unwrap();
        }
        assert_eq!(store.purge_expired_bindings(200).unwrap(), 2);
        assert_eq!(store.all_bindings().unwrap(), vec![live, other_live]);
        assert_eq!(store.purge_expired_bindings(200).unwrap(), 0);
    }
}
