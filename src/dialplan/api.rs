//! The Rust side of the script's `call` object (the prelude in `sandbox.rs` builds the
//! object itself): its headers, the argument checking and result tables of the
//! operations (`call:dial{...}`, `call:play{...}` and friends). The operations
//! themselves run in the engine (see `run.rs`), which owns the call.

use super::VarValue;
use super::call::{
    CallerId, DialRequest, DialResult, DialTarget, DigitsRequest, PlayRequest, PlayResult,
    RecordRequest, RecordResult, RecordStop, Sound, Strategy,
};
use super::sandbox::readable;
use super::say;
use crate::media::tone::Tone;
use crate::sip::Uri;
use mlua::{FromLua, Lua, MultiValue, Table, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// How long targets ring when a dial does not say.
pub const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_DIAL_TIMEOUT_SECS: f64 = 3600.0;
const MAX_TARGETS: usize = 64;
/// Sounds in one play request, after numbers and digit strings are spelled out.
const MAX_SOUNDS: usize = 256;
/// The longest tone or silence in a play request.
const MAX_SOUND_SECS: f64 = 600.0;
/// `call:read_digits` defaults and limits.
const DEFAULT_MAX_DIGITS: usize = 32;
const MAX_DIGITS: i64 = 64;
const DEFAULT_DIGIT_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_DIGIT_TIMEOUT_SECS: f64 = 600.0;
/// `call:record` defaults and limits.
const DEFAULT_RECORD_MAX: Duration = Duration::from_secs(300);
const MAX_RECORD_SECS: f64 = 3600.0;
const MAX_SILENCE_SECS: f64 = 600.0;
/// The key that ends `call:read_digits` and `call:record` when the script names none.
const DEFAULT_TERMINATORS: &str = "#";
/// Prompt names and recording paths are at most this long.
const MAX_PATH_LEN: usize = 200;
/// Headers the B2BUA writes itself for each leg; a script setting them would break the
/// B leg's dialog.
const RESERVED_HEADERS: [&str; 14] = [
    "via",
    "from",
    "to",
    "call-id",
    "cseq",
    "contact",
    "content-length",
    "content-type",
    "max-forwards",
    "route",
    "record-route",
    "authorization",
    "proxy-authorization",
    "www-authenticate",
];

/// `call.headers` (lowercase name to first value) and `call.all_headers` (every
/// header as `{name = ..., value = ...}`, in order).
pub(crate) fn header_tables(
    lua: &Lua,
    headers: &[(String, String)],
) -> mlua::Result<(Table, Table)> {
    let first = lua.create_table()?;
    let all = lua.create_table_with_capacity(headers.len(), 0)?;
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        if !first.contains_key(lower.as_str())? {
            first.raw_set(lower, value.as_str())?;
        }
        let h = lua.create_table_with_capacity(0, 2)?;
        h.raw_set("name", name.as_str())?;
        h.raw_set("value", value.as_str())?;
        all.raw_push(h)?;
    }
    Ok((first, all))
}

/// What a script asked the call to do.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Op {
    Dial(DialRequest),
    Answer,
    Reject(u16, Option<String>),
    Redirect(String),
    Hangup,
    /// `call:play`, `call:say_digits`, `call:say_number`, `call:tone`.
    Play(PlayRequest),
    ReadDigits(DigitsRequest),
    /// `file` is the checked path relative to the recordings folder; the engine makes
    /// it absolute.
    Record(RecordRequest),
    /// The checked path relative to the recordings folder.
    RecordCall(PathBuf),
    /// A hold music class, or none (silence).
    Music(Option<String>),
}

/// Reads an operation from what the prelude yielded: its name, then its arguments.
/// The error is a message for the script, raised at its calling line.
pub(crate) fn parse_op(lua: &Lua, values: MultiValue) -> Result<Op, String> {
    let mut args = values.into_iter();
    let name = match args.next() {
        Some(Value::String(s)) => s.to_string_lossy(),
        _ => return Err("internal: malformed call operation".into()),
    };
    let mut arg = || args.next().unwrap_or(Value::Nil);
    match name.as_str() {
        "dial" => parse_dial(lua, arg()).map(Op::Dial),
        "answer" => Ok(Op::Answer),
        "hangup" => Ok(Op::Hangup),
        "reject" => {
            let code = match arg() {
                Value::Integer(c) if (400..=699).contains(&c) => c as u16,
                Value::Number(n) if n.fract() == 0.0 && (400.0..=699.0).contains(&n) => n as u16,
                other => {
                    return Err(format!(
                        "call:reject(code, reason): code must be a SIP status 400 to 699, got {}",
                        describe(&other)
                    ));
                }
            };
            let reason = match arg() {
                Value::Nil => None,
                Value::String(s) => {
                    Some(one_line("call:reject reason", &s.to_string_lossy(), 128)?)
                }
                other => {
                    return Err(format!(
                        "call:reject(code, reason): reason must be a string, got {}",
                        describe(&other)
                    ));
                }
            };
            Ok(Op::Reject(code, reason))
        }
        "redirect" => match arg() {
            Value::String(s) => {
                let uri = s.to_string_lossy();
                match Uri::parse_str(&uri) {
                    Ok(u) if matches!(u.scheme(), "sip" | "sips" | "tel") => Ok(Op::Redirect(uri)),
                    _ => Err(format!(
                        "call:redirect(uri): {uri:?} is not a sip:, sips: or tel: URI"
                    )),
                }
            }
            other => Err(format!(
                "call:redirect(uri): uri must be a string, got {}",
                describe(&other)
            )),
        },
        "play" => parse_play(lua, arg()).map(Op::Play),
        "say_digits" => say_digits("call:say_digits", &arg()).and_then(play_once),
        "say_number" => say_number("call:say_number", &arg()).and_then(play_once),
        "tone" => {
            let name = arg();
            tone("call:tone", &name, &arg()).and_then(|t| play_once(vec![t]))
        }
        "read_digits" => parse_read_digits(lua, arg()).map(Op::ReadDigits),
        "record" => parse_record(lua, arg()).map(Op::Record),
        "record_call" => parse_record_call(lua, arg()).map(Op::RecordCall),
        "music" => match arg() {
            Value::String(s) => {
                let class = s.to_string_lossy();
                let plain = !class.is_empty()
                    && class
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
                    && !class.starts_with('.');
                if plain {
                    Ok(Op::Music(Some(class)))
                } else {
                    Err(format!(
                        "call:music(class): {class:?} is not a music class (a folder name under moh_dir)"
                    ))
                }
            }
            Value::Boolean(false) => Ok(Op::Music(None)),
            other => Err(format!(
                "call:music(class | false): expected a class name or false, got {}",
                describe(&other)
            )),
        },
        other => Err(format!("internal: unknown call operation {other:?}")),
    }
}

/// `call:dial("1001")` or `call:dial{ "1001", {"1002", "1003"}, strategy = "sequential",
/// timeout = 20, caller_id = { number = "100", name = "Reception" }, headers = {...} }`.
fn parse_dial(lua: &Lua, spec: Value) -> Result<DialRequest, String> {
    let mut request = DialRequest {
        targets: Vec::new(),
        strategy: Strategy::Parallel,
        timeout: DEFAULT_DIAL_TIMEOUT,
        caller_id: CallerId::default(),
        headers: Vec::new(),
    };
    let table = match spec {
        target @ (Value::String(_) | Value::Integer(_)) => {
            request.targets.push(target_value(target)?);
            return Ok(request);
        }
        Value::Table(t) => readable(lua, t),
        other => {
            return Err(format!(
                "call:dial: expected a target or a table like {{\"1001\", timeout = 20}}, got {}",
                describe(&other)
            ));
        }
    };
    for item in table.sequence_values::<Value>() {
        match item.map_err(|e| e.to_string())? {
            Value::Table(group) => {
                for member in readable(lua, group).sequence_values::<Value>() {
                    request
                        .targets
                        .push(target_value(member.map_err(|e| e.to_string())?)?);
                }
            }
            other => request.targets.push(target_value(other)?),
        }
    }
    let length = table.raw_len();
    for (key, value) in entries::<Value, Value>(&table).map_err(|e| e.to_string())? {
        let key = match key {
            Value::Integer(i) if i >= 1 && (i as usize) <= length => continue,
            Value::String(s) => s.to_string_lossy(),
            other => return Err(format!("call:dial: unexpected key {}", describe(&other))),
        };
        match key.as_str() {
            "strategy" => {
                request.strategy = match value {
                    Value::String(s) if s == "parallel" => Strategy::Parallel,
                    Value::String(s) if s == "sequential" => Strategy::Sequential,
                    other => {
                        return Err(format!(
                            "call:dial: strategy must be \"parallel\" or \"sequential\", got {}",
                            describe(&other)
                        ));
                    }
                }
            }
            "timeout" => {
                let secs = match value {
                    Value::Integer(i) => i as f64,
                    Value::Number(n) => n,
                    ref other => {
                        return Err(format!(
                            "call:dial: timeout is in seconds, got {}",
                            describe(other)
                        ));
                    }
                };
                if !(secs > 0.0 && secs <= MAX_DIAL_TIMEOUT_SECS) {
                    return Err(format!(
                        "call:dial: timeout must be between 0 and {MAX_DIAL_TIMEOUT_SECS} seconds, got {secs}"
                    ));
                }
                request.timeout = Duration::from_secs_f64(secs);
            }
            "caller_id" => request.caller_id = parse_caller_id(lua, value)?,
            "headers" => request.headers = parse_headers(lua, value)?,
            other => {
                return Err(format!(
                    "call:dial: unknown option {other:?} (strategy, timeout, caller_id, headers)"
                ));
            }
        }
    }
    if request.targets.is_empty() {
        return Err("call:dial: no targets to dial".into());
    }
    if request.targets.len() > MAX_TARGETS {
        return Err(format!("call:dial: at most {MAX_TARGETS} targets"));
    }
    Ok(request)
}

/// A target as a script wrote it: a string, or a number for an extension.
fn target_value(v: Value) -> Result<DialTarget, String> {
    match v {
        Value::String(s) => parse_target(&s.to_string_lossy()),
        Value::Integer(i) => parse_target(&i.to_string()),
        other => Err(format!(
            "call:dial: targets are strings (or lists of them), got {}",
            describe(&other)
        )),
    }
}

/// `sip:` and `sips:` URIs are dialed as they are; anything else names an extension.
pub(crate) fn parse_target(text: &str) -> Result<DialTarget, String> {
    let lower = text.get(..5).unwrap_or(text).to_ascii_lowercase();
    if lower.starts_with("sip:") || lower.starts_with("sips:") {
        return match Uri::parse_str(text) {
            Ok(Uri::Sip(_)) => Ok(DialTarget::Uri(text.to_owned())),
            _ => Err(format!("call:dial: {text:?} is not a valid SIP URI")),
        };
    }
    let valid = !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+'));
    if valid {
        Ok(DialTarget::Extension(text.to_owned()))
    } else {
        Err(format!(
            "call:dial: {text:?} is neither an extension (letters, digits, - _ . +) nor a sip: URI"
        ))
    }
}

fn parse_caller_id(lua: &Lua, value: Value) -> Result<CallerId, String> {
    let table = match value {
        Value::Table(t) => readable(lua, t),
        other => {
            return Err(format!(
                "call:dial: caller_id must be a table {{number = ..., name = ...}}, got {}",
                describe(&other)
            ));
        }
    };
    let mut id = CallerId::default();
    let pairs =
        entries::<String, Value>(&table).map_err(|e| format!("call:dial: caller_id: {e}"))?;
    for (key, value) in pairs {
        let text = match value {
            Value::String(s) => s.to_string_lossy(),
            Value::Integer(i) => i.to_string(),
            other => {
                return Err(format!(
                    "call:dial: caller_id.{key} must be a string, got {}",
                    describe(&other)
                ));
            }
        };
        match key.as_str() {
            "number" => {
                let ok = !text.is_empty()
                    && text.len() <= 32
                    && text.bytes().all(|b| {
                        b.is_ascii_alphanumeric()
                            || matches!(b, b'+' | b'*' | b'#' | b'-' | b'.' | b'_')
                    });
                if !ok {
                    return Err(format!(
                        "call:dial: caller_id.number {text:?} must be 1 to 32 digits, letters or + * # - . _"
                    ));
                }
                id.number = Some(text);
            }
            "name" => id.name = Some(one_line("call:dial: caller_id.name", &text, 64)?),
            other => {
                return Err(format!(
                    "call:dial: caller_id has number and name, not {other:?}"
                ));
            }
        }
    }
    Ok(id)
}

/// `headers = { ["X-Account"] = "42" }`, sorted by name for a stable order.
fn parse_headers(lua: &Lua, value: Value) -> Result<Vec<(String, String)>, String> {
    let table = match value {
        Value::Table(t) => readable(lua, t),
        other => {
            return Err(format!(
                "call:dial: headers must be a table of name = value, got {}",
                describe(&other)
            ));
        }
    };
    let mut headers = BTreeMap::new();
    let pairs =
        entries::<String, String>(&table).map_err(|e| format!("call:dial: headers: {e}"))?;
    for (name, value) in pairs {
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b));
        if !token {
            return Err(format!("call:dial: {name:?} is not a header name"));
        }
        if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "call:dial: the {name} header is set by switchboard and cannot be overridden"
            ));
        }
        let value = one_line(&format!("call:dial: header {name}"), &value, 1024)?;
        headers.insert(name, value);
    }
    Ok(headers.into_iter().collect())
}

/// Text that goes into a SIP header: one line, no control characters, bounded.
fn one_line(what: &str, text: &str, max: usize) -> Result<String, String> {
    if text.len() > max || text.chars().any(char::is_control) {
        return Err(format!(
            "{what} must be at most {max} bytes on one line without control characters"
        ));
    }
    Ok(text.to_owned())
}

fn play_once(sounds: Vec<Sound>) -> Result<Op, String> {
    Ok(Op::Play(PlayRequest {
        sounds: bounded("call:play", sounds)?,
        interruptible: false,
    }))
}

/// `call:play("vm-intro")` or `call:play{ "vm-theperson", { digits = "1001" },
/// "vm-isunavail", interruptible = true }`.
fn parse_play(lua: &Lua, spec: Value) -> Result<PlayRequest, String> {
    const WHAT: &str = "call:play";
    let table = match spec {
        Value::Table(t) => readable(lua, t),
        single @ Value::String(_) => {
            return Ok(PlayRequest {
                sounds: sound_entry(WHAT, lua, single)?,
                interruptible: false,
            });
        }
        other => {
            return Err(format!(
                "{WHAT}: expected a prompt name or a table like {{\"vm-intro\", interruptible = true}}, got {}",
                describe(&other)
            ));
        }
    };
    let mut request = PlayRequest {
        sounds: sounds_of(WHAT, lua, &table)?,
        interruptible: false,
    };
    for (key, value) in options(WHAT, &table, true)? {
        match key.as_str() {
            "interruptible" => request.interruptible = flag(WHAT, "interruptible", &value)?,
            other => return Err(format!("{WHAT}: unknown option {other:?} (interruptible)")),
        }
    }
    if request.sounds.is_empty() {
        return Err(format!("{WHAT}: nothing to play"));
    }
    Ok(request)
}

/// A prompt name, or a list of sounds (see [`sound_entry`]).
fn sound_list(what: &str, lua: &Lua, value: Value) -> Result<Vec<Sound>, String> {
    match value {
        Value::Table(t) => sounds_of(what, lua, &readable(lua, t)),
        other => sound_entry(what, lua, other),
    }
}

/// The sounds in a table's list part, spelled out.
fn sounds_of(what: &str, lua: &Lua, table: &Table) -> Result<Vec<Sound>, String> {
    let mut sounds = Vec::new();
    for item in table.sequence_values::<Value>() {
        sounds.extend(sound_entry(what, lua, item.map_err(|e| e.to_string())?)?);
        if sounds.len() > MAX_SOUNDS {
            break;
        }
    }
    bounded(what, sounds)
}

fn bounded(what: &str, sounds: Vec<Sound>) -> Result<Vec<Sound>, String> {
    if sounds.len() > MAX_SOUNDS {
        return Err(format!("{what}: at most {MAX_SOUNDS} sounds at once"));
    }
    Ok(sounds)
}

/// One entry of a sound list: a prompt name, `{ number = 42 }`, `{ digits = "1001" }`,
/// `{ tone = "busy", secs = 3 }` or `{ silence = 1.5 }`.
fn sound_entry(what: &str, lua: &Lua, value: Value) -> Result<Vec<Sound>, String> {
    let table = match value {
        Value::String(s) => {
            return Ok(vec![Sound::Prompt(prompt_name(
                what,
                &s.to_string_lossy(),
            )?)]);
        }
        Value::Table(t) => readable(lua, t),
        other => {
            return Err(format!(
                "{what}: sounds are prompt names or tables like {{ number = 5 }}, {{ digits = \"1001\" }}, {{ tone = \"busy\", secs = 3 }} or {{ silence = 1 }}, got {}",
                describe(&other)
            ));
        }
    };
    let mut fields = BTreeMap::new();
    for (key, value) in options(what, &table, false)? {
        if !matches!(
            key.as_str(),
            "number" | "digits" | "tone" | "secs" | "silence"
        ) {
            return Err(format!(
                "{what}: a sound table has one of number, digits, tone (with secs) or silence, not {key:?}"
            ));
        }
        fields.insert(key, value);
    }
    let secs = fields.remove("secs");
    let kinds: Vec<(String, Value)> = fields.into_iter().collect();
    match (kinds.as_slice(), &secs) {
        ([(kind, value)], None) if kind == "number" => say_number(what, value),
        ([(kind, value)], None) if kind == "digits" => say_digits(what, value),
        ([(kind, value)], None) if kind == "silence" => Ok(vec![Sound::Silence(seconds(
            what,
            "silence",
            value,
            MAX_SOUND_SECS,
        )?)]),
        ([(kind, name)], Some(secs)) if kind == "tone" => Ok(vec![tone(what, name, secs)?]),
        ([(kind, _)], None) if kind == "tone" => Err(format!(
            "{what}: a tone needs its length: {{ tone = \"busy\", secs = 3 }}"
        )),
        _ => Err(format!(
            "{what}: a sound table has exactly one of number, digits, tone (with secs) or silence"
        )),
    }
}

/// `call:say_digits("1002")`: one prompt per key.
fn say_digits(what: &str, value: &Value) -> Result<Vec<Sound>, String> {
    let text = match value {
        Value::String(s) => s.to_string_lossy(),
        Value::Integer(i) if *i >= 0 => i.to_string(),
        other => {
            return Err(format!(
                "{what}: expected a string of digits, got {}",
                describe(other)
            ));
        }
    };
    if text.len() > MAX_SOUNDS {
        return Err(format!("{what}: at most {MAX_SOUNDS} digits at once"));
    }
    let names = say::digits(&text)
        .map_err(|c| format!("{what}: {c:?} in {text:?} is not a key (0-9, * and #)"))?;
    Ok(names.into_iter().map(Sound::Prompt).collect())
}

/// `call:say_number(42)`: the number in English words (see `say.rs`). Numeric
/// strings are taken too, since the key-value store holds strings.
fn say_number(what: &str, value: &Value) -> Result<Vec<Sound>, String> {
    let n = match value {
        Value::String(s) => s.to_string_lossy().trim().parse::<i64>().ok(),
        other => whole(other),
    }
    .ok_or_else(|| format!("{what}: expected a whole number, got {}", describe(value)))?;
    let names = say::number(n).ok_or_else(|| {
        format!(
            "{what}: {n} is too large to say (at most {} either way)",
            say::MAX_NUMBER
        )
    })?;
    Ok(names.into_iter().map(Sound::Prompt).collect())
}

/// `call:tone("busy", 3)`: a call-progress tone or a DTMF key, for `secs`.
fn tone(what: &str, name: &Value, secs: &Value) -> Result<Sound, String> {
    let bad = |got: String| {
        format!(
            "{what}: the tone is ring, busy, congestion, dial, beep or one key (0-9 * # A-D), got {got}"
        )
    };
    let name = match name {
        Value::String(s) => s.to_string_lossy(),
        other => return Err(bad(describe(other))),
    };
    if name.parse::<Tone>().is_err() {
        return Err(bad(format!("{name:?}")));
    }
    let name = name.trim();
    // One spelling per tone for the B2BUA and for tests: words lowercase, keys uppercase.
    let name = if name.len() == 1 {
        name.to_ascii_uppercase()
    } else {
        name.to_ascii_lowercase()
    };
    Ok(Sound::Tone(
        name,
        seconds(what, "the length", secs, MAX_SOUND_SECS)?,
    ))
}

/// `call:read_digits{ max = 4, timeout = 5, terminators = "#", prompt = "vm-password" }`;
/// every option may be left out.
fn parse_read_digits(lua: &Lua, spec: Value) -> Result<DigitsRequest, String> {
    const WHAT: &str = "call:read_digits";
    let mut request = DigitsRequest {
        prompt: Vec::new(),
        max: DEFAULT_MAX_DIGITS,
        timeout: DEFAULT_DIGIT_TIMEOUT,
        terminators: DEFAULT_TERMINATORS.into(),
    };
    let table = match spec {
        Value::Nil => return Ok(request),
        Value::Table(t) => readable(lua, t),
        other => {
            return Err(format!(
                "{WHAT}: expected a table like {{ max = 4, timeout = 5, prompt = \"vm-password\" }}, got {}",
                describe(&other)
            ));
        }
    };
    for (key, value) in options(WHAT, &table, false)? {
        match key.as_str() {
            "max" => {
                request.max = match whole(&value) {
                    Some(n) if (1..=MAX_DIGITS).contains(&n) => n as usize,
                    _ => {
                        return Err(format!(
                            "{WHAT}: max must be a whole number from 1 to {MAX_DIGITS}, got {}",
                            describe(&value)
                        ));
                    }
                }
            }
            "timeout" => {
                request.timeout = seconds(WHAT, "timeout", &value, MAX_DIGIT_TIMEOUT_SECS)?
            }
            "terminators" => request.terminators = keys(WHAT, "terminators", &value)?,
            "prompt" => request.prompt = sound_list(WHAT, lua, value)?,
            other => {
                return Err(format!(
                    "{WHAT}: unknown option {other:?} (max, timeout, terminators, prompt)"
                ));
            }
        }
    }
    Ok(request)
}

/// `call:record{ file = "greetings/1001-unavail.wav", max_secs = 180, silence_secs = 5,
/// beep = true, terminators = "#" }`; only `file` is required.
fn parse_record(lua: &Lua, spec: Value) -> Result<RecordRequest, String> {
    const WHAT: &str = "call:record";
    let table = match spec {
        Value::Table(t) => readable(lua, t),
        other => {
            return Err(format!(
                "{WHAT}: expected a table like {{ file = \"greetings/1001.wav\", max_secs = 180 }}, got {}",
                describe(&other)
            ));
        }
    };
    let mut request = RecordRequest {
        file: PathBuf::new(),
        max: DEFAULT_RECORD_MAX,
        silence: None,
        beep: true,
        terminators: DEFAULT_TERMINATORS.into(),
    };
    let mut file = None;
    for (key, value) in options(WHAT, &table, false)? {
        match key.as_str() {
            "file" => file = Some(recording_file(WHAT, &value)?),
            "max_secs" => request.max = seconds(WHAT, "max_secs", &value, MAX_RECORD_SECS)?,
            "silence_secs" => {
                request.silence = match whole(&value) {
                    Some(0) => None,
                    _ => Some(seconds(WHAT, "silence_secs", &value, MAX_SILENCE_SECS)?),
                }
            }
            "beep" => request.beep = flag(WHAT, "beep", &value)?,
            "terminators" => request.terminators = keys(WHAT, "terminators", &value)?,
            other => {
                return Err(format!(
                    "{WHAT}: unknown option {other:?} (file, max_secs, silence_secs, beep, terminators)"
                ));
            }
        }
    }
    request.file = file.ok_or_else(|| {
        format!("{WHAT}: file is required: where the recording goes, like \"greetings/1001.wav\"")
    })?;
    Ok(request)
}

/// `call:record_call{ file = "calls/x.wav" }` or `call:record_call("calls/x.wav")`.
fn parse_record_call(lua: &Lua, spec: Value) -> Result<PathBuf, String> {
    const WHAT: &str = "call:record_call";
    let table = match spec {
        file @ Value::String(_) => return recording_file(WHAT, &file),
        Value::Table(t) => readable(lua, t),
        other => {
            return Err(format!(
                "{WHAT}: expected a table like {{ file = \"calls/1001.wav\" }}, got {}",
                describe(&other)
            ));
        }
    };
    let mut file = None;
    for (key, value) in options(WHAT, &table, false)? {
        match key.as_str() {
            "file" => file = Some(recording_file(WHAT, &value)?),
            other => return Err(format!("{WHAT}: unknown option {other:?} (file)")),
        }
    }
    file.ok_or_else(|| format!("{WHAT}: file is required, like \"calls/1001.wav\""))
}

/// A path under the recordings folder: relative, inside it, a WAV file.
fn recording_file(what: &str, value: &Value) -> Result<PathBuf, String> {
    let text = match value {
        Value::String(s) => s.to_string_lossy(),
        other => {
            return Err(format!(
                "{what}: file must be a string, got {}",
                describe(other)
            ));
        }
    };
    if text.ends_with(".wav") && relative_path(&text) {
        Ok(PathBuf::from(text))
    } else {
        Err(format!(
            "{what}: file {text:?} must be a relative path ending in .wav: letters, digits, - _ . + and / between folders, each part starting with a letter, digit, _ or + (no .., no leading /)"
        ))
    }
}

fn prompt_name(what: &str, text: &str) -> Result<String, String> {
    if relative_path(text) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{what}: {text:?} is not a prompt name (like \"vm-intro\" or \"digits/5\": letters, digits, - _ . + and / between folders)"
        ))
    }
}

/// A path that stays inside the folder it is joined to: `/`-separated parts, each
/// starting with a letter, digit, `_` or `+` (so no `..`, no hidden files, no leading
/// `/`), made of letters, digits and `- _ . +`.
fn relative_path(text: &str) -> bool {
    text.len() <= MAX_PATH_LEN
        && text.split('/').all(|part| {
            part.bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+'))
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+'))
        })
}

/// DTMF keys (0-9 * # A-D), as the B2BUA reports them: letters uppercase.
fn keys(what: &str, key: &str, value: &Value) -> Result<String, String> {
    let text = match value {
        Value::String(s) => s.to_string_lossy().to_ascii_uppercase(),
        other => {
            return Err(format!(
                "{what}: {key} must be a string of keys like \"#\", got {}",
                describe(other)
            ));
        }
    };
    if text.len() > 16 || !text.chars().all(is_key) {
        return Err(format!(
            "{what}: {key} must be keys (0-9 * # A-D), got {text:?}"
        ));
    }
    Ok(text)
}

/// A DTMF key as the engine and the B2BUA spell it.
pub(crate) fn is_key(c: char) -> bool {
    c.is_ascii_digit() || matches!(c, '*' | '#' | 'A'..='D')
}

/// The string-keyed entries of an options table; with `sequence`, its list part is
/// skipped (the caller reads it), without, a list entry is an error.
fn options(what: &str, table: &Table, sequence: bool) -> Result<Vec<(String, Value)>, String> {
    let length = table.raw_len();
    let mut named = Vec::new();
    for (key, value) in entries::<Value, Value>(table).map_err(|e| e.to_string())? {
        match key {
            Value::Integer(i) if sequence && i >= 1 && (i as usize) <= length => {}
            Value::String(s) => named.push((s.to_string_lossy(), value)),
            other => return Err(format!("{what}: unexpected key {}", describe(&other))),
        }
    }
    named.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(named)
}

fn flag(what: &str, key: &str, value: &Value) -> Result<bool, String> {
    match value {
        Value::Boolean(b) => Ok(*b),
        other => Err(format!(
            "{what}: {key} must be true or false, got {}",
            describe(other)
        )),
    }
}

fn seconds(what: &str, key: &str, value: &Value, max: f64) -> Result<Duration, String> {
    let secs = match value {
        Value::Integer(i) => *i as f64,
        Value::Number(n) => *n,
        other => {
            return Err(format!(
                "{what}: {key} must be a number of seconds, got {}",
                describe(other)
            ));
        }
    };
    if !(secs > 0.0 && secs <= max) {
        return Err(format!(
            "{what}: {key} must be more than 0 and at most {max} seconds, got {secs}"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// An integer, or a float without a fraction.
fn whole(value: &Value) -> Option<i64> {
    match value {
        Value::Integer(i) => Some(*i),
        Value::Number(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => Some(*n as i64),
        _ => None,
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Nil => "nil".into(),
        Value::Integer(i) => i.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{:?}", s.to_string_lossy()),
        other => other.type_name().into(),
    }
}

/// The fields of the table `call:dial` returns (the prelude builds the table: much
/// cheaper than through the Rust API): answered, status, sip_code, answered_by,
/// duration.
pub(crate) fn dial_result_fields(
    r: &DialResult,
) -> (bool, &'static str, Option<u16>, Option<String>, f64) {
    (
        r.answered(),
        r.status.as_str(),
        r.sip_code,
        r.answered_by.as_ref().map(|t| t.to_string()),
        r.duration.as_secs_f64(),
    )
}

/// What `call:play` returns: `{ completed = true }` or `{ completed = false, digit = "5" }`.
pub(crate) fn play_result(lua: &Lua, r: &PlayResult) -> mlua::Result<Table> {
    let t = lua.create_table_with_capacity(0, 2)?;
    t.raw_set("completed", r.completed)?;
    if let Some(digit) = r.digit {
        t.raw_set("digit", digit.to_string())?;
    }
    Ok(t)
}

/// What `call:record` returns: the file as the script named it, the length in
/// seconds, why it stopped, and the key that stopped it.
pub(crate) fn record_result(lua: &Lua, file: &str, r: &RecordResult) -> mlua::Result<Table> {
    let t = lua.create_table_with_capacity(0, 4)?;
    t.raw_set("file", file)?;
    t.raw_set("duration", r.duration.as_secs_f64())?;
    t.raw_set("reason", r.reason.as_str())?;
    if let RecordStop::Terminator(key) = r.reason {
        t.raw_set("digit", key.to_string())?;
    }
    Ok(t)
}

/// `call.vars` as the outcome reports them: string keys and scalar values; anything
/// else (tables, functions) is left out.
pub(crate) fn read_vars(call: &Table) -> BTreeMap<String, VarValue> {
    let mut vars = BTreeMap::new();
    let Ok(table) = call.raw_get::<Table>("vars") else {
        return vars;
    };
    // Values convert without failing, so the traversal runs to its end.
    let _ = table.for_each::<Value, Value>(|k, v| {
        let Value::String(k) = k else { return Ok(()) };
        let v = match v {
            Value::String(s) => VarValue::Str(s.to_string_lossy()),
            Value::Integer(i) => VarValue::Int(i),
            Value::Number(n) => VarValue::Num(n),
            Value::Boolean(b) => VarValue::Bool(b),
            _ => return Ok(()),
        };
        vars.insert(k.to_string_lossy(), v);
        Ok(())
    });
    vars
}

/// A table's pairs (raw), read in one traversal: `Table::pairs` re-enters Lua for
/// every step.
fn entries<K: FromLua, V: FromLua>(table: &Table) -> mlua::Result<Vec<(K, V)>> {
    let mut pairs = Vec::new();
    table.for_each(|k, v| {
        pairs.push((k, v));
        Ok(())
    })?;
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(lua: &Lua, src: &str) -> Result<Op, String> {
        let values: MultiValue = lua.load(src).eval().unwrap();
        parse_op(lua, values)
    }

    #[test]
    fn dial_accepts_a_string_a_list_and_nested_groups() {
        let lua = Lua::new();
        let Op::Dial(r) = op(&lua, "return 'dial', '1001'").unwrap() else {
            panic!()
        };
        assert_eq!(r.targets, vec![DialTarget::Extension("1001".into())]);
        assert_eq!(
            (r.strategy, r.timeout),
            (Strategy::Parallel, DEFAULT_DIAL_TIMEOUT)
        );

        let Op::Dial(r) = op(
            &lua,
            r#"return 'dial', { {"1000", "1001"}, "sip:bob@example.com", strategy = "sequential",
                timeout = 12.5, caller_id = { number = "600", name = "Sales" },
                headers = { ["X-Group"] = "600", ["Alert-Info"] = "<urn:alert:tone:internal>" } }"#,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            r.targets,
            vec![
                DialTarget::Extension("1000".into()),
                DialTarget::Extension("1001".into()),
                DialTarget::Uri("sip:bob@example.com".into()),
            ]
        );
        assert_eq!(r.strategy, Strategy::Sequential);
        assert_eq!(r.timeout, Duration::from_millis(12500));
        assert_eq!(
            r.caller_id,
            CallerId {
                number: Some("600".into()),
                name: Some("Sales".into())
            }
        );
        assert_eq!(
            r.headers,
            vec![
                ("Alert-Info".into(), "<urn:alert:tone:internal>".into()),
                ("X-Group".into(), "600".into())
            ]
        );
    }

    #[test]
    fn bad_dial_arguments_say_what_is_wrong() {
        let lua = Lua::new();
        for (src, expected) in [
            ("return 'dial'", "expected a target or a table"),
            ("return 'dial', {}", "no targets"),
            ("return 'dial', {'10 01'}", "neither an extension"),
            ("return 'dial', {'sip:'}", "not a valid SIP URI"),
            (
                "return 'dial', {'1001', timout = 5}",
                "unknown option \"timout\"",
            ),
            (
                "return 'dial', {'1001', timeout = 0}",
                "timeout must be between",
            ),
            (
                "return 'dial', {'1001', timeout = '5'}",
                "timeout is in seconds",
            ),
            (
                "return 'dial', {'1001', strategy = 'random'}",
                "strategy must be",
            ),
            (
                "return 'dial', {'1001', headers = {Via = 'x'}}",
                "set by switchboard",
            ),
            (
                "return 'dial', {'1001', headers = {['X-A'] = 'a\\r\\nB: c'}}",
                "one line",
            ),
            (
                "return 'dial', {'1001', caller_id = {number = '1 2'}}",
                "caller_id.number",
            ),
            (
                "return 'dial', {'1001', caller_id = {nmae = 'x'}}",
                "not \"nmae\"",
            ),
            ("return 'dial', {{true}}", "targets are strings"),
            ("return 'dial', {1001.5}", "targets are strings"),
            ("return 'reject', 200", "400 to 699, got 200"),
            ("return 'reject', 486, {}", "reason must be a string"),
            ("return 'redirect', 'bob'", "not a sip:, sips: or tel: URI"),
        ] {
            let err = op(&lua, src).unwrap_err();
            assert!(err.contains(expected), "{src}: {err}");
        }
    }

    #[test]
    fn reject_and_redirect_parse() {
        let lua = Lua::new();
        assert_eq!(
            op(&lua, "return 'reject', 486, 'Busy Here'"),
            Ok(Op::Reject(486, Some("Busy Here".into())))
        );
        assert_eq!(op(&lua, "return 'reject', 404"), Ok(Op::Reject(404, None)));
        assert_eq!(
            op(&lua, "return 'reject', 404.0"),
            Ok(Op::Reject(404, None))
        );
        assert_eq!(
            op(&lua, "return 'dial', {1001}"),
            op(&lua, "return 'dial', {'1001'}")
        );
        assert_eq!(
            op(&lua, "return 'redirect', 'sip:1001@pbx.example.com'"),
            Ok(Op::Redirect("sip:1001@pbx.example.com".into()))
        );
    }

    fn play(lua: &Lua, src: &str) -> PlayRequest {
        match op(lua, src) {
            Ok(Op::Play(r)) => r,
            other => panic!("{src}: {other:?}"),
        }
    }

    fn prompts(names: &[&str]) -> Vec<Sound> {
        names.iter().map(|n| Sound::Prompt((*n).into())).collect()
    }

    #[test]
    fn play_takes_a_name_a_list_options_and_spelled_out_entries() {
        let lua = Lua::new();
        assert_eq!(
            play(&lua, "return 'play', 'vm-intro'"),
            PlayRequest {
                sounds: prompts(&["vm-intro"]),
                interruptible: false
            }
        );
        let r = play(
            &lua,
            r#"return 'play', { "vm-theperson", { digits = "1001" }, "vm-isunavail",
                { number = 42 }, { tone = "Busy", secs = 1.5 }, { tone = "a", secs = 1 },
                { silence = 2 }, "custom/welcome.wav", interruptible = true }"#,
        );
        let mut want = prompts(&[
            "vm-theperson",
            "digits/1",
            "digits/0",
            "digits/0",
            "digits/1",
            "vm-isunavail",
            "digits/40",
            "digits/2",
        ]);
        want.extend([
            Sound::Tone("busy".into(), Duration::from_millis(1500)),
            Sound::Tone("A".into(), Duration::from_secs(1)),
            Sound::Silence(Duration::from_secs(2)),
            Sound::Prompt("custom/welcome.wav".into()),
        ]);
        assert_eq!(
            r,
            PlayRequest {
                sounds: want,
                interruptible: true
            }
        );
    }

    #[test]
    fn say_and_tone_are_plays() {
        let lua = Lua::new();
        assert_eq!(
            play(&lua, "return 'say_digits', '*10#'").sounds,
            prompts(&["digits/star", "digits/1", "digits/0", "digits/pound"])
        );
        assert_eq!(
            play(&lua, "return 'say_digits', 1002").sounds,
            prompts(&["digits/1", "digits/0", "digits/0", "digits/2"])
        );
        assert_eq!(
            play(&lua, "return 'say_number', 115").sounds,
            prompts(&["digits/1", "digits/hundred", "digits/15"])
        );
        assert_eq!(
            play(&lua, "return 'say_number', ' -3 '").sounds,
            prompts(&["digits/minus", "digits/3"])
        );
        assert_eq!(
            play(&lua, "return 'say_number', 20.0").sounds,
            prompts(&["digits/20"])
        );
        assert_eq!(
            play(&lua, "return 'tone', 'RING', 3").sounds,
            [Sound::Tone("ring".into(), Duration::from_secs(3))]
        );
        assert_eq!(
            play(&lua, "return 'tone', '#', 0.25").sounds,
            [Sound::Tone("#".into(), Duration::from_millis(250))]
        );
    }

    #[test]
    fn read_digits_has_defaults_and_takes_options() {
        let lua = Lua::new();
        assert_eq!(
            op(&lua, "return 'read_digits'"),
            Ok(Op::ReadDigits(DigitsRequest {
                prompt: Vec::new(),
                max: DEFAULT_MAX_DIGITS,
                timeout: DEFAULT_DIGIT_TIMEOUT,
                terminators: "#".into(),
            }))
        );
        assert_eq!(
            op(
                &lua,
                "return 'read_digits', { max = 4, timeout = 2.5, terminators = '*#', prompt = { 'vm-login', { digits = '7' } } }"
            ),
            Ok(Op::ReadDigits(DigitsRequest {
                prompt: prompts(&["vm-login", "digits/7"]),
                max: 4,
                timeout: Duration::from_millis(2500),
                terminators: "*#".into(),
            }))
        );
        let Ok(Op::ReadDigits(r)) = op(
            &lua,
            "return 'read_digits', { prompt = 'vm-password', terminators = '' }",
        ) else {
            panic!()
        };
        assert_eq!(
            (r.prompt, r.terminators),
            (prompts(&["vm-password"]), String::new())
        );
    }

    #[test]
    fn record_and_record_call_take_relative_wav_paths() {
        let lua = Lua::new();
        assert_eq!(
            op(
                &lua,
                "return 'record', { file = 'greetings/1001-unavail.wav' }"
            ),
            Ok(Op::Record(RecordRequest {
                file: "greetings/1001-unavail.wav".into(),
                max: DEFAULT_RECORD_MAX,
                silence: None,
                beep: true,
                terminators: "#".into(),
            }))
        );
        assert_eq!(
            op(
                &lua,
                "return 'record', { file = 'vm/1001/msg0001.wav', max_secs = 180, silence_secs = 5, beep = false, terminators = '#*' }"
            ),
            Ok(Op::Record(RecordRequest {
                file: "vm/1001/msg0001.wav".into(),
                max: Duration::from_secs(180),
                silence: Some(Duration::from_secs(5)),
                beep: false,
                terminators: "#*".into(),
            }))
        );
        let Ok(Op::Record(r)) = op(
            &lua,
            "return 'record', { file = 'a.wav', silence_secs = 0 }",
        ) else {
            panic!()
        };
        assert_eq!(r.silence, None);
        assert_eq!(
            op(&lua, "return 'music', 'jazz'"),
            Ok(Op::Music(Some("jazz".into())))
        );
        assert_eq!(op(&lua, "return 'music', false"), Ok(Op::Music(None)));
        assert_eq!(
            op(&lua, "return 'record_call', { file = 'calls/+4930-1.wav' }"),
            Ok(Op::RecordCall("calls/+4930-1.wav".into()))
        );
        assert_eq!(
            op(&lua, "return 'record_call', 'calls/x.wav'"),
            Ok(Op::RecordCall("calls/x.wav".into()))
        );
    }

    #[test]
    fn bad_media_arguments_say_what_is_wrong() {
        let lua = Lua::new();
        for (src, expected) in [
            ("return 'play'", "expected a prompt name or a table"),
            ("return 'play', {}", "nothing to play"),
            ("return 'play', { interruptible = true }", "nothing to play"),
            ("return 'play', '../etc/passwd'", "is not a prompt name"),
            ("return 'play', '/etc/passwd'", "is not a prompt name"),
            ("return 'play', 'vm intro'", "is not a prompt name"),
            (
                "return 'play', { 'a', interruptable = true }",
                "unknown option \"interruptable\"",
            ),
            ("return 'play', { 'a', interruptible = 1 }", "true or false"),
            ("return 'play', { 5 }", "sounds are prompt names or tables"),
            ("return 'play', { { tone = 'busy' } }", "needs its length"),
            (
                "return 'play', { { silence = 1, number = 2 } }",
                "exactly one of",
            ),
            ("return 'play', { { words = 'hi' } }", "not \"words\""),
            ("return 'play', { { silence = 0 } }", "more than 0"),
            ("return 'play', { { 'nested' } }", "unexpected key 1"),
            ("return 'say_digits', '12a'", "'a' in \"12a\" is not a key"),
            ("return 'say_digits', -1", "expected a string of digits"),
            ("return 'say_number', 1.5", "expected a whole number"),
            ("return 'say_number', 'many'", "expected a whole number"),
            ("return 'say_number', 1e12", "too large"),
            ("return 'tone', 'siren', 1", "got \"siren\""),
            (
                "return 'tone', 'busy'",
                "the length must be a number of seconds, got nil",
            ),
            ("return 'tone', 'busy', 601", "at most 600 seconds"),
            ("return 'read_digits', 4", "expected a table"),
            (
                "return 'read_digits', { max = 0 }",
                "max must be a whole number from 1 to 64",
            ),
            ("return 'read_digits', { max = 2.5 }", "max must be"),
            (
                "return 'read_digits', { terminator = '#' }",
                "unknown option \"terminator\"",
            ),
            (
                "return 'read_digits', { terminators = 'x' }",
                "keys (0-9 * # A-D)",
            ),
            ("return 'read_digits', { timeout = -1 }", "more than 0"),
            ("return 'read_digits', { 'vm-login' }", "unexpected key 1"),
            ("return 'record', 'a.wav'", "expected a table"),
            ("return 'record', {}", "file is required"),
            (
                "return 'record', { file = '../a.wav' }",
                "must be a relative path ending in .wav",
            ),
            (
                "return 'record', { file = 'a/../../b.wav' }",
                "relative path",
            ),
            ("return 'record', { file = '/tmp/a.wav' }", "relative path"),
            ("return 'record', { file = 'a//b.wav' }", "relative path"),
            ("return 'record', { file = '.wav' }", "relative path"),
            ("return 'record', { file = 'a.mp3' }", "ending in .wav"),
            ("return 'record', { file = 'a\\\\b.wav' }", "relative path"),
            (
                "return 'record', { file = 'a.wav', max_secs = 7200 }",
                "at most 3600",
            ),
            (
                "return 'record', { file = 'a.wav', beep = 'yes' }",
                "beep must be true or false",
            ),
            (
                "return 'record', { file = 'a.wav', maxsecs = 5 }",
                "unknown option \"maxsecs\"",
            ),
            ("return 'record_call'", "expected a table"),
            ("return 'music', '../jazz'", "is not a music class"),
            ("return 'music', true", "expected a class name or false"),
            ("return 'record_call', { file = 'x' }", "ending in .wav"),
            (
                "return 'record_call', { path = 'x.wav' }",
                "unknown option \"path\"",
            ),
        ] {
            let err = op(&lua, src).unwrap_err();
            assert!(err.contains(expected), "{src}: {err}");
        }
        let many = format!("return 'play', {{ {} }}", "'beep', ".repeat(MAX_SOUNDS + 1));
        assert!(op(&lua, &many).unwrap_err().contains("at most 256 sounds"));
        let long = format!("return 'say_digits', '{}'", "1".repeat(MAX_SOUNDS + 1));
        assert!(op(&lua, &long).unwrap_err().contains("at most 256 digits"));
    }
}
