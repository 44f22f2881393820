//! The Rust side of the script's `call` object (the prelude in `sandbox.rs` builds the
//! object itself): its headers, the argument checking and result tables of the
//! operations (`call:dial{...}` and friends). The operations themselves run in the
//! engine (see `run.rs`), which owns the call.

use super::VarValue;
use super::call::{CallerId, DialRequest, DialResult, DialTarget, Strategy};
use super::sandbox::readable;
use crate::sip::Uri;
use mlua::{FromLua, Lua, MultiValue, Table, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// How long targets ring when a dial does not say.
pub const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_DIAL_TIMEOUT_SECS: f64 = 3600.0;
const MAX_TARGETS: usize = 64;
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
}
