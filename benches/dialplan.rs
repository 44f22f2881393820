//! Per-call cost of the dialplan: take a warm Lua state of the compiled shipped
//! dialplan, give the call a fresh environment, run `route()` to its dial and finish,
//! with a call that answers every dial at once. Also: how long a runaway
//! `while true do end` holds a worker thread before the instruction budget stops it.
//! Run: `cargo bench --bench dialplan`.
//!
//! `DIALPLAN_CALLS=N` instead runs N calls of each route once, without criterion, for
//! counting instructions under `valgrind --tool=callgrind` (a count, unlike a time, is
//! not disturbed by other load on the machine): the difference between two counts with
//! different N, divided by the calls, is the cost of one call.

use criterion::{Criterion, criterion_group};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use switchboard::config::Transport;
use switchboard::dialplan::call::{
    DigitsRequest, PlayRequest, PlayResult, RecordRequest, RecordResult,
};
use switchboard::dialplan::{
    CallControl, CallError, CallInfo, DialRequest, DialResult, DialStatus, Dialplan, ManualClock,
    MemoryKv, Party, Services,
};

/// A call whose dials are answered (and over) at once and whose other operations do
/// nothing, so the figure is the engine's alone.
struct NoopCall {
    info: CallInfo,
}

impl CallControl for NoopCall {
    fn info(&self) -> &CallInfo {
        &self.info
    }

    async fn dial(&mut self, request: DialRequest) -> DialResult {
        DialResult {
            status: DialStatus::Answered,
            sip_code: Some(200),
            answered_by: request.targets.into_iter().next(),
            duration: Duration::from_secs(60),
        }
    }

    async fn answer(&mut self) -> Result<(), CallError> {
        Ok(())
    }

    async fn reject(&mut self, _: u16, _: Option<String>) -> Result<(), CallError> {
        Ok(())
    }

    async fn redirect(&mut self, _: String) -> Result<(), CallError> {
        Ok(())
    }

    async fn hangup(&mut self) -> Result<(), CallError> {
        Ok(())
    }

    // The benchmarked routes play nothing: a call that did would be a bench error.
    async fn play(&mut self, _: PlayRequest) -> Result<PlayResult, CallError> {
        Err(CallError::Failed("no media in this bench".into()))
    }

    async fn read_digits(&mut self, _: DigitsRequest) -> Result<String, CallError> {
        Err(CallError::Failed("no media in this bench".into()))
    }

    async fn record(&mut self, _: RecordRequest) -> Result<RecordResult, CallError> {
        Err(CallError::Failed("no media in this bench".into()))
    }

    async fn record_call(&mut self, _: std::path::PathBuf) -> Result<(), CallError> {
        Err(CallError::Failed("no media in this bench".into()))
    }

    async fn set_music(&mut self, _: Option<String>) -> Result<(), CallError> {
        Ok(())
    }
}

/// An INVITE from a desk phone as the B2BUA would describe it.
fn call_to(number: &str) -> NoopCall {
    let party = |user: &str, display: Option<&str>| Party {
        user: user.into(),
        display: display.map(String::from),
        uri: format!("sip:{user}@pbx.example.com"),
        host: "pbx.example.com".into(),
    };
    let headers = [
        (
            "Via",
            "SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bK776asdhds;rport",
        ),
        ("Max-Forwards", "70"),
        ("To", "<sip:1001@pbx.example.com>"),
        (
            "From",
            "\"Alice\" <sip:1000@pbx.example.com>;tag=1928301774",
        ),
        ("Call-ID", "a84b4c76e66710@192.168.1.20"),
        ("CSeq", "314159 INVITE"),
        ("Contact", "<sip:1000@192.168.1.20:5060;transport=udp>"),
        (
            "Allow",
            "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REFER, NOTIFY",
        ),
        ("Supported", "replaces, timer"),
        ("User-Agent", "Yealink SIP-T46S 66.86.0.15"),
        ("Content-Type", "application/sdp"),
        ("Content-Length", "248"),
    ];
    NoopCall {
        info: CallInfo {
            id: "a84b4c76e66710@192.168.1.20".into(),
            from: party("1000", Some("Alice")),
            to: party(number, None),
            request_uri: format!("sip:{number}@pbx.example.com"),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            source: "192.168.1.20:5060".parse().unwrap(),
            transport: Transport::Udp,
            auth_user: Some("1000".into()),
        },
    }
}

/// The routes measured: an extension and the reception ring group.
const ROUTES: [(&str, &str); 2] = [("extension", "1001"), ("ring_group", "600")];

/// The shipped dialplan, services at a fixed time and a runtime to run calls on.
fn shipped() -> (Dialplan, Services, tokio::runtime::Runtime) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("dialplans");
    let plan = Dialplan::load(&dir).unwrap();
    // Monday 10:00 UTC: office hours, so the ring group rings.
    let now = "2025-01-06T10:00:00Z".parse().unwrap();
    let mut services =
        Services::new(Arc::new(MemoryKv::default())).with_clock(Arc::new(ManualClock::new(now)));
    services.zone = jiff::tz::TimeZone::UTC;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    (plan, services, runtime)
}

/// A call to `number`, checked to reach its dial: the figure must be of a route, not
/// of an error path.
fn checked_call(
    plan: &Dialplan,
    services: &Services,
    runtime: &tokio::runtime::Runtime,
    number: &str,
) -> NoopCall {
    let mut call = call_to(number);
    let outcome = runtime.block_on(plan.run(&mut call, services));
    assert_eq!(outcome.error, None);
    assert_eq!(outcome.vars.get("voicemail"), None);
    call
}

fn route(c: &mut Criterion) {
    let (plan, services, runtime) = shipped();
    let mut group = c.benchmark_group("dialplan");
    for (name, number) in ROUTES {
        let mut call = checked_call(&plan, &services, &runtime, number);
        group.bench_function(name, |b| {
            b.iter(|| runtime.block_on(plan.run(&mut call, &services)))
        });
    }
    group.finish();
}

/// `DIALPLAN_CALLS=N`: N calls of each route, untimed.
fn count(calls: usize) {
    let (plan, services, runtime) = shipped();
    for (_, number) in ROUTES {
        let mut call = checked_call(&plan, &services, &runtime, number);
        for _ in 0..calls {
            runtime.block_on(plan.run(&mut call, &services));
        }
    }
}

fn runaway(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("default.lua"),
        "function route(call) while true do end end",
    )
    .unwrap();
    let plan = Dialplan::load(dir.path()).unwrap();
    let services = Services::new(Arc::new(MemoryKv::default()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut call = call_to("1001");
    let mut group = c.benchmark_group("dialplan");
    group.sample_size(10);
    group.bench_function("runaway_loop_stopped", |b| {
        b.iter(|| {
            let outcome = runtime.block_on(plan.run(&mut call, &services));
            assert!(outcome.error.is_some());
        })
    });
    group.finish();
}

criterion_group!(benches, route, runaway);

fn main() {
    match std::env::var("DIALPLAN_CALLS") {
        Ok(calls) => count(calls.parse().expect("DIALPLAN_CALLS is a number of calls")),
        Err(_) => {
            benches();
            Criterion::default().configure_from_args().final_summary();
        }
    }
}
