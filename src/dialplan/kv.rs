//! The dialplan's key-value store (`kv.get/set/delete/list`): feature codes keep call
//! forwarding and do-not-disturb here. Behind a trait so the server uses redb and the
//! test harness an in-memory map.

use super::sandbox::{script_error, with_scope};
use crate::store::{Store, StoreResult};
use mlua::{Lua, Table, Value};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Namespaced string keys and values. Calls block for at most one small write (an
/// fsync for redb); the engine caps how many writes one call may do.
pub trait KvStore: Send + Sync {
    fn get(&self, namespace: &str, key: &str) -> StoreResult<Option<String>>;
    fn set(&self, namespace: &str, key: &str, value: &str) -> StoreResult<()>;
    /// `false` if the key was not set.
    fn delete(&self, namespace: &str, key: &str) -> StoreResult<bool>;
    /// The namespace's pairs ordered by key.
    fn list(&self, namespace: &str) -> StoreResult<Vec<(String, String)>>;
}

impl KvStore for Store {
    fn get(&self, namespace: &str, key: &str) -> StoreResult<Option<String>> {
        self.kv_get(namespace, key)
    }

    fn set(&self, namespace: &str, key: &str, value: &str) -> StoreResult<()> {
        self.kv_set(namespace, key, value)
    }

    fn delete(&self, namespace: &str, key: &str) -> StoreResult<bool> {
        self.kv_delete(namespace, key)
    }

    fn list(&self, namespace: &str) -> StoreResult<Vec<(String, String)>> {
        self.kv_list(namespace)
    }
}

/// A store that lives as long as the process: for tests, checks and benchmarks.
#[derive(Debug, Default)]
pub struct MemoryKv {
    map: Mutex<BTreeMap<(String, String), String>>,
}

impl MemoryKv {
    /// Every (namespace, key, value), ordered.
    pub fn entries(&self) -> Vec<(String, String, String)> {
        self.lock()
            .iter()
            .map(|((ns, k), v)| (ns.clone(), k.clone(), v.clone()))
            .collect()
    }

    /// A poisoned lock only means another test thread panicked; the map is still sound.
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), String>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl KvStore for MemoryKv {
    fn get(&self, namespace: &str, key: &str) -> StoreResult<Option<String>> {
        Ok(self.lock().get(&(namespace.into(), key.into())).cloned())
    }

    fn set(&self, namespace: &str, key: &str, value: &str) -> StoreResult<()> {
        self.lock()
            .insert((namespace.into(), key.into()), value.into());
        Ok(())
    }

    fn delete(&self, namespace: &str, key: &str) -> StoreResult<bool> {
        Ok(self
            .lock()
            .remove(&(namespace.into(), key.into()))
            .is_some())
    }

    fn list(&self, namespace: &str) -> StoreResult<Vec<(String, String)>> {
        Ok(self
            .lock()
            .iter()
            .filter(|((ns, _), _)| ns == namespace)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }
}

/// Longest namespace or key a script may use, and longest value: enough for numbers and
/// URIs, small enough that a script cannot fill the disk through one call.
const MAX_NAME: usize = 128;
const MAX_VALUE: usize = 2048;

/// The `kv` library table.
pub(crate) fn library(lua: &Lua) -> mlua::Result<Table> {
    let kv = lua.create_table()?;
    kv.set("get", lua.create_function(get)?)?;
    kv.set("set", lua.create_function(set)?)?;
    kv.set("delete", lua.create_function(delete)?)?;
    kv.set("list", lua.create_function(list)?)?;
    Ok(kv)
}

fn get(lua: &Lua, (ns, key): (Value, Value)) -> mlua::Result<Option<String>> {
    let (ns, key) = (name(lua, "kv.get", 1, ns)?, name(lua, "kv.get", 2, key)?);
    let store = with_scope(lua, |s| Ok(s.services.kv.clone()))?;
    store
        .get(&ns, &key)
        .map_err(|e| script_error(lua, format!("kv.get: {e}")))
}

fn set(lua: &Lua, (ns, key, value): (Value, Value, Value)) -> mlua::Result<()> {
    let (ns, key) = (name(lua, "kv.set", 1, ns)?, name(lua, "kv.set", 2, key)?);
    let value = match value {
        Value::String(s) => s.to_str()?.to_owned(),
        Value::Integer(i) => i.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Boolean(b) => b.to_string(),
        other => {
            return Err(script_error(
                lua,
                format!(
                    "kv.set: the value must be a string, number or boolean, not {} (use kv.delete to remove a key)",
                    other.type_name()
                ),
            ));
        }
    };
    if value.len() > MAX_VALUE {
        return Err(script_error(
            lua,
            format!("kv.set: values are limited to {MAX_VALUE} bytes"),
        ));
    }
    let store = count_write(lua, "kv.set")?;
    store
        .set(&ns, &key, &value)
        .map_err(|e| script_error(lua, format!("kv.set: {e}")))
}

fn delete(lua: &Lua, (ns, key): (Value, Value)) -> mlua::Result<bool> {
    let (ns, key) = (
        name(lua, "kv.delete", 1, ns)?,
        name(lua, "kv.delete", 2, key)?,
    );
    let store = count_write(lua, "kv.delete")?;
    store
        .delete(&ns, &key)
        .map_err(|e| script_error(lua, format!("kv.delete: {e}")))
}

fn list(lua: &Lua, ns: Value) -> mlua::Result<Table> {
    let ns = name(lua, "kv.list", 1, ns)?;
    let store = with_scope(lua, |s| Ok(s.services.kv.clone()))?;
    let pairs = store
        .list(&ns)
        .map_err(|e| script_error(lua, format!("kv.list: {e}")))?;
    lua.create_table_from(pairs)
}

/// Counts a write against the call's limit and hands out the store.
fn count_write(lua: &Lua, what: &str) -> mlua::Result<std::sync::Arc<dyn KvStore>> {
    let allowed = with_scope(lua, |s| {
        s.kv_writes += 1;
        Ok((s.kv_writes <= s.services.limits.kv_writes).then(|| s.services.kv.clone()))
    })?;
    allowed.ok_or_else(|| script_error(lua, format!("{what}: too many writes in one call")))
}

/// A namespace or key: a non-empty string (numbers are accepted and converted, so
/// `kv.get("dnd", 1001)` works) of bounded length.
fn name(lua: &Lua, func: &str, arg: usize, v: Value) -> mlua::Result<String> {
    let text = match v {
        Value::String(s) => s.to_str()?.to_owned(),
        Value::Integer(i) => i.to_string(),
        other => {
            return Err(script_error(
                lua,
                format!(
                    "{func}: argument {arg} must be a string, not {}",
                    other.type_name()
                ),
            ));
        }
    };
    if text.is_empty() || text.len() > MAX_NAME {
        return Err(script_error(
            lua,
            format!("{func}: argument {arg} must be 1 to {MAX_NAME} bytes long"),
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_kv_keeps_namespaces_apart() {
        let kv = MemoryKv::default();
        kv.set("dnd", "1001", "on").unwrap();
        kv.set("dn", "1001", "x").unwrap();
        kv.set("dnd", "1000", "on").unwrap();
        assert_eq!(kv.get("dnd", "1001").unwrap().as_deref(), Some("on"));
        assert_eq!(
            kv.list("dnd").unwrap(),
            vec![("1000".into(), "on".into()), ("1001".into(), "on".into())]
        );
        assert!(kv.delete("dnd", "1001").unwrap());
        assert!(!kv.delete("dnd", "1001").unwrap());
        assert_eq!(kv.get("dn", "1001").unwrap().as_deref(), Some("x"));
    }
}
