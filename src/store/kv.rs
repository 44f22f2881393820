//! String key/values for dialplans, in namespaces (one per script or feature) so
//! scripts cannot clobber each other's keys by accident. Values are stored as given:
//! they are already strings, so they are not JSON-encoded.

use super::{Store, StoreResult};
use redb::TableDefinition;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

pub(super) const TABLE: TableDefinition<(&str, &str), &str> = TableDefinition::new("kv");

/// Values (and absences) read recently. Dialplans read the same few keys on every call
/// (an extension's do-not-disturb and forwards), and a read transaction costs more than
/// the rest of a lookup. Every write goes through [`Store`], which drops the key's entry
/// after writing, so the cache never answers with a value older than the last write.
#[derive(Default)]
pub(super) struct KvCache {
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    /// Bumped by every write, so a read that overlapped one does not cache what it read.
    generation: u64,
    /// Namespace, then key (nested so a lookup borrows instead of allocating).
    entries: HashMap<String, HashMap<String, Option<String>>>,
    len: usize,
}

/// Entries kept at most; beyond that the cache starts over. Far more than an office's
/// extensions times its settings.
const CACHE_MAX: usize = 4096;

enum Cached {
    Hit(Option<String>),
    /// Not cached; pass the generation to [`KvCache::fill`].
    Miss(u64),
}

impl KvCache {
    fn lock(&self) -> MutexGuard<'_, CacheInner> {
        // Every change leaves the maps consistent, so a panicking holder harmed nothing.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lookup(&self, namespace: &str, key: &str) -> Cached {
        let inner = self.lock();
        match inner.entries.get(namespace).and_then(|keys| keys.get(key)) {
            Some(value) => Cached::Hit(value.clone()),
            None => Cached::Miss(inner.generation),
        }
    }

    /// Caches what a read that started at `generation` found, unless a write came since.
    fn fill(&self, generation: u64, namespace: &str, key: &str, value: &Option<String>) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        if inner.len >= CACHE_MAX {
            inner.entries.clear();
            inner.len = 0;
        }
        let keys = inner.entries.entry(namespace.to_owned()).or_default();
        if keys.insert(key.to_owned(), value.clone()).is_none() {
            inner.len += 1;
        }
    }

    /// Forgets a key being written, whether or not the write succeeded.
    fn invalidate(&self, namespace: &str, key: &str) {
        let mut inner = self.lock();
        inner.generation += 1;
        if let Some(keys) = inner.entries.get_mut(namespace)
            && keys.remove(key).is_some()
        {
            inner.len -= 1;
        }
    }
}

impl Store {
    pub fn kv_get(&self, namespace: &str, key: &str) -> StoreResult<Option<String>> {
        let generation = match self.kv_cache.lookup(namespace, key) {
            Cached::Hit(value) => return Ok(value),
            Cached::Miss(generation) => generation,
        };
        let value = self.read(|txn| {
            let table = txn.open_table(TABLE)?;
            Ok(table.get((namespace, key))?.map(|v| v.value().to_owned()))
        })?;
        self.kv_cache.fill(generation, namespace, key, &value);
        Ok(value)
    }

    pub fn kv_set(&self, namespace: &str, key: &str, value: &str) -> StoreResult<()> {
        let result = self.write(|txn| {
            txn.open_table(TABLE)?.insert((namespace, key), value)?;
            Ok(())
        });
        self.kv_cache.invalidate(namespace, key);
        result
    }

    /// Deletes a key; `false` if it was not set.
    pub fn kv_delete(&self, namespace: &str, key: &str) -> StoreResult<bool> {
        let result =
            self.write(|txn| Ok(txn.open_table(TABLE)?.remove((namespace, key))?.is_some()));
        self.kv_cache.invalidate(namespace, key);
        result
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

    #[test]
    fn cached_reads_follow_every_write_through_any_clone() {
        let tmp = TempDir::new().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let other = store.clone();
        // Cache an absence and a value, then change both through the other handle.
        assert_eq!(store.kv_get("dnd", "1001").unwrap(), None);
        other.kv_set("fwd", "1001", "1002").unwrap();
        assert_eq!(
            store.kv_get("fwd", "1001").unwrap().as_deref(),
            Some("1002")
        );
        other.kv_set("dnd", "1001", "on").unwrap();
        other.kv_set("fwd", "1001", "1003").unwrap();
        assert_eq!(store.kv_get("dnd", "1001").unwrap().as_deref(), Some("on"));
        assert_eq!(
            store.kv_get("fwd", "1001").unwrap().as_deref(),
            Some("1003")
        );
        other.kv_delete("dnd", "1001").unwrap();
        assert_eq!(store.kv_get("dnd", "1001").unwrap(), None);
    }

    #[test]
    fn a_read_overlapping_a_write_is_not_cached() {
        let cache = KvCache::default();
        let Cached::Miss(generation) = cache.lookup("dnd", "1001") else {
            panic!("empty cache")
        };
        // The read found the old value, but a write committed before it could cache it.
        cache.invalidate("dnd", "1001");
        cache.fill(generation, "dnd", "1001", &None);
        assert!(matches!(cache.lookup("dnd", "1001"), Cached::Miss(_)));
        let Cached::Miss(generation) = cache.lookup("dnd", "1001") else {
            panic!("not cached")
        };
        cache.fill(generation, "dnd", "1001", &Some("on".into()));
        assert!(matches!(cache.lookup("dnd", "1001"), Cached::Hit(Some(v)) if v == "on"));
    }
}
