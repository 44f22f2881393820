//! `switchboard dialplan test`: runs the cases in `<dialplan dir>/tests/*.lua` against
//! simulated calls (no network, no real time) and compares what the dialplan did with
//! what each case expects. The test DSL is documented in `dialplans/README.md`.

mod cases;
mod sim;

pub use cases::{Behaviour, Case, DialExpect, Expect, VarExpect};
pub use sim::{Ending, PROMPT_LENGTH, RECORDINGS, SimCall};

use super::{
    Dialplan, DialplanError, KvStore, LogLine, ManualClock, MemoryKv, RouteOutcome, Services,
    VarValue,
};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The folder inside the dialplan folder that holds the tests.
pub const TESTS_DIR: &str = "tests";

/// Everything `dialplan test` found.
#[derive(Debug, Default)]
pub struct Report {
    pub files: Vec<FileReport>,
}

#[derive(Debug)]
pub struct FileReport {
    pub path: PathBuf,
    /// The file itself did not run (syntax error, a bad case): `file:line: message`.
    pub error: Option<String>,
    pub cases: Vec<CaseReport>,
}

#[derive(Debug)]
pub struct CaseReport {
    pub name: String,
    pub line: Option<u32>,
    pub failures: Vec<Failure>,
    /// What the script logged and how it failed, shown for failing cases.
    pub outcome: RouteOutcome,
    pub ending: Ending,
}

/// One unmet expectation.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub what: String,
    pub expected: String,
    pub got: String,
}

impl Report {
    pub fn passed(&self) -> usize {
        self.cases().filter(|c| c.failures.is_empty()).count()
    }

    pub fn failed(&self) -> usize {
        self.cases().filter(|c| !c.failures.is_empty()).count()
            + self.files.iter().filter(|f| f.error.is_some()).count()
    }

    pub fn success(&self) -> bool {
        self.failed() == 0
    }

    fn cases(&self) -> impl Iterator<Item = &CaseReport> {
        self.files.iter().flat_map(|f| &f.cases)
    }
}

/// Loads the dialplan in `dir` and runs every test file in `dir/tests`. `Err` only when
/// the dialplan itself does not load. Must not be called from inside a tokio runtime
/// (it runs the simulated calls on its own). The scripts' log lines are kept in the
/// report (and shown for failing cases) rather than logged. Every prompt lasts
/// [`PROMPT_LENGTH`].
pub fn run_tests(dir: &Path) -> Result<Report, DialplanError> {
    run_tests_with_sounds(dir, None)
}

/// [`run_tests`], with prompts as long as their WAV files in `sounds` (the folder of
/// one language, `sounds/en`); a case that plays a prompt missing there fails.
pub fn run_tests_with_sounds(dir: &Path, sounds: Option<&Path>) -> Result<Report, DialplanError> {
    let quiet = tracing::subscriber::NoSubscriber::default();
    tracing::subscriber::with_default(quiet, || run_tests_quietly(dir, sounds))
}

fn run_tests_quietly(dir: &Path, sounds: Option<&Path>) -> Result<Report, DialplanError> {
    let plan = Dialplan::load(dir)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| DialplanError::in_file(dir, format!("cannot start the test runtime: {e}")))?;
    let tests = dir.join(TESTS_DIR);
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(&tests) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "lua"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(DialplanError::in_file(&tests, format!("cannot read: {e}"))),
    };
    paths.sort();
    let mut report = Report::default();
    for path in paths {
        let read = std::fs::read(&path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))
            .and_then(|source| cases::read_cases(&path, &source).map_err(|e| locate_in(&path, &e)));
        let file = match read {
            Ok(cases) => FileReport {
                cases: cases
                    .iter()
                    .map(|case| runtime.block_on(run_case(&plan, case, sounds)))
                    .collect(),
                path,
                error: None,
            },
            Err(error) => FileReport {
                path,
                error: Some(error),
                cases: Vec::new(),
            },
        };
        report.files.push(file);
    }
    Ok(report)
}

/// Test-file errors start with the file's name (`calls.lua:12: ...`); show the path.
fn locate_in(path: &Path, message: &str) -> String {
    match path.file_name().and_then(|n| n.to_str()) {
        Some(name) if message.starts_with(&format!("{name}:")) => {
            format!("{}{}", path.display(), &message[name.len()..])
        }
        _ => format!("{}: {message}", path.display()),
    }
}

/// Runs one case against the dialplan and checks its expectations; `sounds` as for
/// [`run_tests_with_sounds`].
pub async fn run_case(plan: &Dialplan, case: &Case, sounds: Option<&Path>) -> CaseReport {
    let kv = Arc::new(MemoryKv::default());
    for (ns, key, value) in &case.kv {
        // MemoryKv does not fail.
        let _ = kv.set(ns, key, value);
    }
    let start = case
        .at
        .to_zoned(case.zone.clone())
        .map(|z| z.timestamp())
        .unwrap_or_default();
    let clock = Arc::new(ManualClock::new(start));
    let mut services = Services::new(kv.clone()).with_clock(clock.clone());
    services.zone = case.zone.clone();
    services.recordings = Some(PathBuf::from(RECORDINGS));
    let mut call = SimCall::new(case, clock, sounds);
    let outcome = plan.run(&mut call, &services).await;
    let failures = check(&case.expect, &call, &outcome, &kv);
    CaseReport {
        name: case.name.clone(),
        line: case.line,
        failures,
        outcome,
        ending: call.ending,
    }
}

fn check(
    expect: &Expect,
    call: &SimCall<'_>,
    outcome: &RouteOutcome,
    kv: &MemoryKv,
) -> Vec<Failure> {
    let mut failures = Vec::new();
    let mut fail = |what: &str, expected: String, got: String| {
        failures.push(Failure {
            what: what.into(),
            expected,
            got,
        })
    };
    match (&expect.error, &outcome.error) {
        (Some(want), Some(got)) if got.to_string().contains(want.as_str()) => {}
        (Some(want), got) => fail(
            "error",
            format!("a script error containing {want:?}"),
            got.as_ref().map_or("no error".into(), |e| e.to_string()),
        ),
        (None, Some(got)) => fail("no script error", "none".into(), got.to_string()),
        (None, None) => {}
    }
    if let Some(want) = &expect.dialed
        && want != &call.dialed
    {
        fail("dialed", list(want), list(&call.dialed));
    }
    if let Some(want) = &expect.dials {
        let matches = want.len() == call.dials.len()
            && want
                .iter()
                .zip(&call.dials)
                .all(|(w, d)| w == &observed(d, Some(w)));
        if !matches {
            let got = call
                .dials
                .iter()
                .enumerate()
                .map(|(i, d)| describe_dial(&observed(d, want.get(i))));
            let join = |items: Vec<String>| {
                if items.is_empty() {
                    "nothing".to_owned()
                } else {
                    items.join("; ")
                }
            };
            fail(
                "dials",
                join(want.iter().map(describe_dial).collect()),
                join(got.collect()),
            );
        }
    }
    let ending = &call.ending;
    if let Some(target) = &expect.bridged
        && ending != &Ending::Bridged(target.clone())
    {
        fail(
            "bridged",
            format!("bridged to {target}"),
            ending.to_string(),
        );
    }
    if let Some(code) = expect.rejected {
        let got = match ending {
            Ending::Rejected(c, reason) => Some((*c, reason)),
            _ => None,
        };
        let code_ok = got.is_some_and(|(c, _)| c == code);
        let reason_ok = match &expect.reason {
            None => true,
            Some(want) => got.is_some_and(|(_, r)| r.as_deref() == Some(want.as_str())),
        };
        if !code_ok || !reason_ok {
            let want = match &expect.reason {
                Some(r) => format!("rejected {code} {r}"),
                None => format!("rejected {code}"),
            };
            fail("rejected", want, ending.to_string());
        }
    }
    if let Some(uri) = &expect.redirected
        && ending != &Ending::Redirected(uri.clone())
    {
        fail(
            "redirected",
            format!("redirected to {uri}"),
            ending.to_string(),
        );
    }
    if let Some(want) = expect.hung_up
        && want != (ending == &Ending::HungUp)
    {
        fail("hung_up", want.to_string(), ending.to_string());
    }
    if let Some(want) = expect.caller_hung_up
        && want != (ending == &Ending::CallerLeft)
    {
        fail("caller_hung_up", want.to_string(), ending.to_string());
    }
    if let Some(want) = expect.answered
        && want != call.answered
    {
        fail("answered", want.to_string(), call.answered.to_string());
    }
    for (name, want) in &expect.vars {
        let got = outcome.vars.get(name);
        let same = match (want, got) {
            (VarExpect::Str(w), Some(VarValue::Str(g))) => w == g,
            (VarExpect::Num(w), Some(VarValue::Int(g))) => *w == *g as f64,
            (VarExpect::Num(w), Some(VarValue::Num(g))) => w == g,
            (VarExpect::Bool(w), Some(VarValue::Bool(g))) => w == g,
            _ => false,
        };
        if !same {
            let want = match want {
                VarExpect::Str(s) => format!("{s:?}"),
                VarExpect::Num(n) => n.to_string(),
                VarExpect::Bool(b) => b.to_string(),
            };
            fail(
                &format!("vars.{name}"),
                want,
                got.map_or("unset".into(), |v| v.to_string()),
            );
        }
    }
    for (ns, key, want) in &expect.kv {
        let got = kv.get(ns, key).ok().flatten();
        if &got != want {
            let show = |v: &Option<String>| v.as_ref().map_or("unset".into(), |v| format!("{v:?}"));
            fail(&format!("kv.{ns}[{key:?}]"), show(want), show(&got));
        }
    }
    for (what, want, got) in [
        ("played", &expect.played, &call.played),
        ("recorded", &expect.recorded, &call.recorded),
        ("read_digits", &expect.read_digits, &call.digits_read),
    ] {
        if let Some(want) = want
            && want != got
        {
            fail(what, quoted(want), quoted(got));
        }
    }
    if !call.missing_prompts.is_empty() {
        fail(
            "prompts",
            "every prompt played in the sounds folder".into(),
            format!("missing: {}", call.missing_prompts.join(", ")),
        );
    }
    for want in &expect.logged {
        if !outcome
            .logs
            .iter()
            .any(|l| l.message.contains(want.as_str()))
        {
            fail(
                "logged",
                format!("a log line containing {want:?}"),
                if outcome.logs.is_empty() {
                    "no log lines".into()
                } else {
                    outcome
                        .logs
                        .iter()
                        .map(|l| format!("{:?}", l.message))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            );
        }
    }
    failures
}

/// A dial as the test sees it: only the options its expectation names (all of them
/// for a dial nobody expected), so options a test leaves out are not compared.
fn observed(d: &crate::dialplan::DialRequest, want: Option<&DialExpect>) -> DialExpect {
    let named = |f: fn(&DialExpect) -> bool| want.is_none_or(f);
    DialExpect {
        targets: d.targets.iter().map(|t| t.to_string()).collect(),
        strategy: named(|w| w.strategy.is_some()).then(|| d.strategy.as_str().to_owned()),
        timeout: named(|w| w.timeout.is_some()).then_some(d.timeout.as_secs_f64()),
        caller_number: named(|w| w.caller_number.is_some())
            .then(|| d.caller_id.number.clone())
            .flatten(),
        caller_name: named(|w| w.caller_name.is_some())
            .then(|| d.caller_id.name.clone())
            .flatten(),
        headers: if named(|w| !w.headers.is_empty()) {
            d.headers.clone()
        } else {
            Vec::new()
        },
    }
}

fn describe_dial(d: &DialExpect) -> String {
    let mut text = format!("[{}]", d.targets.join(", "));
    if let Some(s) = &d.strategy {
        text += &format!(" {s}");
    }
    if let Some(t) = d.timeout {
        text += &format!(" timeout={t}");
    }
    if let Some(n) = &d.caller_number {
        text += &format!(" caller number={n:?}");
    }
    if let Some(n) = &d.caller_name {
        text += &format!(" caller name={n:?}");
    }
    for (name, value) in &d.headers {
        text += &format!(" {name}: {value}");
    }
    text
}

/// Items that may be empty strings (digits read), each quoted.
fn quoted(items: &[String]) -> String {
    if items.is_empty() {
        "nothing".into()
    } else {
        items
            .iter()
            .map(|i| format!("{i:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "nothing".into()
    } else {
        items.join(", ")
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for file in &self.files {
            writeln!(f, "{}", file.path.display())?;
            if let Some(error) = &file.error {
                writeln!(f, "  ERROR {error}")?;
            }
            for case in &file.cases {
                if case.failures.is_empty() {
                    writeln!(f, "  ok    {}", case.name)?;
                    continue;
                }
                let at = case.line.map_or(String::new(), |l| format!(" (line {l})"));
                writeln!(f, "  FAIL  {}{at}", case.name)?;
                for failure in &case.failures {
                    writeln!(f, "        {}: expected {}", failure.what, failure.expected)?;
                    writeln!(
                        f,
                        "        {}       got {}",
                        " ".repeat(failure.what.len()),
                        failure.got
                    )?;
                }
                writeln!(f, "        the call ended: {}", case.ending)?;
                if let Some(tb) = case
                    .outcome
                    .error
                    .as_ref()
                    .and_then(|e| e.traceback.as_ref())
                {
                    writeln!(f, "        traceback:")?;
                    for line in tb.lines() {
                        writeln!(f, "          {}", line.trim())?;
                    }
                }
                for LogLine {
                    level,
                    location,
                    message,
                } in &case.outcome.logs
                {
                    let at = location.as_deref().unwrap_or("?");
                    writeln!(f, "        log {} {at}: {message}", level.as_str())?;
                }
            }
        }
        write!(f, "{} passed, {} failed", self.passed(), self.failed())
    }
}
