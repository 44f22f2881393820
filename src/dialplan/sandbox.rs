//! The Lua a script runs in: which parts of Lua it gets, the instruction budget and
//! memory limit, `require` from the dialplan folder only, and `log`.
//!
//! Building a Lua state costs more than routing a call (mlua's setup alone is tens of
//! microseconds), and so does running the plan's top level, so states are kept warm
//! and reused, one call at a time, and a state runs the top level once and freezes what
//! it built (see [`PRELUDE`]), while every call still starts from what the top level
//! built and nothing a previous call did: its writes to those tables and upvalues are
//! undone, its globals with them. A top level that reads the store, the clock, random
//! numbers or logs, or builds tables with metatables of their own, runs again for every
//! call instead, in a new environment. What the calls of one state share is immutable
//! (functions), frozen, or hidden (the metatables, the registry). A state that saw an
//! error, or grew, is dropped instead of reused.
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
    /// Whether the call has written to a table the plan's frozen top level built.
    pub frozen_written: bool,
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

/// `file:line` of the script code that called the running Rust function, passing over
/// the prelude's wrappers (see `marked` in the prelude).
pub(crate) fn caller_location(lua: &Lua) -> Option<String> {
    (1..=2)
        .map_while(|level| {
            lua.inspect_stack(level, |d| {
                let source = d.source();
                let src = source.short_src?;
                (source.source.as_deref() != Some(PRELUDE_NAME))
                    .then(|| d.current_line().map(|line| format!("{src}:{line}")))
            })
        })
        .find_map(|found| found)
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

/// Runs once per state with the Rust primitives; returns `begin()`, which readies the
/// state for a call and returns the plan's `route`, `bind(facts)`, which makes the
/// call table the script's `call` object, and the map from frozen tables to what they
/// hold (for the Rust side to read them, see [`readable`]).
///
/// The first call of a state runs the plan's top level in a new environment. If that
/// top level is pure (it read no key-value store, clock, random number or log, and
/// made no table with a metatable of its own), everything it built is then frozen and
/// later calls reuse it instead of running it again: each table it built becomes an
/// empty proxy reading through to a hidden table, and writes to it during a call go to
/// that table through an undo log, replayed when the next call begins; the upvalues
/// of its functions are set back likewise. So a call sees exactly what the top level
/// built, writes where it could before, and leaves nothing behind. Any other plan
/// runs its top level again for every call.
pub(crate) const PRELUDE: &str = r#"
local prims = ...
local next, type, error, tostring, rawequal, raw_rawget, raw_rawset, raw_rawlen =
  next, type, error, tostring, rawequal, rawget, rawset, rawlen
local raw_pcall, raw_xpcall, raw_setmetatable = pcall, xpcall, setmetatable
local yield, randomseed = coroutine.yield, math.randomseed
local check_budget, load_module = prims.check_budget, prims.load_module
local getupvalue, setupvalue, upvalueid = debug.getupvalue, debug.setupvalue, debug.upvalueid
local getinfo, assigned_upvalues = debug.getinfo, prims.assigned_upvalues
local debug_getmetatable, debug_setmetatable = debug.getmetatable, debug.setmetatable
debug = nil

-- A spent instruction budget must stop the script even inside pcall.
local function pcall_checked(...) return check_budget(raw_pcall(...)) end
local function xpcall_checked(...) return check_budget(raw_xpcall(...)) end
-- Frozen tables (see above): proxy -> the table holding its contents, and the undo
-- log of writes to those (table, key, old value; flat).
local frozen, undo, undone = {}, {}, 0
local frozen_written = prims.frozen_written
local function frozen_set(t, k, v)
  if undone == 0 then frozen_written() end
  local held = frozen[t]
  local old = raw_rawget(held, k)
  raw_rawset(held, k, v)
  undo[undone + 1], undo[undone + 2], undo[undone + 3] = held, k, old
  undone = undone + 3
end
local function frozen_next(t, k) return next(frozen[t], k) end
-- The raw functions see what a frozen table holds.
local function rawget(t, k) return raw_rawget(frozen[t] or t, k) end
local function rawlen(t) return raw_rawlen(frozen[t] or t) end
local function rawset(t, k, v)
  if frozen[t] then frozen_set(t, k, v) else raw_rawset(t, k, v) end
  return t
end
local function next_of(t, k) return next(frozen[t] or t, k) end
-- A frozen table used as a metatable works through what it holds, and reads back as
-- itself. Finalizers would run when the state collects garbage, outside any call's
-- limits.
local raw_getmetatable, proxy_of = getmetatable, {}
local function getmetatable(v)
  local mt = raw_getmetatable(v)
  return proxy_of[mt] or mt
end
local function setmetatable_checked(t, mt)
  if type(mt) == "table" and rawget(mt, "__gc") ~= nil then
    error("__gc metamethods are not allowed in dialplans", 2)
  end
  return raw_setmetatable(t, frozen[mt] or mt)
end

-- Each call sees a library through its own empty table that reads through to the
-- shared one: what a script assigns stays in its table, and the shared table is
-- unreachable (the metatable is hidden). While a top level runs, the libraries that
-- make it impure go through marking copies.
local impure, builtin = false, {}
local library_meta = {}
local function marked(f)
  local g = function(...) impure = true; return f(...) end
  builtin[g] = true
  return g
end
local function marking(lib)
  local copy = {}
  for k, f in next, lib do copy[k] = marked(f) end
  return copy
end
local function shared(lib, marked)
  local meta = { __index = lib, __metatable = false }
  library_meta[meta] = { lib, marked and marking(lib) or lib }
  return meta
end
local function mark_impure(on)
  for meta, libs in next, library_meta do meta.__index = libs[on and 2 or 1] end
end
local string_lib = {}
for k, v in next, string do if k ~= "dump" then string_lib[k] = v end end
local string_shared, table_shared, utf8_shared = shared(string_lib), shared(table), shared(utf8)
local math_shared = shared(math)
library_meta[math_shared][2] = raw_setmetatable({ random = marked(math.random) }, { __index = math })
local os_shared = shared({
  time = os.time, date = os.date, clock = os.clock, difftime = os.difftime,
}, true)
local debug_shared = shared({ traceback = prims.traceback })
local log_shared, kv_shared, time_shared =
  shared(prims.log, true), shared(prims.kv, true), shared(prims.time, true)
local string_mt = getmetatable("")
string_mt.__metatable = false
local marked_print = marked(prims.print)
local assert, ipairs, pairs, select, tonumber, version =
  assert, ipairs, pairs, select, tonumber, _VERSION

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

-- The modules the frozen top level loaded, and those a call loads itself.
local loaded, call_loaded, loading = {}, {}, {}

local function new_env()
  local env = {
    assert = assert, error = error, getmetatable = getmetatable, ipairs = ipairs,
    next = next_of, pairs = pairs, rawequal = rawequal, rawget = rawget, rawlen = rawlen,
    rawset = rawset, select = select, tonumber = tonumber, tostring = tostring,
    type = type, _VERSION = version, print = marked_print,
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
  loaded, call_loaded, loading = {}, {}, {}
  env.require = function(name)
    local m = loaded[name]
    if m ~= nil then return m end
    m = call_loaded[name]
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
    call_loaded[name] = m
    return m
  end
  for _, v in next, env do
    if type(v) == "function" then builtin[v] = true end
  end
  return env
end

-- The tables and upvalue cells reachable from what a top level built; false and why
-- when they cannot be frozen.
local function reachable(roots)
  local tables, cells, seen, stack = {}, {}, {}, roots
  while #stack > 0 do
    local v = stack[#stack]
    stack[#stack] = nil
    local kind = type(v)
    if (kind ~= "table" and kind ~= "function") or seen[v] then goto continue end
    seen[v] = true
    if kind == "table" then
      local mt = debug_getmetatable(v)
      if mt ~= nil and library_meta[mt] == nil then return false, "a table with a metatable" end
      tables[#tables + 1] = v
      for k, x in next, v do stack[#stack + 1] = k; stack[#stack + 1] = x end
    elseif not builtin[v] then
      -- Only upvalues some function of the file assigns need setting back; a file
      -- whose assignments are unknown (false) has all of its set back.
      local assigned = assigned_upvalues[getinfo(v, "S").source]
      local i = 1
      while true do
        local name, x = getupvalue(v, i)
        -- C functions' upvalues have empty names: they are the engine's.
        if name == nil or name == "" then break end
        local id = upvalueid(v, i)
        if not seen[id] then
          seen[id] = true
          if not assigned or assigned[name] then cells[#cells + 1] = { v, i, x } end
          stack[#stack + 1] = x
        end
        i = i + 1
      end
    end
    ::continue::
  end
  return tables, cells
end

local function freeze(t)
  local held = {}
  for k, v in next, t do held[k] = v end
  for k in next, held do raw_rawset(t, k, nil) end
  local mt = debug_getmetatable(t)
  if mt ~= nil then debug_setmetatable(held, mt) end
  frozen[t], proxy_of[held] = held, t
  debug_setmetatable(t, {
    __index = held, __newindex = frozen_set, __len = function() return #held end,
    __pairs = function(p) return frozen_next, p, nil end, __metatable = false,
  })
end

local route, cells, mode = nil, nil, "first"

-- Sets back what the last call changed in the frozen top level.
local function restore()
  for i = undone, 1, -3 do raw_rawset(undo[i - 2], undo[i - 1], undo[i]) end
  if undone > 0 then undo, undone = {}, 0 end
  for i = 1, #cells do
    local cell = cells[i]
    setupvalue(cell[1], cell[2], cell[3])
  end
  call_loaded, loading = {}, {}
end

local function run_top_level()
  local env = new_env()
  impure = false
  -- A top level that fails leaves the libraries marking, but its state is dropped.
  mark_impure(true)
  env.require("default")
  mark_impure(false)
  return env
end

local function begin()
  randomseed()
  if mode == "frozen" then
    restore()
    return route
  end
  local env = run_top_level()
  if mode == "first" and not impure and type(env.route) == "function" then
    local roots = { env }
    for k, m in next, call_loaded do loaded[k] = m; roots[#roots + 1] = m end
    call_loaded = {}
    local tables, found = reachable(roots)
    if tables then
      for i = 1, #tables do freeze(tables[i]) end
      route, cells, mode = env.route, found, "frozen"
      return route
    end
  end
  mode = "fresh"
  return env.route
end

local methods, current_call = {}, nil
for _, name in next, {
  "dial", "answer", "reject", "redirect", "hangup", "play", "say_digits", "say_number",
  "tone", "read_digits", "record", "record_call", "music",
} do
  methods[name] = function(self, ...)
    if not rawequal(self, current_call) then
      error("call." .. name .. " is a method: write call:" .. name .. "(...)", 2)
    end
    local ok, result, status, sip_code, answered_by, duration = yield(name, ...)
    if not ok then error(result, 2) end
    if name == "dial" then
      return {
        answered = result, status = status, sip_code = sip_code, answered_by = answered_by,
        duration = duration,
      }
    end
    return result
  end
end
local headers = prims.headers
local call_mt = {
  __index = function(t, k)
    local m = methods[k]
    if m ~= nil then return m end
    if (k == "headers" or k == "all_headers") and raw_rawget(t, "headers") == nil then
      local first, all = headers()
      raw_rawset(t, "headers", first)
      raw_rawset(t, "all_headers", all)
      return raw_rawget(t, k)
    end
  end,
  __metatable = "call",
}

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

return begin, bind, frozen
"#;

/// The prelude's map of frozen tables to what they hold, kept for [`readable`].
struct Frozen(Table);

/// What the Rust side reads of a table a script passed: the table itself, or for a
/// table the plan's top level built (frozen, see the prelude), the table holding its
/// contents, since Rust reads tables raw.
pub(crate) fn readable(lua: &Lua, table: Table) -> Table {
    frozen_contents(lua, &table).unwrap_or(table)
}

/// What a frozen table holds; `None` for any other table.
fn frozen_contents(lua: &Lua, table: &Table) -> Option<Table> {
    let frozen = lua.app_data_ref::<Frozen>()?;
    frozen.0.raw_get::<Option<Table>>(table).ok().flatten()
}

/// The key under which a value derived from `table` can be kept across calls: `Some`
/// only for a table the frozen top level built, while the running call has written to
/// none of those (what a call writes is undone after it, so a value derived before
/// any write holds for every call of the state).
pub(crate) fn unchanged_frozen(lua: &Lua, table: &Table) -> Option<usize> {
    let clean = with_scope(lua, |s| Ok(!s.frozen_written)).unwrap_or(false);
    let held = frozen_contents(lua, table).filter(|_| clean)?;
    Some(held.to_pointer() as usize)
}

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
        let libs = StdLib::COROUTINE
            | StdLib::TABLE
            | StdLib::STRING
            | StdLib::MATH
            | StdLib::UTF8
            | StdLib::OS
            | StdLib::DEBUG;
        // SAFETY: `debug` is what mlua's safe constructor refuses; the prelude takes the
        // functions it needs to freeze a top level (upvalues and raw metatables) and
        // removes the global before any script runs, and scripts run in environments
        // of their own that never hold it.
        let lua = unsafe { Lua::unsafe_new_with(libs, LuaOptions::new()) };
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
        prims.set(
            "frozen_written",
            lua.create_function(|lua, ()| {
                with_scope(lua, |s| {
                    s.frozen_written = true;
                    Ok(())
                })
            })?,
        )?;
        let assigned = lua.create_table()?;
        for (chunk, names) in &code.assigned_upvalues {
            match names {
                Some(names) => assigned.set(
                    chunk.as_str(),
                    lua.create_table_from(names.iter().map(|n| (n.as_str(), true)))?,
                )?,
                None => assigned.set(chunk.as_str(), false)?,
            }
        }
        prims.set("assigned_upvalues", assigned)?;
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
        let (begin, bind, frozen) = lua
            .load(&code.prelude[..])
            .set_mode(ChunkMode::Binary)
            .call::<(Function, Function, Table)>(prims)?;
        lua.set_app_data(Frozen(frozen));
        lua.set_app_data(time::HoursCache::default());
        Ok(Warm {
            lua,
            budget,
            begin,
            bind,
        })
    }

    /// Starts a call: its scope and limits, and the dialplan's top level as it was
    /// built (frozen and restored, or run again); returns `route`.
    pub fn begin(&self, services: &Services) -> mlua::Result<Value> {
        self.budget.reset(services.limits.instructions);
        self.lua.set_memory_limit(services.limits.memory)?;
        self.lua.set_app_data(Scope {
            services: services.clone(),
            kv_writes: 0,
            frozen_written: false,
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
