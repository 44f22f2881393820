//! String key/values for dialplans, in namespaces (one per script or feature) so
//! scripts cannot clobber each other's keys by accident. Values are stored as given:
//! they are already strings, so they are not JSON-encoded.

use super::{Store, StoreResult};
use redb::TableDefinition;

pub(super) const TABLE: TableDefinition<(&str, &str), &str> = TableDefinition::new("kv");

impl Store {
    pub fn kv_get(&self, namespace: &str, key: &str) -> StoreResult<Option<String>> {
        self.read(|txn| {
            let table = txn.open_table(TABLE)?;
            Ok(table.get((namespace, key))?.map(|v| v.value().to_owned()))
        })
    }

    pub fn kv_set(&self, namespace: &str, key: &str, value: &str) -> StoreResult<()> {
        self.write(|txn| {
            txn.open_table(TABLE)?.insert((namespace, key), value)?;
            Ok(())
        })
    }

    /// Deletes a key; `false` if it was not set.
    pub fn kv_delete(&self, namespace: &str, key: &str) -> StoreResult<bool> {
        self.write(|txn| Ok(txn.open_table(TABLE)?.remove((namespace, key))?.is_some()))
    }

    /// The namespace's (key, value) pairs, ordered by key.
    pub fn kv_list(&self, namespace: &str) -> StoreResult<Vec<(String, String)>> {
        self.read(|txn| {
            let table = txn.open_table(TABLE)?;
            let mut out = Vec::new();
            for row in table.range((namespace, "")..)? {
                let (key, value) = row?;
                let (ns, key) = key.value();
                if ns != namespace {
                    break;
                }
                out.push((key.to_owned(), value.value().to_owned()));
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tempfile::TempDir;

    #[test]
    fn namespaces_are_isolated() {
        let tmp = TempDir::new().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        store.kv_set("dnd", "1001", "on").unwrap();
        store.kv_set("dnd", "1002", "off").unwrap();
        store.kv_set("forward", "1001", "sip:1003@pbx").unwrap();
        // A namespace that is a prefix of another sees none of its keys.
        store.kv_set("dn", "1001", "x").unwrap();

        assert_eq!(store.kv_get("dnd", "1001").unwrap().as_deref(), Some("on"));
        assert_eq!(
            store.kv_get("forward", "1001").unwrap().as_deref(),
            Some("sip:1003@pbx")
        );
        assert_eq!(store.kv_get("forward", "1002").unwrap(), None);
        assert_eq!(
            store.kv_list("dnd").unwrap(),
            vec![("1001".into(), "on".into()), ("1002".into(), "off".into())]
        );
        assert_eq!(
            store.kv_list("dn").unwrap(),
            vec![("1001".into(), "x".into())]
        );

        store.kv_set("dnd", "1001", "off").unwrap();
        assert_eq!(store.kv_get("dnd", "1001").unwrap().as_deref(), Some("off"));
        assert!(store.kv_delete("dnd", "1001").unwrap());
        assert!(!store.kv_delete("dnd", "1001").unwrap());
        assert_eq!(store.kv_get("dnd", "1001").unwrap(), None);
        assert_eq!(
            store.kv_get("forward", "1001").unwrap().as_deref(),
            Some("sip:1003@pbx")
        );
    }

    #[test]
    fn values_survive_a_restart() {
        let tmp = TempDir::new().unwrap();
        Store::open(tmp.path())
            .unwrap()
            .kv_set("ns", "k", "v")
            .unwrap();
        let store = Store::open(tmp.path()).unwrap();
        assert_eq!(store.kv_get("ns", "k").unwrap().as_deref(), Some("v"));
    }
}
