//! Lua dialplans: every incoming call is decided by `route(call)` in the dialplan
//! folder's `default.lua` (the script-facing API is
//! documented in `dialplans/README.md`).
//!
//! - [`Dialplan::load`] compiles a folder once; [`DialplanHandle`] holds the current
//!   version, reloads it on file changes or `switchboard reload`, and keeps the old one
//!   when the new one does not load.
//! - [`Dialplan::run`] runs the script for one call in its own sandboxed Lua 5.4 state
//!   with an instruction budget and a memory limit, performing the script's operations
//!   through the B2BUA's [`CallControl`].
//! - [`harness`] runs the tests in `dialplans/tests/` against simulated calls.
//!
//! The B2BUA's side, per call:
//! ```ignore
//! let outcome = dialplans.route(&mut call).await;   // call: impl CallControl
//! ```

mod api;
mod bytecode;
pub mod call;
mod error;
pub mod harness;
mod kv;
mod load;
mod reload;
mod run;
mod sandbox;
mod say;
#[cfg(test)]
mod tests;
mod time;

pub use call::{
    CallControl, CallError, CallInfo, CallerId, DialRequest, DialResult, DialStatus, DialTarget,
    Party, Strategy,
};
pub use error::DialplanError;
pub use kv::{KvStore, MemoryKv};
pub use load::{Dialplan, ENTRY_FILE, Fingerprint};
pub use reload::{DialplanHandle, ReloadInfo, admin_routes};
pub use time::{Clock, ManualClock, SystemClock};

use jiff::tz::TimeZone;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// What a call's script can reach besides the call: the key-value store, the clock and
/// time zone for office hours, where recordings go, and its limits. Cheap to clone.
#[derive(Clone)]
pub struct Services {
    pub kv: Arc<dyn KvStore>,
    pub clock: Arc<dyn Clock>,
    /// The zone `time.*` uses when a script names none.
    pub zone: TimeZone,
    /// The folder `call:record` and `call:record_call` files go under (the server's is
    /// `<storage.dir>/recordings`); `None` refuses them with a script error.
    pub recordings: Option<PathBuf>,
    pub limits: Limits,
}

impl Services {
    /// The server's: `kv`, the system clock and time zone, default limits.
    pub fn new(kv: Arc<dyn KvStore>) -> Services {
        Services {
            kv,
            clock: Arc::new(SystemClock),
            zone: TimeZone::system(),
            recordings: None,
            limits: Limits::default(),
        }
    }

    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Services {
        Services { clock, ..self }
    }

    /// Recordings go under `dir`, made absolute now (against the working directory) so
    /// the paths handed to the B2BUA do not depend on where it runs from. The folder
    /// need not exist yet.
    pub fn with_recordings(self, dir: impl Into<PathBuf>) -> Services {
        let dir = dir.into();
        let recordings = std::path::absolute(&dir).unwrap_or(dir);
        Services {
            recordings: Some(recordings),
            ..self
        }
    }
}

impl fmt::Debug for Services {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Services")
            .field("zone", &self.zone.iana_name())
            .field("recordings", &self.recordings)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Per-call limits that keep one script from hurting other calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Lua VM instructions the script may execute in total (waiting in `dial` costs
    /// none). A route needs thousands; ten million stops a runaway loop within tens of
    /// milliseconds.
    pub instructions: u64,
    /// Bytes the call's Lua state may allocate.
    pub memory: usize,
    /// `kv.set`/`kv.delete` calls per call: each is a disk write.
    pub kv_writes: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            instructions: 10_000_000,
            memory: 8 << 20,
            kv_writes: 32,
        }
    }
}

/// What a call's script left behind, for CDRs, the call's timeline and the tests.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RouteOutcome {
    /// `call.vars` when the script ended.
    pub vars: BTreeMap<String, VarValue>,
    /// What the script logged (the first 200 lines; all of them also go to tracing).
    pub logs: Vec<LogLine>,
    /// Why the script failed, if it did (the call was then refused with 500).
    pub error: Option<DialplanError>,
}

/// A scalar from `call.vars`.
#[derive(Debug, Clone, PartialEq)]
pub enum VarValue {
    Str(String),
    Int(i64),
    Num(f64),
    Bool(bool),
}

impl fmt::Display for VarValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VarValue::Str(s) => write!(f, "{s:?}"),
            VarValue::Int(i) => write!(f, "{i}"),
            VarValue::Num(n) => write!(f, "{n}"),
            VarValue::Bool(b) => write!(f, "{b}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// One `log.info(...)` (or `print`) line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub level: LogLevel,
    /// `file.lua:line` of the call.
    pub location: Option<String>,
    pub message: String,
}
