//! Source addresses banned by the scanner and brute-force defence, keyed by IP.

use super::{Store, StoreError, StoreResult, decode, encode};
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

pub(super) const TABLE: TableDefinition<&str, &str> = TableDefinition::new("bans");
const NAME: &str = "bans";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ban {
    pub until_unix: u64,
    /// Why, for the admin listing: e.g. `"12 failed authentications"`.
    pub reason: String,
    pub banned_at_unix: u64,
}

/// The key for an address: canonical, so `::ffff:192.0.2.1` and `192.0.2.1` (the same
/// peer seen on a dual-stack socket) are one ban.
fn key(ip: IpAddr) -> String {
    ip.to_canonical().to_string()
}

impl Store {
    /// Bans `ip`, replacing an existing ban of it.
    pub fn put_ban(&self, ip: IpAddr, ban: &Ban) -> StoreResult<()> {
        let json = encode(NAME, ban)?;
        self.write(|txn| {
            txn.open_table(TABLE)?
                .insert(key(ip).as_str(), json.as_str())?;
            Ok(())
        })
    }

    /// Lifts the ban on `ip`; `false` if there was none.
    pub fn remove_ban(&self, ip: IpAddr) -> StoreResult<bool> {
        self.write(|txn| Ok(txn.open_table(TABLE)?.remove(key(ip).as_str())?.is_some()))
    }

    /// Every ban, expired ones included until purged, ordered by the address's text.
    pub fn bans(&self) -> StoreResult<Vec<(IpAddr, Ban)>> {
        self.read(|txn| {
            let table = txn.open_table(TABLE)?;
            let mut out = Vec::new();
            for row in table.iter()? {
                let (ip, ban) = row?;
                let ip = ip.value().parse().map_err(|_| StoreError::Corrupt {
                    table: NAME,
                    detail: format!("key {:?} is not an IP address", ip.value()),
                })?;
                out.push((ip, decode(NAME, ban.value())?));
            }
            Ok(out)
        })
    }

    /// Removes bans with `until_unix <= now_unix`; returns how many.
    pub fn purge_expired_bans(&self, now_unix: u64) -> StoreResult<usize> {
        self.write(|txn| {
            let mut removed = 0;
            txn.open_table(TABLE)?.retain(|_, json| {
                let expired =
                    serde_json::from_str::<Ban>(json).is_ok_and(|b| b.until_unix <= now_unix);
                removed += usize::from(expired);
                !expired
            })?;
            Ok(removed)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tempfile::TempDir;

    fn ban(until_unix: u64) -> Ban {
        Ban {
            until_unix,
            reason: "friendly-scanner".into(),
            banned_at_unix: 100,
        }
    }

    #[test]
    fn bans_round_trip_and_survive_a_restart() {
        let tmp = TempDir::new().unwrap();
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        {
            let store = Store::open(tmp.path()).unwrap();
            store.put_ban(v4, &ban(1000)).unwrap();
            store.put_ban(v6, &ban(2000)).unwrap();
            // The v4-mapped form of a banned address replaces, not adds.
            store
                .put_ban("::ffff:192.0.2.1".parse().unwrap(), &ban(3000))
                .unwrap();
        }
        let store = Store::open(tmp.path()).unwrap();
        assert_eq!(
            store.bans().unwrap(),
            vec![(v4, ban(3000)), (v6, ban(2000))]
        );
        assert!(store.remove_ban(v4).unwrap());
        assert!(!store.remove_ban(v4).unwrap());
        assert_eq!(store.bans().unwrap(), vec![(v6, ban(2000))]);
    }

    #[test]
    fn purge_removes_only_expired_bans() {
        let tmp = TempDir::new().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let ips: Vec<IpAddr> = ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        store.put_ban(ips[0], &ban(500)).unwrap();
        store.put_ban(ips[1], &ban(600)).unwrap();
        store.put_ban(ips[2], &ban(601)).unwrap();
        assert_eq!(store.purge_expired_bans(600).unwrap(), 2);
        assert_eq!(store.bans().unwrap(), vec![(ips[2], ban(601))]);
    }
}
