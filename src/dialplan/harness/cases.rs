//! Reading test files: each `case "name" { ... }` in `dialplans/tests/*.lua` becomes a
//! [`Case`]. Unknown keys are errors, so a typo in an expectation cannot make a test
//! pass by checking nothing.

use crate::config::Transport;
use crate::dialplan::call::{CallInfo, Party};
use crate::dialplan::sandbox::script_error;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use mlua::{Lua, LuaOptions, StdLib, Table, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// One simulated call and what it must lead to.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    /// Where the case is declared in its test file.
    pub line: Option<u32>,
    pub info: CallInfo,
    /// The wall-clock time the call arrives, in `zone`.
    pub at: DateTime,
    pub zone: TimeZone,
    /// How each target behaves when dialed; others are unregistered.
    pub targets: BTreeMap<String, Behaviour>,
    /// The key-value store before the call: (namespace, key, value).
    pub kv: Vec<(String, String, String)>,
    /// The caller hangs up this long after the call arrived (while it rings, or
    /// during a prompt, a digit read or a recording).
    pub hangup_after: Option<Duration>,
    /// The keys the caller presses, each at a time since the call arrived, in order.
    pub presses: Vec<(Duration, char)>,
    pub expect: Expect,
}

/// What a dialed target does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Answers after ringing this long and talks for `talk`.
    Answer {
        after: Duration,
        talk: Duration,
    },
    Busy,
    /// Rings until the dial gives up.
    NoAnswer,
    /// An extension with no registered phone.
    Unregistered,
    /// No such extension.
    NotFound,
    /// Refuses with this final response.
    Reject(u16),
}

/// Talk time when a test does not say.
const DEFAULT_TALK: Duration = Duration::from_secs(60);
/// When a call arrives if the test does not say: a Monday morning.
const DEFAULT_AT: &str = "2025-01-06 10:00";

/// The expectations; `None` and empty mean "not checked".
#[derive(Debug, Clone, Default)]
pub struct Expect {
    pub dialed: Option<Vec<String>>,
    pub dials: Option<Vec<DialExpect>>,
    pub bridged: Option<String>,
    pub rejected: Option<u16>,
    pub reason: Option<String>,
    pub redirected: Option<String>,
    pub hung_up: Option<bool>,
    pub caller_hung_up: Option<bool>,
    pub answered: Option<bool>,
    pub error: Option<String>,
    pub vars: Vec<(String, VarExpect)>,
    /// (namespace, key, value); `None` means the key must be absent.
    pub kv: Vec<(String, String, Option<String>)>,
    pub logged: Vec<String>,
    /// Every sound played, in order (see `SimCall::played`).
    pub played: Option<Vec<String>>,
    /// Every recording made (`call:record` and `call:record_call`), in order.
    pub recorded: Option<Vec<String>>,
    /// What each `call:read_digits` returned, in order.
    pub read_digits: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum VarExpect {
    Str(String),
    Num(f64),
    Bool(bool),
}

/// One expected `call:dial`: its targets, and the options the test names.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DialExpect {
    pub targets: Vec<String>,
    pub strategy: Option<String>,
    pub timeout: Option<f64>,
    pub caller_number: Option<String>,
    pub caller_name: Option<String>,
    pub headers: Vec<(String, String)>,
}

/// Runs a test file and collects its cases. Test files get plain Lua (no `io`, `os`
/// or `require`) and `case`.
pub fn read_cases(path: &Path, source: &[u8]) -> Result<Vec<Case>, String> {
    let lua = Lua::new_with(
        StdLib::TABLE | StdLib::STRING | StdLib::MATH | StdLib::UTF8,
        LuaOptions::new(),
    )
    .map_err(|e| e.to_string())?;
    lua.set_app_data(Vec::<Case>::new());
    let case = lua
        .create_function(|lua, name: String| {
            let line = lua
                .inspect_stack(1, |d| d.current_line())
                .flatten()
                .and_then(|l| u32::try_from(l).ok());
            lua.create_function(move |lua, spec: Table| {
                let case = parse_case(&name, line, &spec)
                    .map_err(|e| script_error(lua, format!("case {name:?}: {e}")))?;
                if let Some(mut cases) = lua.app_data_mut::<Vec<Case>>() {
                    cases.push(case);
                }
                Ok(())
            })
        })
        .map_err(|e| e.to_string())?;
    lua.globals().set("case", case).map_err(|e| e.to_string())?;
    let name = path
        .file_name()
        .map_or_else(|| "test".into(), |n| n.to_string_lossy().into_owned());
    lua.load(source)
        .set_name(format!("@{name}"))
        .set_mode(mlua::chunk::ChunkMode::Text)
        .exec()
        .map_err(|e| first_line(&e))?;
    Ok(lua.remove_app_data::<Vec<Case>>().unwrap_or_default())
}

/// The message of a test-file error without mlua's traceback noise.
fn first_line(e: &mlua::Error) -> String {
    let text = match e {
        mlua::Error::CallbackError { cause, .. } => cause.to_string(),
        other => other.to_string(),
    };
    let text = text.strip_prefix("runtime error: ").unwrap_or(&text);
    let text = text.strip_prefix("syntax error: ").unwrap_or(text);
    text.lines().next().unwrap_or_default().to_owned()
}

/// A table's string keys, checked against `allowed`.
fn fields(table: &Table, allowed: &[&str]) -> Result<BTreeMap<String, Value>, String> {
    let mut out = BTreeMap::new();
    for pair in table.pairs::<Value, Value>() {
        let (key, value) = pair.map_err(|e| e.to_string())?;
        let Value::String(key) = key else {
            return Err(format!("unexpected list entry or key {key:?}"));
        };
        let key = key.to_string_lossy();
        if !allowed.contains(&key.as_str()) {
            return Err(format!(
                "unknown key {key:?} (expected one of: {})",
                allowed.join(", ")
            ));
        }
        out.insert(key, value);
    }
    Ok(out)
}

fn string(key: &str, v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.to_string_lossy()),
        Value::Integer(i) => Ok(i.to_string()),
        other => Err(format!("{key} must be a string, not {}", other.type_name())),
    }
}

fn seconds(key: &str, v: &Value) -> Result<Duration, String> {
    let secs = match v {
        Value::Integer(i) => *i as f64,
        Value::Number(n) => *n,
        other => return Err(format!("{key} is in seconds, not {}", other.type_name())),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{key}: {secs} is not a duration"))
}

fn strings(key: &str, v: &Value) -> Result<Vec<String>, String> {
    match v {
        Value::Table(t) => t
            .sequence_values::<Value>()
            .map(|item| string(key, &item.map_err(|e| e.to_string())?))
            .collect(),
        other => Err(format!("{key} must be a list, not {}", other.type_name())),
    }
}

fn table<'v>(key: &str, v: &'v Value) -> Result<&'v Table, String> {
    match v {
        Value::Table(t) => Ok(t),
        other => Err(format!("{key} must be a table, not {}", other.type_name())),
    }
}

const CASE_KEYS: [&str; 15] = [
    "from",
    "to",
    "display",
    "auth_user",
    "request_uri",
    "headers",
    "source",
    "transport",
    "at",
    "zone",
    "targets",
    "kv",
    "hangup_after",
    "presses",
    "expect",
];

fn parse_case(name: &str, line: Option<u32>, spec: &Table) -> Result<Case, String> {
    let f = fields(spec, &CASE_KEYS)?;
    let get = |k: &str| f.get(k).filter(|v| !v.is_nil());
    let from = string("from", get("from").ok_or("from is required")?)?;
    let to = string("to", get("to").ok_or("to is required")?)?;
    let party = |user: &str, display: Option<&Value>| -> Result<Party, String> {
        Ok(Party {
            user: user.to_owned(),
            display: display.map(|d| string("display", d)).transpose()?,
            uri: format!("sip:{user}@pbx.test"),
            host: "pbx.test".into(),
        })
    };
    let auth_user = match f.get("auth_user") {
        None | Some(Value::Nil) => Some(from.clone()),
        Some(Value::Boolean(false)) => None,
        Some(v) => Some(string("auth_user", v)?),
    };
    let mut headers = Vec::new();
    if let Some(h) = get("headers") {
        for pair in table("headers", h)?.pairs::<String, String>() {
            headers.push(pair.map_err(|e| format!("headers: {e}"))?);
        }
        headers.sort();
    }
    let source: SocketAddr = match get("source") {
        Some(v) => {
            let text = string("source", v)?;
            text.parse()
                .map_err(|_| format!("source {text:?} is not ip:port"))?
        }
        None => SocketAddr::from(([192, 0, 2, 10], 5060)),
    };
    let transport = match get("transport")
        .map(|v| string("transport", v))
        .transpose()?
    {
        None => Transport::Udp,
        Some(t) if t == "udp" => Transport::Udp,
        Some(t) if t == "tcp" => Transport::Tcp,
        Some(t) => return Err(format!("transport {t:?} is not udp or tcp")),
    };
    let info = CallInfo {
        id: format!("test: {name}"),
        from: party(&from, get("display"))?,
        to: party(&to, None)?,
        request_uri: match get("request_uri") {
            Some(v) => string("request_uri", v)?,
            None => format!("sip:{to}@pbx.test"),
        },
        headers,
        source,
        transport,
        auth_user,
    };
    let at_text = match get("at") {
        Some(v) => string("at", v)?,
        None => DEFAULT_AT.into(),
    };
    let at = at_text
        .parse::<DateTime>()
        .map_err(|_| format!("at {at_text:?} is not a time like \"2025-03-03 09:30\""))?;
    let zone = match get("zone") {
        Some(v) => {
            let name = string("zone", v)?;
            TimeZone::get(&name).map_err(|_| format!("unknown time zone {name:?}"))?
        }
        None => TimeZone::UTC,
    };
    let mut targets = BTreeMap::new();
    if let Some(t) = get("targets") {
        for pair in table("targets", t)?.pairs::<String, Value>() {
            let (target, behaviour) = pair.map_err(|e| format!("targets: {e}"))?;
            let behaviour =
                parse_behaviour(&behaviour).map_err(|e| format!("targets[{target:?}]: {e}"))?;
            targets.insert(target, behaviour);
        }
    }
    let kv = match get("kv") {
        Some(v) => parse_kv(v)?
            .into_iter()
            .map(|(ns, k, v)| {
                v.map(|v| (ns, k, v))
                    .ok_or("kv: false only makes sense in expect.kv")
            })
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    let hangup_after = get("hangup_after")
        .map(|v| seconds("hangup_after", v))
        .transpose()?;
    let presses = get("presses")
        .map(parse_presses)
        .transpose()?
        .unwrap_or_default();
    let expect = match get("expect") {
        Some(v) => parse_expect(table("expect", v)?)?,
        None => return Err("expect is required: say what the call must lead to".into()),
    };
    Ok(Case {
        name: name.to_owned(),
        line,
        info,
        at,
        zone,
        targets,
        kv,
        hangup_after,
        presses,
        expect,
    })
}

/// `{ { at = 2, digits = "1234#" }, ... }`: the keys of one press arrive together at
/// `at`, in order.
fn parse_presses(v: &Value) -> Result<Vec<(Duration, char)>, String> {
    let mut presses = Vec::new();
    for entry in table("presses", v)?.sequence_values::<Value>() {
        let entry = entry.map_err(|e| format!("presses: {e}"))?;
        let f = fields(table("presses entry", &entry)?, &["at", "digits"])?;
        let at = seconds("presses: at", f.get("at").ok_or("presses: each needs at")?)?;
        let digits = string(
            "presses: digits",
            f.get("digits").ok_or("presses: each needs digits")?,
        )?
        .to_ascii_uppercase();
        if digits.is_empty() || !digits.chars().all(crate::dialplan::api::is_key) {
            return Err(format!(
                "presses: digits {digits:?} must be keys (0-9 * # A-D)"
            ));
        }
        presses.extend(digits.chars().map(|key| (at, key)));
    }
    // Stable: the keys of one press stay in order.
    presses.sort_by_key(|&(at, _)| at);
    Ok(presses)
}

/// `"answer"`, `"busy"`, `"no-answer"`, `"unregistered"`, `"not-found"`,
/// `{ answer_after = 5, talk = 30 }` or `{ reject = 603 }`.
fn parse_behaviour(v: &Value) -> Result<Behaviour, String> {
    match v {
        Value::String(s) => match s.to_string_lossy().as_str() {
            "answer" => Ok(Behaviour::Answer {
                after: Duration::ZERO,
                talk: DEFAULT_TALK,
            }),
            "busy" => Ok(Behaviour::Busy),
            "no-answer" => Ok(Behaviour::NoAnswer),
            "unregistered" => Ok(Behaviour::Unregistered),
            "not-found" => Ok(Behaviour::NotFound),
            other => Err(format!(
                "{other:?} is not a behaviour (answer, busy, no-answer, unregistered, not-found, {{answer_after = s, talk = s}}, {{reject = code}})"
            )),
        },
        Value::Table(t) => {
            let f = fields(t, &["answer_after", "talk", "reject"])?;
            if let Some(code) = f.get("reject") {
                return match code {
                    Value::Integer(c) if (400..=699).contains(c) => {
                        Ok(Behaviour::Reject(*c as u16))
                    }
                    _ => Err("reject must be a status code 400 to 699".into()),
                };
            }
            Ok(Behaviour::Answer {
                after: f
                    .get("answer_after")
                    .map(|v| seconds("answer_after", v))
                    .transpose()?
                    .unwrap_or(Duration::ZERO),
                talk: f
                    .get("talk")
                    .map(|v| seconds("talk", v))
                    .transpose()?
                    .unwrap_or(DEFAULT_TALK),
            })
        }
        other => Err(format!(
            "expected a string or a table, not {}",
            other.type_name()
        )),
    }
}

/// `{ namespace = { key = "value" or false } }`.
fn parse_kv(v: &Value) -> Result<Vec<(String, String, Option<String>)>, String> {
    let mut out = Vec::new();
    for pair in table("kv", v)?.pairs::<String, Table>() {
        let (ns, entries) = pair.map_err(|e| format!("kv: {e}"))?;
        for entry in entries.pairs::<Value, Value>() {
            let (key, value) = entry.map_err(|e| format!("kv.{ns}: {e}"))?;
            let key = string(&format!("kv.{ns} key"), &key)?;
            let value = match value {
                Value::Boolean(false) => None,
                other => Some(string(&format!("kv.{ns}.{key}"), &other)?),
            };
            out.push((ns.clone(), key, value));
        }
    }
    out.sort();
    Ok(out)
}

const EXPECT_KEYS: [&str; 16] = [
    "dialed",
    "dials",
    "bridged",
    "rejected",
    "reason",
    "redirected",
    "hung_up",
    "caller_hung_up",
    "answered",
    "error",
    "vars",
    "kv",
    "logged",
    "played",
    "recorded",
    "read_digits",
];

fn parse_expect(t: &Table) -> Result<Expect, String> {
    let f = fields(t, &EXPECT_KEYS)?;
    let text = |k: &str| f.get(k).map(|v| string(k, v)).transpose();
    let flag = |k: &str| match f.get(k) {
        None => Ok(None),
        Some(Value::Boolean(b)) => Ok(Some(*b)),
        Some(other) => Err(format!(
            "{k} must be true or false, not {}",
            other.type_name()
        )),
    };
    let list = |k: &str| f.get(k).map(|v| strings(k, v)).transpose();
    let dialed = list("dialed")?;
    let rejected = match f.get("rejected") {
        None => None,
        Some(Value::Integer(c)) if (300..=699).contains(c) => Some(*c as u16),
        Some(_) => return Err("rejected must be a status code".into()),
    };
    let mut vars = Vec::new();
    if let Some(v) = f.get("vars") {
        for pair in table("vars", v)?.pairs::<String, Value>() {
            let (name, value) = pair.map_err(|e| format!("vars: {e}"))?;
            let value = match value {
                Value::String(s) => VarExpect::Str(s.to_string_lossy()),
                Value::Integer(i) => VarExpect::Num(i as f64),
                Value::Number(n) => VarExpect::Num(n),
                Value::Boolean(b) => VarExpect::Bool(b),
                other => {
                    return Err(format!(
                        "vars.{name}: {} cannot be compared",
                        other.type_name()
                    ));
                }
            };
            vars.push((name, value));
        }
        vars.sort_by(|a, b| a.0.cmp(&b.0));
    }
    let dials = match f.get("dials") {
        None => None,
        Some(v) => Some(
            table("dials", v)?
                .sequence_values::<Table>()
                .map(|d| parse_dial_expect(&d.map_err(|e| format!("dials: {e}"))?))
                .collect::<Result<_, _>>()?,
        ),
    };
    Ok(Expect {
        dialed,
        dials,
        bridged: text("bridged")?,
        rejected,
        reason: text("reason")?,
        redirected: text("redirected")?,
        hung_up: flag("hung_up")?,
        caller_hung_up: flag("caller_hung_up")?,
        answered: flag("answered")?,
        error: text("error")?,
        vars,
        kv: f.get("kv").map(parse_kv).transpose()?.unwrap_or_default(),
        logged: list("logged")?.unwrap_or_default(),
        played: list("played")?,
        recorded: list("recorded")?,
        read_digits: list("read_digits")?,
    })
}

/// `{ "1000", "1001", strategy = "parallel", timeout = 20, caller_id = {...}, headers = {...} }`.
fn parse_dial_expect(t: &Table) -> Result<DialExpect, String> {
    let mut d = DialExpect::default();
    for item in t.sequence_values::<Value>() {
        d.targets
            .push(string("dials target", &item.map_err(|e| e.to_string())?)?);
    }
    let length = t.raw_len();
    for pair in t.pairs::<Value, Value>() {
        let (key, value) = pair.map_err(|e| e.to_string())?;
        let key = match key {
            Value::Integer(i) if i >= 1 && (i as usize) <= length => continue,
            Value::String(s) => s.to_string_lossy(),
            other => return Err(format!("dials: unexpected key {other:?}")),
        };
        match key.as_str() {
            "strategy" => d.strategy = Some(string("strategy", &value)?),
            "timeout" => d.timeout = Some(seconds("timeout", &value)?.as_secs_f64()),
            "caller_id" => {
                let f = fields(table("caller_id", &value)?, &["number", "name"])?;
                d.caller_number = f.get("number").map(|v| string("number", v)).transpose()?;
                d.caller_name = f.get("name").map(|v| string("name", v)).transpose()?;
            }
            "headers" => {
                for pair in table("headers", &value)?.pairs::<String, String>() {
                    d.headers.push(pair.map_err(|e| format!("headers: {e}"))?);
                }
                d.headers.sort();
            }
            other => {
                return Err(format!(
                    "dials: unknown key {other:?} (strategy, timeout, caller_id, headers)"
                ));
            }
        }
    }
    Ok(d)
}
