//! The on-disk store: one redb file, `<storage dir>/switchboard.redb`, holding
//! registrations, bans, dialplan key/values and CDRs.
//!
//! Each table has a typed API in its own file. Record values are JSON (serde_json):
//! records are small and written a few times a second at most, so size and speed do
//! not matter, while JSON lets a later version add a field with `#[serde(default)]`
//! without a migration and keeps the file inspectable. Keys are plain redb types so
//! they sort and range properly. A `meta` table holds the schema version so an older
//! switchboard refuses a newer file instead of misreading it.
//!
//! Every write is its own transaction, committed with redb's default
//! [`redb::Durability::Immediate`] (fsync before `commit` returns), so what a call
//! returned `Ok` for survives a crash. Calls block for at most an fsync; async callers
//! may call them directly for single records and should use
//! `tokio::task::spawn_blocking` for bulk work (listing every CDR, purges of many rows).

mod bans;
mod cdrs;
mod kv;
mod registrations;

pub use bans::Ban;
pub use cdrs::{CallMedia, Cdr, Disposition, HangupBy, cdrs_to_csv};
pub use registrations::Binding;

use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// The file name inside the configured storage directory.
pub const FILE_NAME: &str = "switchboard.redb";

/// The schema this build reads and writes. Bump it, and add a step to
/// [`Store::migrate`], when a key layout or a record's meaning changes (adding an
/// optional field does not need it).
pub const SCHEMA_VERSION: u64 = 1;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SCHEMA_KEY: &str = "schema_version";

/// Why a store operation failed. Nothing in this module panics on file contents.
#[derive(Debug)]
pub enum StoreError {
    /// Creating the storage directory failed.
    Io(std::io::Error),
    /// redb failed: the file is locked by another process, corrupted, or a disk error.
    /// After a failed commit redb refuses further writes until the store is reopened.
    Db(Box<redb::Error>),
    /// A record that does not decode, or a key that does not parse.
    Corrupt { table: &'static str, detail: String },
    /// The file was written by a newer switchboard.
    SchemaTooNew { found: u64, supported: u64 },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "storage directory: {e}"),
            Self::Db(e) => write!(f, "database: {e}"),
            Self::Corrupt { table, detail } => write!(f, "corrupt record in {table}: {detail}"),
            Self::SchemaTooNew { found, supported } => write!(
                f,
                "database schema version {found} is newer than this build supports ({supported})"
            ),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            Self::Db(e) => Some(e),
            Self::Corrupt { .. } | Self::SchemaTooNew { .. } => None,
        }
    }
}

/// redb has one error type per operation; they all convert into `redb::Error`.
macro_rules! from_redb_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(Box::new(e.into()))
            }
        }
    )*};
}
from_redb_errors!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

pub type StoreResult<T> = Result<T, StoreError>;

/// A handle to the open database. Cheap to clone, `Send + Sync`; the file is closed
/// when the last clone is dropped.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    kv_cache: Arc<kv::KvCache>,
}

impl Store {
    /// Opens (creating if needed) `<dir>/switchboard.redb`, creating `dir` too.
    ///
    /// The file's integrity is checked on every open (a full read; the store is small),
    /// so a damaged file is an error rather than a panic inside redb. Fails if another
    /// process has the file open. Connection ids in bindings are cleared: they name
    /// connections of the previous process, which closed with it.
    pub fn open(dir: &Path) -> StoreResult<Store> {
        std::fs::create_dir_all(dir).map_err(StoreError::Io)?;
        let db = Database::builder()
            .set_check_integrity_on_open(true)
            .create(dir.join(FILE_NAME))?;
        let store = Store {
            db: Arc::new(db),
            kv_cache: Arc::default(),
        };
        store.write(|txn| {
            Self::migrate(txn)?;
            registrations::forget_connections(txn)
        })?;
        Ok(store)
    }

    /// Brings the file to [`SCHEMA_VERSION`], creating every table on a new file so
    /// readers never meet a missing one.
    fn migrate(txn: &WriteTransaction) -> StoreResult<()> {
        let mut meta = txn.open_table(META)?;
        let found = meta.get(SCHEMA_KEY)?.map(|v| v.value());
        match found {
            Some(found) if found > SCHEMA_VERSION => {
                return Err(StoreError::SchemaTooNew {
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
            // Version 1 is the first; later versions add their upgrade steps here.
            Some(_) => {}
            None => {
                meta.insert(SCHEMA_KEY, SCHEMA_VERSION)?;
            }
        }
        txn.open_table(registrations::TABLE)?;
        txn.open_table(bans::TABLE)?;
        txn.open_table(kv::TABLE)?;
        txn.open_table(cdrs::TABLE)?;
        Ok(())
    }

    /// Runs `f` in one write transaction and commits it if `f` succeeds; on error the
    /// transaction is dropped, which aborts it.
    fn write<T>(&self, f: impl FnOnce(&WriteTransaction) -> StoreResult<T>) -> StoreResult<T> {
        let txn = self.db.begin_write()?;
        let out = f(&txn)?;
        txn.commit()?;
        Ok(out)
    }

    fn read<T>(&self, f: impl FnOnce(&ReadTransaction) -> StoreResult<T>) -> StoreResult<T> {
        f(&self.db.begin_read()?)
    }
}

fn encode<T: Serialize>(table: &'static str, record: &T) -> StoreResult<String> {
    serde_json::to_string(record).map_err(|e| StoreError::Corrupt {
        table,
        detail: e.to_string(),
    })
}

fn decode<T: DeserializeOwned>(table: &'static str, json: &str) -> StoreResult<T> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt {
        table,
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tempfile::TempDir;

    #[test]
    fn store_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Store>();
    }

    #[test]
    fn open_creates_the_directory_and_file() {
        let tmp = TempDir::new().unwrap();
        let dir = tmp.path().join("nested/storage");
        Store::open(&dir).unwrap();
        assert!(dir.join(FILE_NAME).is_file());
    }

    #[test]
    fn second_open_while_open_is_an_error() {
        let tmp = TempDir::new().unwrap();
        let _first = Store::open(tmp.path()).unwrap();
        assert!(matches!(Store::open(tmp.path()), Err(StoreError::Db(_))));
    }

    #[test]
    fn newer_schema_is_refused() {
        let tmp = TempDir::new().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        store
            .write(|txn| {
                txn.open_table(META)?
                    .insert(SCHEMA_KEY, SCHEMA_VERSION + 1)?;
                Ok(())
            })
            .unwrap();
        drop(store);
        assert!(matches!(
            Store::open(tmp.path()),
            Err(StoreError::SchemaTooNew { found, supported: SCHEMA_VERSION }) if found == SCHEMA_VERSION + 1
        ));
    }

    #[test]
    fn garbage_file_is_an_error_not_a_panic() {
        let tmp = TempDir::new().unwrap();
        std::fs::write(tmp.path().join(FILE_NAME), vec![0x5a; 10_000]).unwrap();
        assert!(Store::open(tmp.path()).is_err());
    }
}
