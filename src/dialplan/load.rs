//! Loading a dialplan folder: every `*.lua` file is compiled to bytecode once, then the
//! entry point is run once to prove it defines `route(call)`. Calls run the bytecode in
//! warm states kept per version (see `sandbox.rs`); they never parse source.

use super::bytecode::assigned_upvalues;
use super::sandbox::{PRELUDE, PRELUDE_NAME, WRAP_PREFIX, WRAP_SUFFIX, Warm};
use super::{DialplanError, MemoryKv, Services, SystemClock};
use mlua::{Function, Lua, StdLib, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// The file every dialplan starts from; it must define a global `route(call)`.
pub const ENTRY_FILE: &str = "default.lua";
const ENTRY_MODULE: &str = "default";

/// Idle warm states kept per version; more concurrent calls than this build states
/// that are dropped when their call ends.
const MAX_IDLE_STATES: usize = 256;

/// One loaded version of the dialplan folder. Calls hold an `Arc` to the version they
/// started with, so a reload never changes the code under a running call.
pub struct Dialplan {
    code: Arc<Code>,
    fingerprint: Fingerprint,
    loaded_at: SystemTime,
    /// Warm states of this version between calls.
    idle: Mutex<Vec<Warm>>,
}

impl std::fmt::Debug for Dialplan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialplan")
            .field("dir", &self.code.dir)
            .field("files", &self.code.files)
            .field("loaded_at", &self.loaded_at)
            .finish_non_exhaustive()
    }
}

/// The compiled scripts.
#[derive(Debug)]
pub(crate) struct Code {
    pub dir: PathBuf,
    pub prelude: Vec<u8>,
    /// Bytecode by module name (the file name without `.lua`), each compiled wrapped
    /// (see `sandbox::WRAP_PREFIX`), debug info kept so errors name file and line.
    modules: BTreeMap<String, Vec<u8>>,
    /// The file names, for recognising `file.lua:12:` in error messages.
    files: Vec<String>,
    /// By chunk name (`@file.lua`), the upvalues its functions assign; `None` when that
    /// is unknown (see `bytecode.rs`).
    pub assigned_upvalues: BTreeMap<String, Option<BTreeSet<String>>>,
}

impl Code {
    pub fn module(&self, name: &str) -> Option<&[u8]> {
        self.modules.get(name).map(Vec::as_slice)
    }

    pub fn error(&self, err: &mlua::Error) -> DialplanError {
        let files: Vec<&str> = self.files.iter().map(String::as_str).collect();
        DialplanError::from_lua(err, &self.dir, &files)
    }
}

/// What the reload watcher compares: each script's name, size and modification time.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fingerprint(Vec<(String, u64, Option<SystemTime>)>);

impl Fingerprint {
    /// The `*.lua` files directly in `dir` (not `tests/`), by name.
    pub fn of(dir: &Path) -> std::io::Result<Fingerprint> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let meta = entry.metadata()?;
            if meta.is_file() && name.ends_with(".lua") {
                files.push((name, meta.len(), meta.modified().ok()));
            }
        }
        files.sort();
        Ok(Fingerprint(files))
    }

    fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(name, _, _)| name.as_str())
    }
}

/// Module names are plain identifiers so `require` can never name a path.
fn module_name(file: &str) -> Option<&str> {
    let stem = file.strip_suffix(".lua")?;
    let mut bytes = stem.bytes();
    let first = bytes.next()?;
    ((first.is_ascii_alphabetic() || first == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    .then_some(stem)
}

impl Dialplan {
    /// Compiles every `*.lua` in `dir` and checks that `default.lua` runs and defines
    /// `route(call)`. The first problem is returned with its file and line.
    pub fn load(dir: &Path) -> Result<Dialplan, DialplanError> {
        let unreadable =
            |e: std::io::Error| DialplanError::in_file(dir, format!("cannot read the folder: {e}"));
        // Taken before reading, so an edit made while loading triggers another reload.
        let fingerprint = Fingerprint::of(dir).map_err(unreadable)?;
        let compiler = Lua::new_with(StdLib::NONE, mlua::LuaOptions::new())
            .map_err(|e| DialplanError::in_file(dir, format!("cannot start Lua: {e}")))?;
        let mut modules = BTreeMap::new();
        let mut files = Vec::new();
        let mut assigned = BTreeMap::new();
        for file in fingerprint.names() {
            let path = dir.join(file);
            let name = module_name(file).ok_or_else(|| {
                DialplanError::in_file(
                    &path,
                    "script names must be Lua identifiers (letters, digits, _) so require can load them",
                )
            })?;
            let source = std::fs::read(&path)
                .map_err(|e| DialplanError::in_file(&path, format!("cannot read: {e}")))?;
            let chunk_name = format!("@{file}");
            // The file as written, for syntax errors that read as the author expects;
            // then wrapped, for running.
            compile(&compiler, &source, &chunk_name)
                .map_err(|e| DialplanError::from_lua(&e, dir, &[file]))?;
            let wrapped = [WRAP_PREFIX.as_bytes(), &source, WRAP_SUFFIX.as_bytes()].concat();
            let chunk = compile(&compiler, &wrapped, &chunk_name)
                .map_err(|e| DialplanError::from_lua(&e, dir, &[file]))?;
            assigned.insert(chunk_name, assigned_upvalues(&chunk));
            modules.insert(name.to_owned(), chunk);
            files.push(file.to_owned());
        }
        if !modules.contains_key(ENTRY_MODULE) {
            return Err(DialplanError::in_file(
                dir.join(ENTRY_FILE),
                "missing: a dialplan starts from default.lua, which defines route(call)",
            ));
        }
        let prelude = compile(&compiler, PRELUDE.as_bytes(), PRELUDE_NAME)
            .map_err(|e| DialplanError::in_file(dir, format!("internal prelude: {e}")))?;
        let code = Arc::new(Code {
            dir: dir.to_path_buf(),
            prelude,
            modules,
            files,
            assigned_upvalues: assigned,
        });
        let plan = Dialplan {
            code,
            fingerprint,
            loaded_at: SystemTime::now(),
            idle: Mutex::new(Vec::new()),
        };
        // A dry run with a scratch store, so checking has no side effects; its state
        // then serves the first call.
        let scratch =
            Services::new(Arc::new(MemoryKv::default())).with_clock(Arc::new(SystemClock));
        let instance = plan.instantiate(&scratch)?;
        plan.release(instance);
        Ok(plan)
    }

    /// A warm state readied for one call (see `Warm::begin`), ready to run `route`.
    pub(crate) fn instantiate(&self, services: &Services) -> Result<Instance, DialplanError> {
        let err = |e: mlua::Error| self.code.error(&e);
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let warm = match idle {
            Some(warm) => warm,
            None => Warm::new(&self.code).map_err(err)?,
        };
        let route = match warm.begin(services) {
            Ok(Value::Function(route)) => route,
            Ok(other) => {
                warm.finish();
                return Err(DialplanError::in_file(
                    self.code.dir.join(ENTRY_FILE),
                    format!(
                        "must define a global function route(call), but route is {}",
                        other.type_name()
                    ),
                ));
            }
            Err(e) => {
                warm.finish();
                return Err(err(e));
            }
        };
        Ok(Instance { warm, route })
    }

    /// Ends a call's use of its state, keeping the state for another call if it is
    /// still fit; returns what the script logged.
    pub(crate) fn release(&self, instance: Instance) -> Vec<super::LogLine> {
        let (logs, fit) = instance.warm.finish();
        if fit {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < MAX_IDLE_STATES {
                idle.push(instance.warm);
            }
        }
        logs
    }

    pub(crate) fn code(&self) -> &Arc<Code> {
        &self.code
    }

    /// The folder this version was loaded from.
    pub fn dir(&self) -> &Path {
        &self.code.dir
    }

    /// The script files of this version, by name.
    pub fn files(&self) -> &[String] {
        &self.code.files
    }

    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    pub fn loaded_at(&self) -> SystemTime {
        self.loaded_at
    }
}

/// One call's Lua state, ready to run `route`.
pub(crate) struct Instance {
    pub warm: Warm,
    pub route: Function,
}

/// Source to bytecode, debug info kept for file:line in errors and tracebacks.
fn compile(lua: &Lua, source: &[u8], name: &str) -> mlua::Result<Vec<u8>> {
    let function = lua
        .load(source)
        .set_name(name)
        .set_mode(mlua::chunk::ChunkMode::Text)
        .into_function()?;
    Ok(function.dump(false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn plan_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    fn load_error(files: &[(&str, &str)]) -> DialplanError {
        let dir = plan_dir(files);
        let err = Dialplan::load(dir.path()).unwrap_err();
        // Paths in errors are the folder's; strip it for stable assertions.
        DialplanError {
            file: err
                .file
                .map(|f| f.strip_prefix(dir.path()).unwrap_or(&f).to_path_buf()),
            ..err
        }
    }

    #[test]
    fn a_good_folder_loads_every_script() {
        let dir = plan_dir(&[
            (
                "default.lua",
                "local o = require 'office'\nfunction route(call) end",
            ),
            ("office.lua", "return { hours = {} }"),
            ("notes.txt", "not lua"),
        ]);
        let plan = Dialplan::load(dir.path()).unwrap();
        assert_eq!(plan.files(), ["default.lua", "office.lua"]);
        assert!(plan.code.module("office").is_some());
        assert!(plan.code.module("notes").is_none());
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        let e = load_error(&[
            ("default.lua", "function route(call) end"),
            ("office.lua", "return {\n  hours = ,\n}"),
        ]);
        assert_eq!(e.file.as_deref(), Some(Path::new("office.lua")));
        assert_eq!(e.line, Some(2));
        assert!(e.message.contains("unexpected symbol"), "{e}");
    }

    #[test]
    fn runtime_errors_at_load_name_file_and_line() {
        let e = load_error(&[
            (
                "default.lua",
                "local o = require 'office'\nfunction route(call) end",
            ),
            ("office.lua", "local t = nil\n\nreturn t.hours"),
        ]);
        assert_eq!(e.file.as_deref(), Some(Path::new("office.lua")));
        assert_eq!(e.line, Some(3));
        assert!(
            e.traceback
                .as_deref()
                .unwrap_or("")
                .contains("default.lua:1"),
            "{e:?}"
        );
    }

    #[test]
    fn missing_route_missing_entry_and_bad_names_are_reported() {
        let e = load_error(&[("default.lua", "route = 5")]);
        assert_eq!(e.file.as_deref(), Some(Path::new("default.lua")));
        assert!(e.message.contains("route is integer"), "{e}");

        let e = load_error(&[("office.lua", "return {}")]);
        assert_eq!(e.file.as_deref(), Some(Path::new("default.lua")));
        assert!(e.message.starts_with("missing"), "{e}");

        let e = load_error(&[("default.lua", "function route() end"), ("my-lib.lua", "")]);
        assert_eq!(e.file.as_deref(), Some(Path::new("my-lib.lua")));

        let e = load_error(&[("default.lua", "require 'nothere'\nfunction route() end")]);
        assert_eq!(
            (e.file.as_deref(), e.line),
            (Some(Path::new("default.lua")), Some(1))
        );
        assert!(e.message.contains("module 'nothere' not found"), "{e}");

        let err = Dialplan::load(Path::new("/nonexistent/dialplans")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/nonexistent/dialplans: cannot read the folder")
        );
    }

    #[test]
    fn fingerprint_changes_with_content() {
        let dir = plan_dir(&[("default.lua", "function route() end")]);
        let before = Fingerprint::of(dir.path()).unwrap();
        assert_eq!(before, Fingerprint::of(dir.path()).unwrap());
        fs::write(dir.path().join("default.lua"), "function route(call) end").unwrap();
        assert_ne!(before, Fingerprint::of(dir.path()).unwrap());
    }
}
