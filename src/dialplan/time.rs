//! Time-of-day helpers for office hours (`time.now`, `time.weekday`, `time.is_between`,
//! `time.is_open`), reading a [`Clock`] so the test harness can say what time it is.

use super::sandbox::{readable, script_error, unchanged_frozen, unlimited, with_scope};
use jiff::Timestamp;
use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use mlua::{Lua, Table, Value};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

/// Where the dialplan's "now" comes from.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that moves only when told: the test harness sets it to the case's time and
/// advances it by the simulated ring and talk time.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<Timestamp>,
}

impl ManualClock {
    pub fn new(now: Timestamp) -> ManualClock {
        ManualClock {
            now: Mutex::new(now),
        }
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        // A Timestamp overflows only thousands of years out; stay put rather than panic.
        if let Ok(later) = jiff::SignedDuration::try_from(by).and_then(|d| now.checked_add(d)) {
            *now = later;
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}

const DAYS: [(&str, Weekday); 7] = [
    ("mon", Weekday::Monday),
    ("tue", Weekday::Tuesday),
    ("wed", Weekday::Wednesday),
    ("thu", Weekday::Thursday),
    ("fri", Weekday::Friday),
    ("sat", Weekday::Saturday),
    ("sun", Weekday::Sunday),
];

fn day_name(day: Weekday) -> &'static str {
    DAYS[usize::from(day.to_monday_zero_offset().unsigned_abs())].0
}

fn parse_day(name: &str) -> Option<Weekday> {
    DAYS.iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, d)| *d)
}

/// "HH:MM" or "HH:MM:SS" as seconds since midnight; "24:00" is the end of the day.
fn parse_time_of_day(text: &str) -> Result<u32, String> {
    let bad = || format!("{text:?} is not a time of day like \"09:30\"");
    let mut parts = text.split(':');
    let mut field = |max: u32| -> Result<u32, String> {
        match parts.next() {
            Some(p) if p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse().ok().filter(|v| *v <= max).ok_or_else(bad)
            }
            _ => Err(bad()),
        }
    };
    let (h, m) = (field(24)?, field(59)?);
    let s = if text.len() > 5 { field(59)? } else { 0 };
    if parts.next().is_some() || (h == 24 && (m, s) != (0, 0)) {
        return Err(bad());
    }
    Ok(h * 3600 + m * 60 + s)
}

/// Whether `t` (seconds since midnight) is in `[from, to)`; a range that ends before it
/// starts runs over midnight.
fn in_range(t: u32, from: u32, to: u32) -> bool {
    if from <= to {
        from <= t && t < to
    } else {
        t >= from || t < to
    }
}

/// Opening hours as a script writes them for `time.is_open`:
/// `{ ["mon-fri"] = {"09:00", "17:00"}, sat = {{"09:00", "12:00"}}, closed = {"2025-12-25"},
/// zone = "Europe/Berlin" }`.
#[derive(Debug, Default, PartialEq)]
struct Hours {
    /// Opening ranges per weekday (Monday first), in seconds since midnight.
    days: [Vec<(u32, u32)>; 7],
    closed: Vec<Date>,
    zone: Option<String>,
}

impl Hours {
    fn from_lua(lua: &Lua, table: &Table) -> Result<Hours, String> {
        let mut hours = Hours::default();
        for pair in readable(lua, table.clone()).pairs::<String, Value>() {
            let (key, value) = pair.map_err(|e| format!("keys must be strings ({e})"))?;
            match key.as_str() {
                "zone" => hours.zone = Some(expect_string(&key, &value)?),
                "closed" => {
                    for item in expect_list(lua, &key, &value)? {
                        let text = expect_string("closed", &item)?;
                        let date = text.parse::<Date>().map_err(|_| {
                            format!("closed: {text:?} is not a date like \"2025-12-25\"")
                        })?;
                        hours.closed.push(date);
                    }
                }
                spec => {
                    let ranges = parse_ranges(lua, spec, &value)?;
                    for day in parse_day_spec(spec)? {
                        hours.days[usize::from(day.to_monday_zero_offset().unsigned_abs())]
                            .extend(&ranges);
                    }
                }
            }
        }
        Ok(hours)
    }

    fn is_open(&self, date: Date, seconds: u32) -> bool {
        !self.closed.contains(&date)
            && self.days[usize::from(date.weekday().to_monday_zero_offset().unsigned_abs())]
                .iter()
                .any(|&(from, to)| in_range(seconds, from, to))
    }
}

/// "mon", "mon-fri", "fri-mon" (wrapping over the weekend).
fn parse_day_spec(spec: &str) -> Result<Vec<Weekday>, String> {
    let bad = || {
        format!("{spec:?} is not a day (mon..sun), a range of days (\"mon-fri\"), zone or closed")
    };
    let (first, last) = match spec.split_once('-') {
        Some((a, b)) => (parse_day(a).ok_or_else(bad)?, parse_day(b).ok_or_else(bad)?),
        None => {
            let d = parse_day(spec).ok_or_else(bad)?;
            (d, d)
        }
    };
    let mut days = vec![first];
    let mut day = first;
    while day != last {
        day = day.next();
        days.push(day);
    }
    Ok(days)
}

/// `{"09:00", "17:00"}` or a list of such pairs.
fn parse_ranges(lua: &Lua, spec: &str, value: &Value) -> Result<Vec<(u32, u32)>, String> {
    let items = expect_list(lua, spec, value)?;
    let pairs = if items.iter().all(|v| matches!(v, Value::Table(_))) {
        items
            .iter()
            .map(|v| expect_list(lua, spec, v))
            .collect::<Result<Vec<_>, _>>()?
    } else {
        vec![items]
    };
    pairs
        .iter()
        .map(|pair| match pair.as_slice() {
            [from, to] => {
                let from = parse_time_of_day(&expect_string(spec, from)?)?;
                let to = parse_time_of_day(&expect_string(spec, to)?)?;
                if from >= to {
                    return Err(format!(
                        "{spec}: a range must end after it starts (split hours that run past midnight over two days)"
                    ));
                }
                Ok((from, to))
            }
            _ => Err(format!(
                "{spec}: expected {{\"09:00\", \"17:00\"}} or a list of such ranges"
            )),
        })
        .collect()
}

fn expect_string(key: &str, value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => s
            .to_str()
            .map(|s| s.to_owned())
            .map_err(|e| format!("{key}: {e}")),
        other => Err(format!(
            "{key}: expected a string, not {}",
            other.type_name()
        )),
    }
}

fn expect_list(lua: &Lua, key: &str, value: &Value) -> Result<Vec<Value>, String> {
    match value {
        Value::Table(t) => readable(lua, t.clone())
            .sequence_values::<Value>()
            .collect::<mlua::Result<Vec<_>>>()
            .map_err(|e| format!("{key}: {e}")),
        other => Err(format!("{key}: expected a list, not {}", other.type_name())),
    }
}

/// The `time` library table.
pub(crate) fn library(lua: &Lua) -> mlua::Result<Table> {
    let time = lua.create_table()?;
    time.set("now", lua.create_function(now)?)?;
    time.set("weekday", lua.create_function(weekday)?)?;
    time.set("is_between", lua.create_function(is_between)?)?;
    time.set("is_open", lua.create_function(is_open)?)?;
    Ok(time)
}

/// The clock's time in `zone` (an IANA name), or in the dialplan's zone.
fn local_now(lua: &Lua, func: &str, zone: Option<&str>) -> mlua::Result<jiff::Zoned> {
    let (now, default_zone) = with_scope(lua, |s| {
        Ok((s.services.clock.now(), s.services.zone.clone()))
    })?;
    let zone = match zone {
        Some(name) => TimeZone::get(name)
            .map_err(|_| script_error(lua, format!("{func}: unknown time zone {name:?}")))?,
        None => default_zone,
    };
    Ok(now.to_zoned(zone))
}

fn seconds_of_day(now: &jiff::Zoned) -> u32 {
    // hour/minute/second are small non-negative numbers.
    let [h, m, s] = [now.hour(), now.minute(), now.second()].map(|v| v.unsigned_abs() as u32);
    h * 3600 + m * 60 + s
}

fn now(lua: &Lua, zone: Option<String>) -> mlua::Result<Table> {
    let now = local_now(lua, "time.now", zone.as_deref())?;
    let t = lua.create_table()?;
    t.set("year", now.year())?;
    t.set("month", now.month())?;
    t.set("day", now.day())?;
    t.set("hour", now.hour())?;
    t.set("min", now.minute())?;
    t.set("sec", now.second())?;
    t.set("weekday", day_name(now.weekday()))?;
    t.set("wday", now.weekday().to_monday_one_offset())?;
    t.set("date", now.date().to_string())?;
    t.set("time", format!("{:02}:{:02}", now.hour(), now.minute()))?;
    t.set("epoch", now.timestamp().as_second())?;
    t.set("zone", now.time_zone().iana_name().unwrap_or("local"))?;
    Ok(t)
}

fn weekday(lua: &Lua, zone: Option<String>) -> mlua::Result<&'static str> {
    Ok(day_name(
        local_now(lua, "time.weekday", zone.as_deref())?.weekday(),
    ))
}

fn is_between(lua: &Lua, (from, to, zone): (String, String, Option<String>)) -> mlua::Result<bool> {
    let range = parse_time_of_day(&from).and_then(|f| Ok((f, parse_time_of_day(&to)?)));
    let (from, to) = range.map_err(|e| script_error(lua, format!("time.is_between: {e}")))?;
    let now = local_now(lua, "time.is_between", zone.as_deref())?;
    Ok(in_range(seconds_of_day(&now), from, to))
}

/// Hours tables of the plan's frozen top level, parsed, by the address of what they
/// hold (see `sandbox::unchanged_frozen`): reading one costs more than the rest of a
/// route, and a plan passes the same one on every call.
#[derive(Default)]
pub(crate) struct HoursCache(RefCell<HashMap<usize, Arc<Hours>>>);

fn is_open(lua: &Lua, table: Table) -> mlua::Result<bool> {
    let key = unchanged_frozen(lua, &table);
    let cached = key.and_then(|key| {
        let cache = lua.app_data_ref::<HoursCache>()?;
        cache.0.borrow().get(&key).cloned()
    });
    let hours = match cached {
        Some(hours) => hours,
        None => {
            // Reading the table runs no script code (raw reads, no metamethods).
            let hours = unlimited(lua, || Ok(Hours::from_lua(lua, &table)))?
                .map_err(|e| script_error(lua, format!("time.is_open: {e}")))?;
            let hours = Arc::new(hours);
            if let (Some(key), Some(cache)) = (key, lua.app_data_ref::<HoursCache>()) {
                cache.0.borrow_mut().insert(key, hours.clone());
            }
            hours
        }
    };
    let now = local_now(lua, "time.is_open", hours.zone.as_deref())?;
    Ok(hours.is_open(now.date(), seconds_of_day(&now)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_of_day_parse_strictly() {
        assert_eq!(parse_time_of_day("09:30"), Ok(9 * 3600 + 30 * 60));
        assert_eq!(parse_time_of_day("23:59:59"), Ok(86399));
        assert_eq!(parse_time_of_day("24:00"), Ok(86400));
        for bad in ["9:30", "24:01", "12:60", "12", "12:00:00:00", "ab:cd", ""] {
            assert!(parse_time_of_day(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ranges_include_the_start_and_run_over_midnight() {
        let (nine, five) = (9 * 3600, 17 * 3600);
        assert!(in_range(nine, nine, five));
        assert!(!in_range(five, nine, five));
        assert!(in_range(23 * 3600, 22 * 3600, 6 * 3600));
        assert!(in_range(3600, 22 * 3600, 6 * 3600));
        assert!(!in_range(12 * 3600, 22 * 3600, 6 * 3600));
    }

    #[test]
    fn day_specs_expand_and_wrap() {
        use Weekday::*;
        assert_eq!(
            parse_day_spec("mon-wed"),
            Ok(vec![Monday, Tuesday, Wednesday])
        );
        assert_eq!(
            parse_day_spec("sat-mon"),
            Ok(vec![Saturday, Sunday, Monday])
        );
        assert_eq!(parse_day_spec("Fri"), Ok(vec![Friday]));
        assert!(parse_day_spec("moon").is_err());
    }

    #[test]
    fn hours_tables_are_read_and_checked() {
        let lua = Lua::new();
        let table: Table = lua
            .load(
                r#"return { ["mon-fri"] = {"09:00", "17:00"},
                            sat = {{"09:00", "12:00"}, {"13:00", "14:00"}},
                            closed = {"2025-12-25"}, zone = "Europe/Berlin" }"#,
            )
            .eval()
            .unwrap();
        let hours = Hours::from_lua(&lua, &table).unwrap();
        assert_eq!(hours.zone.as_deref(), Some("Europe/Berlin"));
        let date = |s: &str| s.parse::<Date>().unwrap();
        // 2025-12-24 is a Wednesday, 2025-12-27 a Saturday.
        assert!(hours.is_open(date("2025-12-24"), 9 * 3600));
        assert!(!hours.is_open(date("2025-12-24"), 17 * 3600));
        assert!(!hours.is_open(date("2025-12-25"), 10 * 3600));
        assert!(hours.is_open(date("2025-12-27"), 13 * 3600 + 1));
        assert!(!hours.is_open(date("2025-12-27"), 12 * 3600 + 1));
        assert!(!hours.is_open(date("2025-12-28"), 10 * 3600));

        for (bad, expected) in [
            ("{ moon = {'09:00', '17:00'} }", "\"moon\" is not a day"),
            ("{ mon = {'17:00', '09:00'} }", "must end after it starts"),
            ("{ mon = {'09:00'} }", "expected {\"09:00\", \"17:00\"}"),
            ("{ closed = {'25.12.2025'} }", "is not a date"),
        ] {
            let table: Table = lua.load(format!("return {bad}")).eval().unwrap();
            let err = Hours::from_lua(&lua, &table).unwrap_err();
            assert!(err.contains(expected), "{bad}: {err}");
        }
    }

    #[test]
    fn manual_clock_advances() {
        let clock = ManualClock::new(Timestamp::from_second(1000).unwrap());
        clock.advance(Duration::from_secs(25));
        assert_eq!(clock.now().as_second(), 1025);
    }
}
