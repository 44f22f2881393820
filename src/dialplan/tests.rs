//! The engine end to end with a recording [`CallControl`]: the sandbox, the limits,
//! how calls end, errors, isolation between calls and reloads under running calls.

use super::call::{
    DigitsRequest, PlayRequest, PlayResult, RecordRequest, RecordResult, RecordStop, Sound,
};
use super::*;
use jiff::Timestamp;
use std::collections::VecDeque;
use std::path::Path;
use std::time::Duration;
use tokio::sync::oneshot;

/// Records every operation; dials return queued results (no-answer when none left),
/// optionally announcing the dial and waiting for a gate first. Plays complete (or
/// fail with `media_error`), digit reads return queued strings, recordings stop with
/// `record_stop` after 3 s.
struct Recorder {
    info: CallInfo,
    results: VecDeque<DialResult>,
    dialing: Option<oneshot::Sender<()>>,
    gate: Option<oneshot::Receiver<()>>,
    wait_in_dial: Option<Duration>,
    digits: VecDeque<String>,
    record_stop: RecordStop,
    media_error: Option<CallError>,
    ops: Vec<String>,
}

impl Recorder {
    fn new() -> Recorder {
        Recorder {
            info: CallInfo {
                id: "test".into(),
                from: Party {
                    user: "1001".into(),
                    display: Some("Alice".into()),
                    uri: "sip:1001@pbx".into(),
                    host: "pbx".into(),
                },
                to: Party {
                    user: "1002".into(),
                    display: None,
                    uri: "sip:1002@pbx".into(),
                    host: "pbx".into(),
                },
                request_uri: "sip:1002@pbx".into(),
                headers: vec![
                    ("User-Agent".into(), "desk phone".into()),
                    ("X-Tag".into(), "a".into()),
                    ("x-tag".into(), "b".into()),
                ],
                source: "192.0.2.7:5062".parse().unwrap(),
                transport: crate::config::Transport::Tcp,
                auth_user: Some("1001".into()),
            },
            results: VecDeque::new(),
            dialing: None,
            gate: None,
            wait_in_dial: None,
            digits: VecDeque::new(),
            record_stop: RecordStop::Terminator('#'),
            media_error: None,
            ops: Vec::new(),
        }
    }

    fn answering(mut self, target: &str) -> Recorder {
        self.results.push_back(DialResult {
            status: DialStatus::Answered,
            sip_code: Some(200),
            answered_by: Some(DialTarget::Extension(target.into())),
            duration: Duration::from_secs(42),
        });
        self
    }

    fn failing(mut self, status: DialStatus, code: Option<u16>) -> Recorder {
        self.results.push_back(DialResult {
            status,
            sip_code: code,
            answered_by: None,
            duration: Duration::ZERO,
        });
        self
    }
}

impl CallControl for Recorder {
    fn info(&self) -> &CallInfo {
        &self.info
    }

    async fn dial(&mut self, request: DialRequest) -> DialResult {
        let targets: Vec<String> = request.targets.iter().map(|t| t.to_string()).collect();
        self.ops.push(format!("dial {}", targets.join(",")));
        if let Some(dialing) = self.dialing.take() {
            let _ = dialing.send(());
        }
        if let Some(gate) = self.gate.take() {
            let _ = gate.await;
        }
        if let Some(wait) = self.wait_in_dial {
            tokio::time::sleep(wait).await;
        }
        self.results.pop_front().unwrap_or(DialResult {
            status: DialStatus::NoAnswer,
            sip_code: None,
            answered_by: None,
            duration: Duration::ZERO,
        })
    }

    async fn answer(&mut self) -> Result<(), CallError> {
        self.ops.push("answer".into());
        Ok(())
    }

    async fn reject(&mut self, code: u16, reason: Option<String>) -> Result<(), CallError> {
        self.ops.push(match reason {
            Some(r) => format!("reject {code} {r}"),
            None => format!("reject {code}"),
        });
        Ok(())
    }

    async fn redirect(&mut self, uri: String) -> Result<(), CallError> {
        self.ops.push(format!("redirect {uri}"));
        Ok(())
    }

    async fn hangup(&mut self) -> Result<(), CallError> {
        self.ops.push("hangup".into());
        Ok(())
    }

    async fn play(&mut self, request: PlayRequest) -> Result<PlayResult, CallError> {
        let mut op = format!("play {}", sounds(&request.sounds));
        if request.interruptible {
            op += " interruptible";
        }
        self.ops.push(op);
        if let Some(e) = self.media_error.take() {
            return Err(e);
        }
        Ok(PlayResult {
            completed: true,
            digit: None,
        })
    }

    async fn read_digits(&mut self, request: DigitsRequest) -> Result<String, CallError> {
        self.ops.push(format!(
            "read_digits {} max={} timeout={:?} terminators={}",
            sounds(&request.prompt),
            request.max,
            request.timeout,
            request.terminators
        ));
        Ok(self.digits.pop_front().unwrap_or_default())
    }

    async fn record(&mut self, request: RecordRequest) -> Result<RecordResult, CallError> {
        self.ops.push(format!(
            "record {} max={:?} silence={:?} beep={} terminators={}",
            request.file.display(),
            request.max,
            request.silence,
            request.beep,
            request.terminators
        ));
        Ok(RecordResult {
            file: request.file,
            duration: Duration::from_secs(3),
            reason: self.record_stop,
        })
    }

    async fn record_call(&mut self, file: std::path::PathBuf) -> Result<(), CallError> {
        self.ops.push(format!("record_call {}", file.display()));
        Ok(())
    }

    async fn set_music(&mut self, class: Option<String>) -> Result<(), CallError> {
        self.ops
            .push(format!("music {}", class.as_deref().unwrap_or("off")));
        Ok(())
    }
}

/// Sounds as `vm-intro,tone:busy:3s,silence:1.5s`.
fn sounds(sounds: &[Sound]) -> String {
    let names: Vec<String> = sounds
        .iter()
        .map(|s| match s {
            Sound::Prompt(name) => name.clone(),
            Sound::Tone(name, length) => format!("tone:{name}:{length:?}"),
            Sound::Silence(length) => format!("silence:{length:?}"),
        })
        .collect();
    names.join(",")
}

fn plan_dir(route: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("default.lua"), route).unwrap();
    dir
}

fn services() -> Services {
    Services::new(Arc::new(MemoryKv::default()))
}

async fn run_with(route: &str, call: &mut Recorder, services: &Services) -> RouteOutcome {
    let dir = plan_dir(route);
    let plan = Dialplan::load(dir.path()).unwrap();
    plan.run(call, services).await
}

async fn run(route: &str, call: &mut Recorder) -> RouteOutcome {
    run_with(route, call, &services()).await
}

fn var<'o>(outcome: &'o RouteOutcome, name: &str) -> Option<&'o VarValue> {
    outcome.vars.get(name)
}

fn text(s: &str) -> Option<VarValue> {
    Some(VarValue::Str(s.into()))
}

#[tokio::test]
async fn the_sandbox_leaves_out_what_scripts_must_not_have() {
    let route = r#"
        function route(call)
          local present = {}
          local function check(name, value) if value ~= nil then present[#present + 1] = name end end
          check("io", io) check("package", package) check("load", load) check("dofile", dofile)
          check("loadfile", loadfile) check("collectgarbage", collectgarbage)
          check("coroutine", coroutine) check("string.dump", string.dump)
          check("os.execute", os.execute) check("os.getenv", os.getenv) check("os.remove", os.remove)
          check("os.exit", os.exit) check("debug.getinfo", debug.getinfo) check("debug.sethook", debug.sethook)
          call.vars.present = table.concat(present, " ")
          call.vars.kept = type(os.time) .. type(os.date) .. type(os.clock) .. type(debug.traceback)
          call.vars.traceback = debug.traceback("here")
        end"#;
    let outcome = run(route, &mut Recorder::new()).await;
    assert_eq!(outcome.error, None);
    assert_eq!(var(&outcome, "present"), text("").as_ref());
    assert_eq!(
        var(&outcome, "kept"),
        text("functionfunctionfunctionfunction").as_ref()
    );
    let Some(VarValue::Str(tb)) = var(&outcome, "traceback") else {
        panic!("{outcome:?}")
    };
    assert!(
        tb.starts_with("here\nstack traceback:") && tb.contains("default.lua:12"),
        "{tb}"
    );
}

#[tokio::test]
async fn require_loads_only_modules_of_the_folder() {
    let dir = plan_dir(
        r#"function route(call)
             call.vars.office = require("office").name
             call.vars.same = require("office") == require("office")
             local ok, err = pcall(require, "../secrets")
             call.vars.escape = err
             ok, err = pcall(require, "os")
             call.vars.stdlib = err
           end"#,
    );
    std::fs::write(dir.path().join("office.lua"), "return { name = 'ACME' }").unwrap();
    let plan = Dialplan::load(dir.path()).unwrap();
    let outcome = plan.run(&mut Recorder::new(), &services()).await;
    assert_eq!(outcome.error, None);
    assert_eq!(var(&outcome, "office"), text("ACME").as_ref());
    assert_eq!(var(&outcome, "same"), Some(&VarValue::Bool(true)));
    for name in ["escape", "stdlib"] {
        let Some(VarValue::Str(err)) = var(&outcome, name) else {
            panic!("{outcome:?}")
        };
        assert!(err.contains("not found"), "{name}: {err}");
    }
}

#[tokio::test]
async fn a_runaway_loop_is_stopped_and_the_call_refused_with_500() {
    let mut call = Recorder::new();
    let outcome = run("function route(call)\n  while true do end\nend", &mut call).await;
    let error = outcome.error.unwrap();
    assert_eq!(error.line, Some(2));
    assert!(error.message.contains("instruction budget"), "{error}");
    assert_eq!(call.ops, ["reject 500"]);
}

#[tokio::test]
async fn pcall_cannot_swallow_a_spent_budget() {
    let mut call = Recorder::new();
    let outcome = run(
        "function route(call)\n  while true do pcall(function() while true do end end) end\nend",
        &mut call,
    )
    .await;
    let error = outcome.error.unwrap();
    assert!(error.message.contains("instruction budget"), "{error}");
    assert_eq!(call.ops, ["reject 500"]);
}

#[tokio::test]
async fn a_script_that_eats_memory_is_stopped() {
    let mut services = services();
    services.limits.memory = 1 << 20;
    let mut call = Recorder::new();
    let outcome = run_with(
        "function route(call)\n  local t = {}\n  for i = 1, 1e9 do t[i] = ('x'):rep(64) .. i end\nend",
        &mut call,
        &services,
    )
    .await;
    let error = outcome.error.unwrap();
    assert!(error.message.contains("memory"), "{error}");
    assert_eq!(call.ops, ["reject 500"]);
}

#[tokio::test]
async fn finalizers_are_refused() {
    let outcome = run(
        "function route(call)\n  setmetatable({}, { __gc = function() end })\nend",
        &mut Recorder::new(),
    )
    .await;
    let error = outcome.error.unwrap();
    assert_eq!(error.line, Some(2));
    assert!(error.message.contains("__gc"), "{error}");
}

#[tokio::test]
async fn a_script_error_names_file_and_line_and_refuses_with_500() {
    let mut call = Recorder::new();
    let outcome = run(
        "local function helper(t)\n  return t.missing.field\nend\nfunction route(call)\n  call.vars.before = 1\n  helper({})\nend",
        &mut call,
    )
    .await;
    let error = outcome.error.clone().unwrap();
    assert!(error.file.unwrap().ends_with("default.lua"));
    assert_eq!(error.line, Some(2));
    assert!(
        error.message.contains("attempt to index a nil value"),
        "{}",
        error.message
    );
    let traceback = error.traceback.unwrap();
    assert!(traceback.contains("default.lua:6"), "{traceback}");
    assert_eq!(call.ops, ["reject 500"]);
    assert_eq!(var(&outcome, "before"), Some(&VarValue::Int(1)));
}

#[tokio::test]
async fn an_error_after_answering_hangs_up_instead() {
    let mut call = Recorder::new();
    let outcome = run(
        "function route(call)\n  call:answer()\n  error('boom')\nend",
        &mut call,
    )
    .await;
    assert_eq!(outcome.error.unwrap().line, Some(3));
    assert_eq!(call.ops, ["answer", "hangup"]);
}

#[tokio::test]
async fn a_route_that_decides_nothing_gets_the_last_dials_failure_or_404() {
    let mut call = Recorder::new();
    run("function route(call) end", &mut call).await;
    assert_eq!(call.ops, ["reject 404"]);

    let mut call = Recorder::new().failing(DialStatus::Busy, Some(486));
    run("function route(call) call:dial('1002') end", &mut call).await;
    assert_eq!(call.ops, ["dial 1002", "reject 486"]);

    let mut call = Recorder::new().failing(DialStatus::Failed, Some(603));
    run("function route(call) call:dial('1002') end", &mut call).await;
    assert_eq!(call.ops, ["dial 1002", "reject 603"]);

    let mut call = Recorder::new().answering("1002");
    run("function route(call) call:dial('1002') end", &mut call).await;
    assert_eq!(call.ops, ["dial 1002"]);

    let mut call = Recorder::new();
    run("function route(call) call:answer() end", &mut call).await;
    assert_eq!(call.ops, ["answer", "hangup"]);
}

#[tokio::test]
async fn dial_results_reach_the_script() {
    let mut call = Recorder::new()
        .failing(DialStatus::NoAnswer, None)
        .answering("1003");
    let outcome = run(
        r#"function route(call)
             local r = call:dial{ "1002", timeout = 5 }
             call.vars.first = r.status .. " " .. tostring(r.answered) .. " " .. tostring(r.sip_code)
             r = call:dial{ {"1003", "sip:bob@example.com"}, strategy = "sequential" }
             call.vars.second = r.status .. " " .. r.answered_by .. " " .. r.sip_code .. " " .. r.duration
           end"#,
        &mut call,
    )
    .await;
    assert_eq!(outcome.error, None);
    assert_eq!(var(&outcome, "first"), text("no-answer false nil").as_ref());
    assert_eq!(
        var(&outcome, "second"),
        text("answered 1003 200 42.0").as_ref()
    );
    assert_eq!(call.ops, ["dial 1002", "dial 1003,sip:bob@example.com"]);
}

#[tokio::test]
async fn once_the_call_is_over_the_script_stops_at_its_next_operation() {
    let mut call = Recorder::new().answering("1002");
    let outcome = run(
        "function route(call)\n  call:dial('1002')\n  call.vars.after = true\n  call:hangup()\n  call:reject(486)\n  call.vars.never = true\nend",
        &mut call,
    )
    .await;
    assert_eq!(outcome.error, None);
    assert_eq!(var(&outcome, "after"), Some(&VarValue::Bool(true)));
    assert_eq!(var(&outcome, "never"), None);
    assert_eq!(call.ops, ["dial 1002"]);
}

#[tokio::test]
async fn misuse_is_an_error_at_the_scripts_line() {
    for (route, line, expected, ops) in [
        (
            "function route(call)\n  call:answer()\n  call:reject(486)\nend",
            3,
            "already answered",
            vec!["answer", "hangup"],
        ),
        (
            "function route(call)\n\n  call:dial{ '1002', timout = 5 }\nend",
            3,
            "unknown option \"timout\"",
            vec!["reject 500"],
        ),
        (
            "function route(call)\n  call.dial{ '1002' }\nend",
            2,
            "write call:dial(...)",
            vec!["reject 500"],
        ),
        (
            "function route(call)\n  kv.set('ns', 'k', {})\nend",
            2,
            "kv.set: the value must be a string",
            vec!["reject 500"],
        ),
    ] {
        let mut call = Recorder::new();
        let outcome = run(route, &mut call).await;
        let error = outcome.error.unwrap_or_else(|| panic!("{route}: no error"));
        assert_eq!(error.line, Some(line), "{route}: {error}");
        assert!(error.message.contains(expected), "{route}: {error}");
        assert_eq!(call.ops, ops, "{route}");
    }
}

#[tokio::test]
async fn hangup_redirect_and_reject_end_the_call() {
    let mut call = Recorder::new();
    run("function route(call) call:hangup() end", &mut call).await;
    assert_eq!(call.ops, ["reject 480"]);

    let mut call = Recorder::new();
    run(
        "function route(call) call:redirect('sip:1003@pbx') end",
        &mut call,
    )
    .await;
    assert_eq!(call.ops, ["redirect sip:1003@pbx"]);

    let mut call = Recorder::new();
    run(
        "function route(call) call:reject(603, 'Decline') end",
        &mut call,
    )
    .await;
    assert_eq!(call.ops, ["reject 603 Decline"]);
}

#[tokio::test]
async fn operations_can_run_inside_pcall() {
    let mut call = Recorder::new().answering("1002");
    let outcome = run(
        "function route(call)\n  local ok, r = pcall(call.dial, call, { '1002' })\n  call.vars.ok = ok and r.answered\nend",
        &mut call,
    )
    .await;
    assert_eq!(outcome.error, None);
    assert_eq!(var(&outcome, "ok"), Some(&VarValue::Bool(true)));
}

#[tokio::test]
async fn the_call_facts_are_visible() {
    let outcome = run(
        r#"function route(call)
             local v = call.vars
             v.from = call.from.user .. " " .. call.from.display .. " " .. call.from.uri
             v.to = call.to.user .. " " .. tostring(call.to.display) .. " " .. call.request_uri
             v.ua = call.headers["user-agent"]
             v.tag = call.headers["x-tag"] .. " " .. #call.all_headers .. " " .. call.all_headers[3].value
             v.source = call.source.ip .. ":" .. call.source.port .. " " .. call.transport
             v.auth = call.auth_user
             v.id = call.id
           end"#,
        &mut Recorder::new(),
    )
    .await;
    assert_eq!(outcome.error, None);
    let expected = [
        ("from", "1001 Alice sip:1001@pbx"),
        ("to", "1002 nil sip:1002@pbx"),
        ("ua", "desk phone"),
        ("tag", "a 3 b"),
        ("source", "192.0.2.7:5062 tcp"),
        ("auth", "1001"),
        ("id", "test"),
    ];
    for (name, value) in expected {
        assert_eq!(var(&outcome, name), text(value).as_ref(), "{name}");
    }
}

#[tokio::test]
async fn nothing_a_call_changes_reaches_the_next() {
    // Calls reuse warm states: each one checks for what the one before it left behind,
    // then leaves all of it behind again.
    let dir = plan_dir(
        r#"count = (count or 0) + 1
           local office = require "office"
           function route(call)
             local leaks = {}
             local function check(name, ok) if not ok then leaks[#leaks + 1] = name end end
             check("global", leaked == nil and count == 1 and _G.count == 1)
             check("module", office.open == true)
             check("string", string.upper ~= nil and ("x"):upper() == "X" and ("x").shout == nil)
             check("math", math.pi > 3.14 and math.pi < 3.15)
             check("table", table.insert ~= nil and os.time ~= nil and kv.get ~= nil and log.info ~= nil)
             check("metatable", getmetatable("") == false)
             call.vars.leaks = table.concat(leaks, " ")
             leaked, office.open = true, false
             string.upper, table.insert, os.time, kv.get, log.info = nil, nil, nil, nil, nil
             math.pi = 3
             string.shout = function(s) return s .. "!" end
             call.vars.shout = ("hi"):shout()
           end"#,
    );
    std::fs::write(dir.path().join("office.lua"), "return { open = true }").unwrap();
    let plan = Dialplan::load(dir.path()).unwrap();
    for _ in 0..3 {
        let outcome = plan.run(&mut Recorder::new(), &services()).await;
        assert_eq!(outcome.error, None);
        assert_eq!(var(&outcome, "leaks"), text("").as_ref());
        assert_eq!(var(&outcome, "shout"), text("hi!").as_ref());
    }
}

#[tokio::test]
async fn what_the_top_level_built_is_the_same_for_every_call() {
    // The top level runs once per warm state and is reused: every way a call can
    // change what it built (nested tables, lists, upvalues, raw writes, a module used
    // as a metatable) is seen by that call and by none after it.
    let dir = plan_dir(
        r#"local office = require "office"
           local calls = 0
           local function bump() calls = calls + 1; return calls end
           local function counter() local n = 0; return function() n = n + 1; return n end end
           local next_id = counter()
           local Counter = { __index = {} }
           function Counter.__index.get(self) return self.n end
           function route(call)
             local leaks = {}
             local function check(name, ok) if not ok then leaks[#leaks + 1] = name end end
             check("nested", office.groups.sales.members[1] == "1001" and office.groups.sales.timeout == 20)
             check("list", #office.groups.sales.members == 2 and rawlen(office.groups.sales.members) == 2)
             check("raw", rawget(office, "name") == "ACME" and office.extra == nil)
             check("upvalue", bump() == 1 and next_id() == 1)
             local keys = 0
             for _ in pairs(office.groups) do keys = keys + 1 end
             check("pairs", keys == 1 and next(office) ~= nil)
             check("metatable", setmetatable({ n = 7 }, Counter):get() == 7 and getmetatable(setmetatable({}, Counter)) == Counter)
             call.vars.leaks = table.concat(leaks, " ")
             office.groups.sales.members[1] = "1009"
             table.insert(office.groups.sales.members, "1010")
             office.groups.sales.timeout = nil
             office.groups.support = { members = {} }
             rawset(office, "extra", true)
             office.name = nil
             Counter.__index.get = nil
             call.vars.seen = office.groups.sales.members[1] .. " " .. #office.groups.sales.members
               .. " " .. tostring(rawget(office, "extra")) .. " " .. tostring(office.name)
           end"#,
    );
    std::fs::write(
        dir.path().join("office.lua"),
        r#"return { name = "ACME", groups = { sales = { members = { "1001", "1002" }, timeout = 20 } } }"#,
    )
    .unwrap();
    let plan = Dialplan::load(dir.path()).unwrap();
    for _ in 0..3 {
        let outcome = plan.run(&mut Recorder::new(), &services()).await;
        assert_eq!(outcome.error, None);
        assert_eq!(var(&outcome, "leaks"), text("").as_ref());
        assert_eq!(var(&outcome, "seen"), text("1009 3 true nil").as_ref());
    }
}

#[tokio::test]
async fn office_hours_changed_by_a_call_are_read_as_changed_in_that_call_only() {
    // Parsed hours tables of the top level are kept between calls; a call that
    // changes one (even deep inside) must see its change, and the next call must not.
    let clock = Arc::new(ManualClock::new(
        "2025-01-06T10:15:00Z".parse::<Timestamp>().unwrap(),
    ));
    let mut services = services().with_clock(clock);
    services.zone = jiff::tz::TimeZone::UTC;
    let dir = plan_dir(
        r#"local hours = { ["mon-sun"] = { "00:00", "24:00" } }
           function route(call)
             local before = time.is_open(hours)
             hours["mon-sun"][2] = "00:01"
             call.vars.open = tostring(before) .. " " .. tostring(time.is_open(hours))
           end"#,
    );
    let plan = Dialplan::load(dir.path()).unwrap();
    for _ in 0..3 {
        let outcome = plan.run(&mut Recorder::new(), &services).await;
        assert_eq!(outcome.error, None);
        assert_eq!(var(&outcome, "open"), text("true false").as_ref());
    }
}

#[tokio::test]
async fn a_top_level_that_reads_the_store_runs_again_for_each_call() {
    // What a top level reads from the store, the clock or a random number can change
    // between calls, so such a top level is not reused.
    let kv = Arc::new(MemoryKv::default());
    let services = Services::new(kv.clone());
    let dir = plan_dir(
        r#"local mode = kv.get("plan", "mode") or "day"
           local Box = {}
           Box.__index = Box
           local shared = setmetatable({ hits = 0 }, Box)
           function route(call)
             shared.hits = shared.hits + 1
             call.vars.mode = mode .. " " .. shared.hits
           end"#,
    );
    let plan = Dialplan::load(dir.path()).unwrap();
    let outcome = plan.run(&mut Recorder::new(), &services).await;
    assert_eq!(var(&outcome, "mode"), text("day 1").as_ref());
    kv.set("plan", "mode", "night").unwrap();
    let outcome = plan.run(&mut Recorder::new(), &services).await;
    assert_eq!(var(&outcome, "mode"), text("night 1").as_ref());
}

#[tokio::test(start_paused = true)]
async fn waiting_in_dial_spends_no_budget() {
    let mut services = services();
    services.limits.instructions = 20_000;
    let mut call = Recorder::new();
    call.wait_in_dial = Some(Duration::from_secs(3600));
    let outcome = run_with(
        "function route(call)\n  for i = 1, 3 do call:dial('1002') end\nend",
        &mut call,
        &services,
    )
    .await;
    assert_eq!(outcome.error, None);
    assert_eq!(
        call.ops,
        ["dial 1002", "dial 1002", "dial 1002", "reject 480"]
    );
}

#[tokio::test]
async fn a_runaway_call_does_not_stop_another() {
    let dir = plan_dir(
        "function route(call)\n  if call.to.user == 'loop' then while true do end end\n  call:dial('1002')\nend",
    );
    let plan = Dialplan::load(dir.path()).unwrap();
    let services = services();
    let mut looping = Recorder::new();
    looping.info.to.user = "loop".into();
    let mut normal = Recorder::new().answering("1002");
    let (a, b) = tokio::join!(
        plan.run(&mut looping, &services),
        plan.run(&mut normal, &services)
    );
    assert!(a.error.is_some());
    assert_eq!(b.error, None);
    assert_eq!(looping.ops, ["reject 500"]);
    assert_eq!(normal.ops, ["dial 1002"]);
}

#[tokio::test]
async fn kv_log_and_time_reach_their_services() {
    let kv = Arc::new(MemoryKv::default());
    let clock = Arc::new(ManualClock::new(
        "2025-01-06T10:15:00Z".parse::<Timestamp>().unwrap(),
    ));
    let mut services = Services::new(kv.clone()).with_clock(clock);
    services.zone = jiff::tz::TimeZone::UTC;
    let outcome = run_with(
        r#"function route(call)
             kv.set("dnd", "1002", "on")
             kv.set("fwd", 1002, 1003)
             call.vars.dnd = kv.get("dnd", "1002")
             for key, value in pairs(kv.list("dnd")) do call.vars.listed = key .. "=" .. value end
             call.vars.deleted = kv.delete("fwd", "1002")
             call.vars.day = time.weekday()
             call.vars.now = time.now().time .. " " .. time.now().wday
             call.vars.open = time.is_between("09:00", "17:00")
             call.vars.ny = time.now("America/New_York").hour
             log.info("hello", 42, nil)
             print("printed")
           end"#,
        &mut Recorder::new(),
        &services,
    )
    .await;
    assert_eq!(outcome.error, None);
    assert_eq!(var(&outcome, "dnd"), text("on").as_ref());
    assert_eq!(var(&outcome, "listed"), text("1002=on").as_ref());
    assert_eq!(var(&outcome, "deleted"), Some(&VarValue::Bool(true)));
    assert_eq!(var(&outcome, "day"), text("mon").as_ref());
    assert_eq!(var(&outcome, "now"), text("10:15 1").as_ref());
    assert_eq!(var(&outcome, "open"), Some(&VarValue::Bool(true)));
    assert_eq!(var(&outcome, "ny"), Some(&VarValue::Int(5)));
    assert_eq!(kv.entries(), [("dnd".into(), "1002".into(), "on".into())]);
    let logs: Vec<_> = outcome
        .logs
        .iter()
        .map(|l| (l.level, l.location.as_deref(), l.message.as_str()))
        .collect();
    assert_eq!(
        logs,
        [
            (LogLevel::Info, Some("default.lua:11"), "hello 42 nil"),
            (LogLevel::Info, Some("default.lua:12"), "printed"),
        ]
    );
}

#[tokio::test]
async fn kv_writes_per_call_are_capped() {
    let outcome = run(
        "function route(call)\n  for i = 1, 1000 do kv.set('ns', tostring(i), 'v') end\nend",
        &mut Recorder::new(),
    )
    .await;
    let error = outcome.error.unwrap();
    assert_eq!(error.line, Some(2));
    assert!(error.message.contains("too many writes"), "{error}");
}

#[tokio::test]
async fn calls_in_progress_keep_their_version_across_a_reload() {
    let dir =
        plan_dir("function route(call)\n  call:dial('1002')\n  call.vars.version = 'one'\nend");
    let handle = DialplanHandle::open(dir.path(), services()).unwrap();
    let (dialing_tx, dialing) = oneshot::channel();
    let (release, gate) = oneshot::channel();
    let mut first = Recorder::new();
    first.dialing = Some(dialing_tx);
    first.gate = Some(gate);
    let running = handle.clone();
    let task = tokio::spawn(async move {
        let outcome = running.route(&mut first).await;
        (outcome, first)
    });
    dialing.await.unwrap();

    std::fs::write(
        dir.path().join("default.lua"),
        "function route(call)\n  call.vars.version = 'two'\nend",
    )
    .unwrap();
    assert_eq!(handle.reload().unwrap().version, 2);
    let second = handle.route(&mut Recorder::new()).await;
    assert_eq!(var(&second, "version"), text("two").as_ref());

    release.send(()).unwrap();
    let (outcome, first) = task.await.unwrap();
    assert_eq!(var(&outcome, "version"), text("one").as_ref());
    assert_eq!(first.ops, ["dial 1002", "reject 480"]);
}

#[test]
fn the_shipped_dialplan_passes_its_tests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("dialplans");
    let report = harness::run_tests(&dir).unwrap();
    assert!(report.success(), "{report}");
    assert!(report.passed() >= 30, "{report}");
    // With the shipped prompts' real lengths too, which also proves every prompt the
    // plan plays is shipped.
    let sounds = Path::new(env!("CARGO_MANIFEST_DIR")).join("sounds/en");
    let report = harness::run_tests_with_sounds(&dir, Some(&sounds)).unwrap();
    assert!(report.success(), "{report}");
}

#[test]
fn the_harness_reports_what_differs() {
    let dir = plan_dir("function route(call)\n  call:dial{ '1002', '1003' }\nend");
    std::fs::create_dir(dir.path().join("tests")).unwrap();
    std::fs::write(
        dir.path().join("tests/calls.lua"),
        r#"
case "passes" { from = "1001", to = "1002", targets = { ["1003"] = "answer" },
  expect = { dialed = { "1002", "1003" }, bridged = "1003" } }

case "fails" { from = "1001", to = "1002", targets = { ["1002"] = "busy" },
  expect = { rejected = 404, dialed = { "1002" } } }
"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("tests/typo.lua"),
        "case 'typo' { from = '1', to = '2', expect = { rejectd = 404 } }",
    )
    .unwrap();
    let report = harness::run_tests(dir.path()).unwrap();
    assert_eq!((report.passed(), report.failed()), (1, 2));
    let failing = &report.files[0].cases[1];
    assert_eq!(failing.line, Some(5));
    assert_eq!(
        failing.failures,
        [
            harness::Failure {
                what: "dialed".into(),
                expected: "1002".into(),
                got: "1002, 1003".into()
            },
            harness::Failure {
                what: "rejected".into(),
                expected: "rejected 404".into(),
                got: "rejected 486".into()
            },
        ]
    );
    let typo = report.files[1].error.as_deref().unwrap();
    assert!(typo.ends_with("typo.lua:1: case \"typo\": unknown key \"rejectd\" (expected one of: dialed, dials, bridged, rejected, reason, redirected, hung_up, caller_hung_up, answered, error, vars, kv, logged, played, recorded, read_digits)"), "{typo}");
    let text = report.to_string();
    assert!(text.contains("FAIL  fails (line 5)"), "{text}");
    assert!(text.ends_with("1 passed, 2 failed"), "{text}");
}

fn recording_services() -> Services {
    services().with_recordings("/var/lib/switchboard/recordings")
}

#[tokio::test]
async fn media_answers_a_ringing_call_first_and_results_reach_the_script() {
    let mut call = Recorder::new();
    call.digits.push_back("1234".into());
    let outcome = run_with(
        r##"function route(call)
             local r = call:play{ "vm-intro", interruptible = true }
             call.vars.played = tostring(r.completed) .. " " .. tostring(r.digit)
             call.vars.pin = call:read_digits{ prompt = "vm-password", max = 4, timeout = 3 }
             local rec = call:record{ file = "greetings/1001-unavail.wav", max_secs = 60, silence_secs = 4 }
             call.vars.rec = rec.file .. " " .. rec.duration .. " " .. rec.reason .. " " .. rec.digit
             call.vars.none = call:record_call{ file = "calls/1.wav" } == nil
           end"##,
        &mut call,
        &recording_services(),
    )
    .await;
    assert_eq!(outcome.error, None);
    assert_eq!(var(&outcome, "played"), text("true nil").as_ref());
    assert_eq!(var(&outcome, "pin"), text("1234").as_ref());
    assert_eq!(
        var(&outcome, "rec"),
        text("greetings/1001-unavail.wav 3.0 terminator #").as_ref()
    );
    assert_eq!(var(&outcome, "none"), Some(&VarValue::Bool(true)));
    assert_eq!(
        call.ops,
        [
            "answer",
            "play vm-intro interruptible",
            "read_digits vm-password max=4 timeout=3s terminators=#",
            "record /var/lib/switchboard/recordings/greetings/1001-unavail.wav max=60s silence=Some(4s) beep=true terminators=#",
            "record_call /var/lib/switchboard/recordings/calls/1.wav",
            "hangup",
        ]
    );
}

#[tokio::test]
async fn say_and_tone_play_prompts_and_an_answered_call_is_not_answered_again() {
    let mut call = Recorder::new();
    let outcome = run(
        "function route(call)\n  call:answer()\n  call:say_digits('10*')\n  call:say_number(1999)\n  call:tone('busy', 2)\n  call:hangup()\nend",
        &mut call,
    )
    .await;
    assert_eq!(outcome.error, None);
    assert_eq!(
        call.ops,
        [
            "answer",
            "play digits/1,digits/0,digits/star",
            "play digits/1,digits/thousand,digits/9,digits/hundred,digits/90,digits/9",
            "play tone:busy:2s",
            "hangup",
        ]
    );
}

#[tokio::test]
async fn recording_a_call_is_armed_without_answering() {
    let mut call = Recorder::new().answering("1002");
    let outcome = run_with(
        "function route(call)\n  call:record_call('calls/a.wav')\n  call:dial('1002')\nend",
        &mut call,
        &recording_services(),
    )
    .await;
    assert_eq!(outcome.error, None);
    assert_eq!(
        call.ops,
        [
            "record_call /var/lib/switchboard/recordings/calls/a.wav",
            "dial 1002"
        ]
    );
}

#[tokio::test]
async fn a_recording_the_caller_hung_up_on_is_returned_and_ends_the_call() {
    let mut call = Recorder::new();
    call.record_stop = RecordStop::Hangup;
    let outcome = run_with(
        "function route(call)\n  local r = call:record{ file = 'vm/1.wav' }\n  call.vars.reason = r.reason\n  call:hangup()\n  call:play('vm-goodbye')\n  call.vars.never = true\nend",
        &mut call,
        &recording_services(),
    )
    .await;
    assert_eq!(outcome.error, None);
    assert_eq!(var(&outcome, "reason"), text("hangup").as_ref());
    assert_eq!(var(&outcome, "never"), None);
    assert_eq!(call.ops.len(), 2, "{:?}", call.ops);
    assert_eq!(call.ops[0], "answer");
}

#[tokio::test]
async fn media_on_a_call_that_ended_stops_the_script_quietly() {
    let mut call = Recorder::new();
    call.media_error = Some(CallError::Ended);
    let outcome = run(
        "function route(call)\n  call:play('vm-intro')\n  call.vars.never = true\nend",
        &mut call,
    )
    .await;
    assert_eq!(outcome.error, None);
    assert_eq!(var(&outcome, "never"), None);
    assert_eq!(call.ops, ["answer", "play vm-intro"]);

    let mut call = Recorder::new().answering("1002");
    run(
        "function route(call)\n  call:dial('1002')\n  call:say_number(5)\nend",
        &mut call,
    )
    .await;
    assert_eq!(call.ops, ["dial 1002"]);
}

#[tokio::test]
async fn bad_media_arguments_are_errors_at_the_scripts_line_before_answering() {
    for (route, line, expected) in [
        (
            "function route(call)\n\n  call:record{ file = '../../etc/x.wav' }\nend",
            3,
            "call:record: file \"../../etc/x.wav\" must be a relative path",
        ),
        (
            "function route(call)\n  call:say_digits('12a')\nend",
            2,
            "is not a key",
        ),
        (
            "function route(call)\n  call.play('vm-intro')\nend",
            2,
            "write call:play(...)",
        ),
    ] {
        let mut call = Recorder::new();
        let outcome = run_with(route, &mut call, &recording_services()).await;
        let error = outcome.error.unwrap_or_else(|| panic!("{route}: no error"));
        assert_eq!(error.line, Some(line), "{route}: {error}");
        assert!(error.message.contains(expected), "{route}: {error}");
        assert_eq!(call.ops, ["reject 500"], "{route}");
    }
}

#[tokio::test]
async fn recording_needs_a_recordings_folder() {
    let mut call = Recorder::new();
    let outcome = run(
        "function route(call)\n  call:record{ file = 'a.wav' }\nend",
        &mut call,
    )
    .await;
    let error = outcome.error.unwrap();
    assert_eq!(error.line, Some(2));
    assert!(error.message.contains("no recordings folder"), "{error}");
    assert_eq!(call.ops, ["reject 500"]);
}

#[test]
fn recordings_are_made_absolute() {
    let services = services().with_recordings("data/recordings");
    let dir = services.recordings.unwrap();
    assert!(dir.is_absolute(), "{}", dir.display());
    assert!(dir.ends_with("data/recordings"));
}

/// A plan and its tests/*.lua in a folder.
fn plan_with_tests(route: &str, tests: &str) -> tempfile::TempDir {
    let dir = plan_dir(route);
    std::fs::create_dir(dir.path().join("tests")).unwrap();
    std::fs::write(dir.path().join("tests/media.lua"), tests).unwrap();
    dir
}

fn assert_all_pass(report: &harness::Report, cases: usize) {
    assert!(report.success(), "{report}");
    assert_eq!(report.passed(), cases, "{report}");
}

/// A small voicemail login: the simulated caller's keys, the time prompts take, what
/// was played and read.
#[test]
fn the_harness_presses_keys_and_checks_what_was_played_and_read() {
    let dir = plan_with_tests(
        r##"function route(call)
             local start = time.now().epoch
             local r = call:play{ "vm-intro", "vm-goodbye", interruptible = true }
             call.vars.key = r.digit or "none"
             call.vars.box = call:read_digits{ prompt = "vm-login", max = 4, timeout = 3 }
             call.vars.pin = call:read_digits{ prompt = { "vm-password" }, timeout = 3 }
             call.vars.took = time.now().epoch - start
           end"##,
        r##"
case "every key heard" {
  from = "1001", to = "*98",
  -- 1.5: interrupts vm-goodbye; 2: interrupts vm-login; 5: after vm-password, the 9
  -- after the # is heard by nobody
  presses = { { at = 1.5, digits = "1" }, { at = 2, digits = "1001" }, { at = 5, digits = "42#9" } },
  expect = {
    answered = true, hung_up = true,
    played = { "vm-intro", "vm-goodbye", "vm-login", "vm-password" },
    read_digits = { "1001", "42" },
    vars = { key = "1", box = "1001", pin = "42", took = 5 },
  },
}

case "nothing pressed: prompts play out and reads time out" {
  from = "1001", to = "*98",
  expect = {
    played = { "vm-intro", "vm-goodbye", "vm-login", "vm-password" },
    read_digits = { "", "" },
    vars = { key = "none", took = 10 },
  },
}

case "keys during a read's timeout restart it; max ends it" {
  from = "1001", to = "*98",
  presses = { { at = 0.5, digits = "7" }, { at = 3, digits = "1" }, { at = 5.5, digits = "2" },
              { at = 8, digits = "3" }, { at = 8, digits = "45" } },
  expect = { read_digits = { "123", "" }, vars = { key = "7", box = "1234", took = 11 } },
}

case "the caller hangs up during the second read" {
  from = "1001", to = "*98", hangup_after = 4.5,
  presses = { { at = 0, digits = "1" } },
  expect = { caller_hung_up = true, read_digits = { "" }, played = { "vm-intro", "vm-login", "vm-password" } },
}
"##,
    );
    let report = harness::run_tests(dir.path()).unwrap();
    // The third case is wrong on purpose: it expects the first read to stop at max 3.
    assert_eq!((report.passed(), report.failed()), (3, 1), "{report}");
    let failing = &report.files[0].cases[2];
    assert_eq!(
        failing.failures,
        [harness::Failure {
            what: "read_digits".into(),
            expected: "\"123\", \"\"".into(),
            got: "\"1234\", \"5\"".into(),
        }]
    );
}

#[test]
fn the_harness_records_until_a_terminator_the_maximum_or_the_hangup() {
    let dir = plan_with_tests(
        r##"function route(call)
             local r = call:record{ file = "greetings/" .. call.from.user .. ".wav", max_secs = 10 }
             call.vars.reason = r.reason
             call.vars.duration = r.duration
             call.vars.file = r.file
             call:record_call{ file = "calls/" .. call.from.user .. ".wav" }
           end"##,
        r##"
case "pound ends the recording; other keys are only sound" {
  from = "1001", to = "*97",
  presses = { { at = 2, digits = "5" }, { at = 4.5, digits = "#" } },
  expect = {
    played = { "beep" },
    recorded = { "greetings/1001.wav", "calls/1001.wav" },
    vars = { reason = "terminator", duration = 3.5, file = "greetings/1001.wav" },
  },
}

case "a key during the beep is lost" {
  from = "1001", to = "*97",
  presses = { { at = 0.5, digits = "#" } },
  expect = { vars = { reason = "max", duration = 10 } },
}

case "the caller hangs up while recording" {
  from = "1002", to = "*97", hangup_after = 7,
  expect = {
    caller_hung_up = true, recorded = { "greetings/1002.wav" },
    vars = { reason = "hangup", duration = 6 },
  },
}
"##,
    );
    assert_all_pass(&harness::run_tests(dir.path()).unwrap(), 3);
}

#[test]
fn with_a_sounds_folder_prompts_last_as_long_as_their_files() {
    let sounds = tempfile::tempdir().unwrap();
    let mut wav =
        crate::media::wav::WavWriter::create(&sounds.path().join("long.wav"), 8000, 1).unwrap();
    wav.write(&vec![0; 8000 * 3]).unwrap();
    wav.finish().unwrap();
    let dir = plan_with_tests(
        r##"function route(call)
             local start = time.now().epoch
             call:play("long")
             call.vars.took = time.now().epoch - start
             call:play("missing")
           end"##,
        r##"case "3 s" { from = "1001", to = "1", expect = { vars = { took = 3 } } }"##,
    );
    let report = harness::run_tests_with_sounds(dir.path(), Some(sounds.path())).unwrap();
    let case = &report.files[0].cases[0];
    assert_eq!(
        case.failures,
        [harness::Failure {
            what: "prompts".into(),
            expected: "every prompt played in the sounds folder".into(),
            got: "missing: missing".into(),
        }],
        "{report}"
    );
    // Without the folder every prompt is a second long, and none is missing.
    let report = harness::run_tests(dir.path()).unwrap();
    assert_eq!(
        report.files[0].cases[0].failures[0].what, "vars.took",
        "{report}"
    );
}

#[test]
fn bad_presses_are_test_file_errors() {
    let dir = plan_with_tests(
        "function route(call) end",
        "case 'x' { from = '1', to = '2', presses = { { at = 1, digits = '1x' } }, expect = {} }",
    );
    let report = harness::run_tests(dir.path()).unwrap();
    let error = report.files[0].error.as_deref().unwrap();
    assert!(
        error.ends_with(
            "media.lua:1: case \"x\": presses: digits \"1X\" must be keys (0-9 * # A-D)"
        ),
        "{error}"
    );
}
