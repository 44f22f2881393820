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
    /// Writes bans and lifts others in one transaction (one fsync), so the ban writer
    /// can persist a burst of bans at the cost of one. `put` replaces a ban of the same
    /// address; lifting an address that has no ban is not an error.
    pub fn update_bans(&self, put: &[(IpAddr, Ban)], lift: &[IpAddr]) -> StoreResult<()> {
        let put = put
            .iter()
            .map(|(ip, ban)| Ok((key(*ip), encode(NAME, ban)?)))
            .collect::<StoreResult<Vec<_>>>()?;
        self.write(|txn| {
            let mut table = txn.open_table(TABLE)?;
            for (ip, json) in &put {
                table.insert(ip.as_str(), json.as_str())?;
            }
            for ip in lift {
                table.remove(key(*ip).as_str())?;
            }
            Ok(())
        })
    }

    /// Every ban, expired ones included until lifted, ordered by the address's text.
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
            store
                .update_bans(&[(v4, ban(1000)), (v6, ban(2000))], &[])
                .unwrap();
            // The v4-mapped form of a banned address replaces, not adds.
            let mapped = "::ffff:192.0.2.1".parse().unwrap();
            store.update_bans(&[(mapped, ban(3000))], &[]).unwrap();
        }
        let store = Store::open(tmp.path()).unwrap();
        assert_eq!(
            store.bans().unwrap(),
            vec![(v4, ban(3000)), (v6, ban(2000))]
        );
        // Lifting in the same transaction as a put; an unknown address is no error.
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        store
            .update_bans(&[(other, ban(4000))], &[v4, "192.0.2.99".parse().unwrap()])
            .unwrap();
        assert_eq!(
            store.bans().unwrap(),
            vec![(other, ban(4000)), (v6, ban(2000))]
        );
    }
}
