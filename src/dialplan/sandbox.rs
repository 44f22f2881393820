//! The Lua a script runs in: which parts of Lua it gets, the instruction budget and
//! memory limit, `require` from the dialplan folder only, and `log`.
//!
//! Building a Lua state costs more than routing a call (mlua's setup alone is tens of
//! microseconds), so states are kept warm and reused, one call at a time, while every
//! call still starts from nothing the previous call could have touched: a new global
//! environment, new copies of the library tables, the dialplan's top level run again,
//! and the string metatable pointed at the call's own `string`. What the calls of one
//! state share is immutable (functions) or hidden (the metatables, the registry). A
//! state that saw an error, or grew, is dropped instead of reused.
//!
//! Left out of a script's environment: `io`, `package`, `debug` (except
//! `debug.traceback`), `load`/`loadfile`/`dofile` (no code from strings or other files),
//! `string.dump`, `collectgarbage`, `warn`, `coroutine` (the engine owns the script's
//! coroutine; a yield of the script's own would confuse it), and every `os` function
//! except `time`, `date`, `clock` and `difftime`.

use super::call::CallInfo;
use super::load::Code;
use super::{LogLevel, LogLine, Services, api, kv, time};
use mlua::chunk::ChunkMode;
use mlua::state::{GcGenParams, GcMode};
use mlua::{Function, HookTriggers, Lua, LuaOptions, MultiValue, StdLib, Table, Value, VmState};
use std::fmt::Display;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// How often the instruction hook runs. Small enough that a runaway loop is stopped
/// within microseconds of the budget running out, large enough to cost nothing.
const HOOK_STEP: u32 = 1000;

/// Log lines kept per call for the outcome (they all go to tracing regardless).
const MAX_LOG_LINES: usize = 200;

/// A state that holds more than this after a call is dropped rather than reused, so
/// one call's garbage never counts much against the next call's memory limit.
const MAX_REUSED_MEMORY: usize = 2 << 20;

/// Per-call data the Rust side of the API reaches through the Lua state.
pub(crate) struct Scope {
    pub services: Services,
    pub kv_writes: u32,
    pub logs: Vec<LogLine>,
    /// The INVITE's headers until the script first reads `call.headers`.
    pub headers: Vec<(String, String)>,
}

/// Runs `f` with the call's [`Scope`]. Fails only if no call is running in the state
/// or a caller already holds it, both bugs in this module, never script input.
pub(crate) fn with_scope<R>(
    lua: &Lua,
    f: impl FnOnce(&mut Scope) -> mlua::Result<R>,
) -> mlua::Result<R> {
    let mut scope = lua
        .try_app_data_mut::<Scope>()
        .map_err(|e| mlua::Error::runtime(format!("dialplan scope in use: {e}")))?
        .ok_or_else(|| mlua::Error::runtime("no call is running in this state"))?;
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

/// Scripts are compiled wrapped in a function taking their environment, so one
/// compiled chunk can run in a new environment per call. The prefix has no newline,
/// so line numbers stay those of the file.
pub(crate) const WRAP_PREFIX: &str = "return function(_ENV, ...) ";
pub(crate) const WRAP_SUFFIX: &str = "\nend";

/// Runs once per state with the Rust primitives; returns `begin()`, which makes a new
/// environment, runs `default.lua` in it and returns its `route`, and `bind(facts)`,
/// which makes the call table the script's `call` object.
pub(crate) const PRELUDE: &str = r#"
local prims = ...
local next, type, error, tostring, rawequal, rawget, rawset =
  next, type, error, tostring, rawequal, rawget, rawset
local raw_pcall, raw_xpcall, raw_setmetatable = pcall, xpcall, setmetatable
local yield, randomseed = coroutine.yield, math.randomseed
local check_budget, load_module = prims.check_budget, prims.load_module

-- A spent instruction budget must stop the script even inside pcall.
local function pcall_checked(...) return check_budget(raw_pcall(...)) end
local function xpcall_checked(...) return check_budget(raw_xpcall(...)) end
-- Finalizers would run when the state collects garbage, outside any call's limits.
local function setmetatable_checked(t, mt)
  if type(mt) == "table" and rawget(mt, "__gc") ~= nil then
    error("__gc metamethods are not allowed in dialplans", 2)
  end
  return raw_setmetatable(t, mt)
end

-- Each call sees a library through its own empty table that reads through to the
-- shared one: what a script assigns stays in its table, and the shared table is
-- unreachable (the metatable is hidden).
local function shared(lib) return { __index = lib, __metatable = false } end
local string_lib = {}
for k, v in next, string do if k ~= "dump" then string_lib[k] = v end end
local string_shared, table_shared, math_shared = shared(string_lib), shared(table), shared(math)
local utf8_shared, os_shared = shared(utf8), shared({
  time = os.time, date = os.date, clock = os.clock, difftime = os.difftime,
})
local debug_shared = shared({ traceback = prims.traceback })
local log_shared, kv_shared, time_shared = shared(prims.log), shared(prims.kv), shared(prims.time)
local string_mt = getmetatable("")
string_mt.__metatable = false
local assert, getmetatable, ipairs, pairs, rawlen, select, tonumber, print, version =
  assert, getmetatable, ipairs, pairs, rawlen, select, tonumber, prims.print, _VERSION

-- Compiled scripts, made into environment-taking functions on first use.
local factories = {}
local function factory(name)
  local f = factories[name]
  if f == nil then
    local chunk, why = load_module(name)
    if not chunk then return nil, why end
    f = chunk()
    factories[name] = f
  end
  return f
end

local function new_env()
  local env = {
    assert = assert, error = error, getmetatable = getmetatable, ipairs = ipairs,
    next = next, pairs = pairs, rawequal = rawequal, rawget = rawget, rawlen = rawlen,
    rawset = rawset, select = select, tonumber = tonumber, tostring = tostring,
    type = type, _VERSION = version, print = print,
    pcall = pcall_checked, xpcall = xpcall_checked, setmetatable = setmetatable_checked,
    string = raw_setmetatable({}, string_shared), table = raw_setmetatable({}, table_shared),
    math = raw_setmetatable({}, math_shared), utf8 = raw_setmetatable({}, utf8_shared),
    os = raw_setmetatable({}, os_shared), debug = raw_setmetatable({}, debug_shared),
    log = raw_setmetatable({}, log_shared), kv = raw_setmetatable({}, kv_shared),
    time = raw_setmetatable({}, time_shared),
    _G = false, require = false,
  }
  env._G = env
  string_mt.__index = env.string
  local loaded, loading = {}, {}
  env.require = function(name)
    local m = loaded[name]
    if m ~= nil then return m end
    if loading[name] then
      error("require cycle: module '" .. tostring(name) .. "' is still loading", 2)
    end
    local f, why = factory(name)
    if not f then error(why, 2) end
    loading[name] = true
    m = f(env, name)
    loading[name] = nil
    if m == nil then m = true end
    loaded[name] = m
    return m
  end
  return env
end

local methods, current_call = {}, nil
for _, name in next, { "dial", "answer", "reject", "redirect", "hangup" } do
  methods[name] = function(self, ...)
    if not rawequal(self, current_call) then
      error("call." .. name .. " is a method: write call:" .. name .. "(...)", 2)
    end
    local ok, result = yield(name, ...)
    if not ok then error(result, 2) end
    return result
  end
end
local headers = prims.headers
local call_mt = {
  __index = function(t, k)
    local m = methods[k]
    if m ~= nil then return m end
    if (k == "headers" or k == "all_headers") and rawget(t, "headers") == nil then
      local first, all = headers()
      rawset(t, "headers", first)
      rawset(t, "all_headers", all)
      return rawget(t, k)
    end
  end,
  __metatable = "call",
}

local function begin()
  randomseed()
  local env = new_env()
  env.require("default")
  return env.route
end

-- The call's facts arrive as arguments (building tables here is much cheaper than
-- through the Rust API): id, request URI, transport, authenticated user, source ip and
-- port, then user, display, uri and host of From and of To.
local function bind(id, ruri, transport, auth_user, ip, port, fu, fd, furi, fh, tu, td, turi, th)
  current_call = raw_setmetatable({
    id = id, request_uri = ruri, transport = transport, auth_user = auth_user,
    source = { ip = ip, port = port },
    from = { user = fu, display = fd, uri = furi, host = fh },
    to = { user = tu, display = td, uri = turi, host = th },
    vars = {},
  }, call_mt)
  return current_call
end

return begin, bind
"#;

/// Runs `f`, which must not run script code, with the memory limit lifted: with a
/// limit, mlua protects every table and string operation with its own `pcall`, which
/// makes filling a table from Rust several times slower.
pub(crate) fn unlimited<R>(lua: &Lua, f: impl FnOnce() -> mlua::Result<R>) -> mlua::Result<R> {
    let limit = lua.set_memory_limit(0)?;
    let result = f();
    lua.set_memory_limit(limit)?;
    result
}

/// The name the prelude's chunk carries in tracebacks.
pub(crate) const PRELUDE_NAME: &str = "=[switchboard]";

/// A Lua state ready to run calls of one dialplan version, one at a time.
pub(crate) struct Warm {
    pub lua: Lua,
    budget: Arc<Budget>,
    begin: Function,
    bind: Function,
}

impl Warm {
    pub fn new(code: &Arc<Code>) -> mlua::Result<Warm> {
        let lua = Lua::new_with(
            StdLib::COROUTINE
                | StdLib::TABLE
                | StdLib::STRING
                | StdLib::MATH
                | StdLib::UTF8
                | StdLib::OS,
            LuaOptions::new(),
        )?;
        // Most of what a call allocates dies with the call: the generational collector
        // frees it in cheap young collections.
        lua.gc_set_mode(GcMode::Generational(GcGenParams::default()));
        let budget = Arc::new(Budget {
            used: AtomicU64::new(0),
            limit: AtomicU64::new(0),
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
                    hook_budget.limit()
                )))
            },
        )?;
        let prims = lua.create_table()?;
        let check_budget = budget.clone();
        prims.set(
            "check_budget",
            lua.create_function(move |_, results: MultiValue| {
                if check_budget.exhausted() {
                    Err(mlua::Error::runtime(format!(
                        "instruction budget of {} exhausted",
                        check_budget.limit()
                    )))
                } else {
                    Ok(results)
                }
            })?,
        )?;
        let module_code = code.clone();
        prims.set(
            "load_module",
            lua.create_function(move |lua, name: Value| load_module(lua, &module_code, name))?,
        )?;
        prims.set("traceback", lua.create_function(traceback)?)?;
        prims.set(
            "headers",
            lua.create_function(|lua, ()| {
                let headers = with_scope(lua, |s| Ok(std::mem::take(&mut s.headers)))?;
                api::header_tables(lua, &headers)
            })?,
        )?;
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
        prims.set("kv", kv::library(&lua)?)?;
        prims.set("time", time::library(&lua)?)?;
        let (begin, bind) = lua
            .load(&code.prelude[..])
            .set_mode(ChunkMode::Binary)
            .call::<(Function, Function)>(prims)?;
        Ok(Warm {
            lua,
            budget,
            begin,
            bind,
        })
    }

    /// Starts a call: its scope and limits, a new environment with the dialplan's top
    /// level run in it; returns `route`.
    pub fn begin(&self, services: &Services) -> mlua::Result<Value> {
        self.budget.reset(services.limits.instructions);
        self.lua.set_memory_limit(services.limits.memory)?;
        self.lua.set_app_data(Scope {
            services: services.clone(),
            kv_writes: 0,
            logs: Vec::new(),
            headers: Vec::new(),
        });
        self.begin.call(())
    }

    /// The script's `call` object for this call (`headers` and `all_headers` are
    /// made when the script first reads them).
    pub fn bind(&self, info: &CallInfo) -> mlua::Result<Table> {
        with_scope(&self.lua, |s| {
            s.headers = info.headers.clone();
            Ok(())
        })?;
        let (from, to) = (&info.from, &info.to);
        unlimited(&self.lua, || {
            self.bind.call((
                info.id.as_str(),
                info.request_uri.as_str(),
                info.transport.as_str(),
                info.auth_user.as_deref(),
                info.source.ip().to_string(),
                info.source.port(),
                from.user.as_str(),
                from.display.as_deref(),
                from.uri.as_str(),
                from.host.as_str(),
                to.user.as_str(),
                to.display.as_deref(),
                to.uri.as_str(),
                to.host.as_str(),
            ))
        })
    }

    /// Ends the call's use of the state: its scope (and the services in it) dropped,
    /// its logs handed back; whether the state is fit for another call.
    pub fn finish(&self) -> (Vec<LogLine>, bool) {
        let logs = self
            .lua
            .remove_app_data::<Scope>()
            .map(|s| s.logs)
            .unwrap_or_default();
        let fit = !self.budget.exhausted() && self.lua.used_memory() <= MAX_REUSED_MEMORY;
        (logs, fit)
    }
}

struct Budget {
    used: AtomicU64,
    limit: AtomicU64,
}

impl Budget {
    fn reset(&self, limit: u64) {
        self.used.store(0, Ordering::Relaxed);
        self.limit.store(limit, Ordering::Relaxed);
    }

    fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Counts `n` more instructions; `false` once the budget is spent.
    fn spend(&self, n: u64) -> bool {
        self.used.fetch_add(n, Ordering::Relaxed) + n <= self.limit()
    }

    fn exhausted(&self) -> bool {
        self.used.load(Ordering::Relaxed) > self.limit()
    }
}

/// `require(name)`'s loader: a module is `name.lua` in the dialplan folder, compiled at
/// load time; names are plain identifiers, so no path can leave the folder. Returns
/// `nil, why` for the prelude to raise at the script's line.
fn load_module(lua: &Lua, code: &Code, name: Value) -> mlua::Result<(Value, Option<String>)> {
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
    match code.module(&name) {
        Some(bytes) => {
            let chunk = lua
                .load(bytes)
                .set_mode(ChunkMode::Binary)
                .into_function()?;
            Ok((Value::Function(chunk), None))
        }
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

fn log_function(lua: &Lua, level: LogLevel) -> mlua::Result<Function> {
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
