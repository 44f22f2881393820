//! The per-call Lua state: which parts of Lua a script gets, the instruction budget and
//! memory limit, `require` from the dialplan folder only, and `log`.
//!
//! Each call gets a new state, so nothing a script does (globals, metatables, a broken
//! `string` table) reaches another call. What is left out: `io`, `package`, `debug`
//! (except `debug.traceback`), `load`/`loadfile`/`dofile` (no code from strings or
//! files other than the dialplan's), `string.dump`, `collectgarbage`, `coroutine` (the
//! engine owns the script's coroutine; a yield of the script's own would confuse it),
//! and every `os` function except `time`, `date`, `clock` and `difftime`.

use super::load::Code;
use super::{LogLevel, LogLine, Services, kv, time};
use mlua::chunk::ChunkMode;
use mlua::{HookTriggers, Lua, LuaOptions, MultiValue, StdLib, Value, VmState};
use std::fmt::Display;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The standard libraries loaded before the prelude trims them. `coroutine` is loaded
/// only so the prelude can keep `coroutine.yield` for the call operations.
fn libs() -> StdLib {
    StdLib::COROUTINE | StdLib::TABLE | StdLib::STRING | StdLib::MATH | StdLib::UTF8 | StdLib::OS
}

/// How often the instruction hook runs. Small enough that a runaway loop is stopped
/// within microseconds of the budget running out, large enough to cost nothing.
const HOOK_STEP: u32 = 1000;

/// Log lines kept per call for the outcome (they all go to tracing regardless).
const MAX_LOG_LINES: usize = 200;

/// Per-call data the Rust side of the API reaches through the Lua state.
pub(crate) struct Scope {
    pub services: Services,
    pub code: Arc<Code>,
    pub kv_writes: u32,
    pub logs: Vec<LogLine>,
}

/// Runs `f` with the call's [`Scope`]. Fails only if the state was built without one or
/// a caller already holds it, both bugs in this module, never script input.
pub(crate) fn with_scope<R>(
    lua: &Lua,
    f: impl FnOnce(&mut Scope) -> mlua::Result<R>,
) -> mlua::Result<R> {
    let mut scope = lua
        .try_app_data_mut::<Scope>()
        .map_err(|e| mlua::Error::runtime(format!("dialplan scope in use: {e}")))?
        .ok_or_else(|| mlua::Error::runtime("dialplan scope missing"))?;
    f(&mut scope)
}

/// `file:line` of the Lua code that called the running Rust function.
pub(crate) fn caller_location(lua: &Lua) -> Option<String> {
    lua.inspect_stack(1, |d| {
        let line = d.current_line()?;
        let source = d.source();
        Some(format!("{}:{line}", source.short_src?))
    })
    .flatten()
}

/// An error raised by the API, located at the script line that made the bad call (as
/// Lua's own `error(message, 2)` would).
pub(crate) fn script_error(lua: &Lua, message: impl Display) -> mlua::Error {
    match caller_location(lua) {
        Some(at) => mlua::Error::runtime(format!("{at}: {message}")),
        None => mlua::Error::runtime(message.to_string()),
    }
}

/// The prelude: trims the globals, wraps `pcall`/`xpcall` so a spent instruction budget
/// cannot be caught, refuses `__gc` metamethods (they would run when the state is
/// closed, outside any call), and defines `require` and the call operations. It runs
/// once per call state with the Rust primitives as its argument and returns the
/// function that turns the call table into the script's `call` object.
pub(crate) const PRELUDE: &str = r#"
local prims = ...
local raw_pcall, raw_xpcall, raw_setmetatable = pcall, xpcall, setmetatable
local rawget, rawequal, type, error, tostring = rawget, rawequal, type, error, tostring
local yield = coroutine.yield
local check_budget, load_module = prims.check_budget, prims.load_module

function pcall(...) return check_budget(raw_pcall(...)) end
function xpcall(...) return check_budget(raw_xpcall(...)) end
function setmetatable(t, mt)
  if type(mt) == "table" and rawget(mt, "__gc") ~= nil then
    error("__gc metamethods are not allowed in dialplans", 2)
  end
  return raw_setmetatable(t, mt)
end

local loaded, loading = {}, {}
function require(name)
  local m = loaded[name]
  if m ~= nil then return m end
  if loading[name] then
    error("require cycle: module '" .. tostring(name) .. "' is still loading", 2)
  end
  local chunk, why = load_module(name)
  if not chunk then error(why, 2) end
  loading[name] = true
  m = chunk(name)
  loading[name] = nil
  if m == nil then m = true end
  loaded[name] = m
  return m
end

dofile, loadfile, load, collectgarbage = nil, nil, nil, nil
string.dump = nil
os = { time = os.time, date = os.date, clock = os.clock, difftime = os.difftime }
coroutine = nil
print = prims.print
log = prims.log
debug = { traceback = prims.traceback }

local methods, the_call = {}, nil
for _, name in ipairs({ "dial", "answer", "reject", "redirect", "hangup" }) do
  methods[name] = function(self, ...)
    if not rawequal(self, the_call) then
      error("call." .. name .. " is a method: write call:" .. name .. "(...)", 2)
    end
    local ok, result = yield(name, ...)
    if not ok then error(result, 2) end
    return result
  end
end
local call_mt = { __index = methods, __metatable = "call" }
return function(t)
  the_call = raw_setmetatable(t, call_mt)
  return t
end
"#;

/// The name the prelude's chunk carries in tracebacks.
pub(crate) const PRELUDE_NAME: &str = "=[switchboard]";

/// A fresh sandboxed state for one call (or for checking a dialplan), with the call's
/// services and the dialplan's code, and the function that makes the `call` object.
pub(crate) fn new_state(code: &Arc<Code>, services: &Services) -> mlua::Result<(Lua, Value)> {
    let lua = Lua::new_with(libs(), LuaOptions::new())?;
    lua.set_memory_limit(services.limits.memory)?;
    let budget = Arc::new(Budget {
        used: AtomicU64::new(0),
        limit: services.limits.instructions,
    });
    let hook_budget = budget.clone();
    lua.set_global_hook(
        HookTriggers::new().every_nth_instruction(HOOK_STEP),
        move |_, debug| {
            if hook_budget.spend(u64::from(HOOK_STEP)) {
                return Ok(VmState::Continue);
            }
            let at = debug
                .current_line()
                .zip(debug.source().short_src)
                .map(|(line, src)| format!("{src}:{line}: "));
            Err(mlua::Error::runtime(format!(
                "{}instruction budget of {} exhausted (a loop that never ends?)",
                at.unwrap_or_default(),
                hook_budget.limit
            )))
        },
    )?;
    lua.set_app_data(Scope {
        services: services.clone(),
        code: code.clone(),
        kv_writes: 0,
        logs: Vec::new(),
    });

    let globals = lua.globals();
    kv::install(&lua, &globals)?;
    time::install(&lua, &globals)?;
    let prims = lua.create_table()?;
    prims.set(
        "check_budget",
        lua.create_function(move |_, results: MultiValue| {
            if budget.exhausted() {
                Err(mlua::Error::runtime(format!(
                    "instruction budget of {} exhausted",
                    budget.limit
                )))
            } else {
                Ok(results)
            }
        })?,
    )?;
    prims.set("load_module", lua.create_function(load_module)?)?;
    prims.set("traceback", lua.create_function(traceback)?)?;
    prims.set("print", log_function(&lua, LogLevel::Info)?)?;
    let log = lua.create_table()?;
    for level in [
        LogLevel::Debug,
        LogLevel::Info,
        LogLevel::Warn,
        LogLevel::Error,
    ] {
        log.set(level.as_str(), log_function(&lua, level)?)?;
    }
    prims.set("log", log)?;
    let make_call = lua
        .load(&code.prelude[..])
        .set_mode(ChunkMode::Binary)
        .call::<Value>(prims)?;
    Ok((lua, make_call))
}

struct Budget {
    used: AtomicU64,
    limit: u64,
}

impl Budget {
    /// Counts `n` more instructions; `false` once the budget is spent.
    fn spend(&self, n: u64) -> bool {
        self.used.fetch_add(n, Ordering::Relaxed) + n <= self.limit
    }

    fn exhausted(&self) -> bool {
        self.used.load(Ordering::Relaxed) > self.limit
    }
}

/// `require(name)`'s loader: a module is `name.lua` in the dialplan folder, compiled at
/// load time; names are plain identifiers, so no path can leave the folder. Returns
/// `nil, why` for the prelude to raise at the script's line.
fn load_module(lua: &Lua, name: Value) -> mlua::Result<(Value, Option<String>)> {
    let name = match name {
        Value::String(s) => s.to_str()?.to_owned(),
        other => {
            return Ok((
                Value::Nil,
                Some(format!(
                    "require: module names are strings, not {}",
                    other.type_name()
                )),
            ));
        }
    };
    let code = with_scope(lua, |s| Ok(s.code.clone()))?;
    match code.module(&name) {
        Some(bytes) => Ok((Value::Function(load_chunk(lua, bytes)?), None)),
        None => Ok((
            Value::Nil,
            Some(format!(
                "module '{name}' not found: require loads <name>.lua from the dialplan folder ({})",
                code.dir.display()
            )),
        )),
    }
}

/// `debug.traceback([message [, level]])`, without the thread argument.
fn traceback(lua: &Lua, (message, level): (Value, Option<usize>)) -> mlua::Result<Value> {
    let message = match message {
        Value::Nil => None,
        Value::String(s) => Some(s.to_str()?.to_owned()),
        // Like Lua's own: any other message is returned untouched.
        other => return Ok(other),
    };
    lua.traceback(message.as_deref(), level.unwrap_or(1))
        .map(Value::String)
}

fn log_function(lua: &Lua, level: LogLevel) -> mlua::Result<mlua::Function> {
    lua.create_function(move |lua, args: MultiValue| {
        let mut message = String::new();
        for (i, v) in args.iter().enumerate() {
            if i > 0 {
                message.push(' ');
            }
            message.push_str(&v.to_string()?);
        }
        let location = caller_location(lua);
        let at = location.as_deref().unwrap_or("?");
        match level {
            LogLevel::Debug => tracing::debug!(target: "dialplan", at, "{message}"),
            LogLevel::Info => tracing::info!(target: "dialplan", at, "{message}"),
            LogLevel::Warn => tracing::warn!(target: "dialplan", at, "{message}"),
            LogLevel::Error => tracing::error!(target: "dialplan", at, "{message}"),
        }
        with_scope(lua, |s| {
            if s.logs.len() < MAX_LOG_LINES {
                s.logs.push(LogLine {
                    level,
                    location,
                    message,
                });
            }
            Ok(())
        })
    })
}

/// Loads a compiled chunk from the dialplan into `lua`.
pub(crate) fn load_chunk(lua: &Lua, bytes: &[u8]) -> mlua::Result<mlua::Function> {
    lua.load(bytes).set_mode(ChunkMode::Binary).into_function()
}
