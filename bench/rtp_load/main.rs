//! Media benchmark (issue 6): N concurrent calls through switchboard, each with RTP at
//! 50 packets per second both ways, beside a minimal reference relay measured the same
//! way in the same run. For N stepping up, it reports loss, one-way latency
//! percentiles, added jitter, relay CPU per relayed packet and per call, and memory
//! per call, and stops a target once its loss passes the limit. `bench/media.sh`
//! builds and runs it; docs/performance.md explains the figures.
//!
//! With `--callee-codec g722|opus` the callee answers with that codec, so every call
//! is transcoded both ways (the caller stays on PCMU), the phones send real speech,
//! and the reference relay gives way to the codec library alone doing the same
//! decoding and encoding, measured in the same run (`codec_cost`).
//!
//!   rtp_load run --switchboard 127.0.0.1:5060 --switchboard-pid PID [options]
//!   rtp_load relay --ip 127.0.0.1        (the reference relay; started by `run`)

mod audio;
mod codec_cost;
mod histogram;
mod procfs;
mod relay;
mod rtp;
mod sip;
mod traffic;

use audio::EncodedLoop;
use clap::{Parser, Subcommand, ValueEnum};
use relay::RelayProcess;
use sip::{Account, Agent, MediaPorts};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use switchboard::media::codec::CodecKind;
use traffic::{Audio, CallMedia, Endpoints, Measurement, Timing};

#[derive(Parser)]
#[command(about = "RTP load generator and reference relay for switchboard's media benchmark")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the stepped benchmark.
    Run(Box<RunArgs>),
    /// Be the reference relay (a child of `run`).
    Relay {
        #[arg(long, default_value = "127.0.0.1")]
        ip: Ipv4Addr,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// switchboard's SIP address (UDP); without it only the reference relay is measured.
    #[arg(long)]
    switchboard: Option<SocketAddr>,
    /// switchboard's process id, for its CPU time and memory.
    #[arg(long, requires = "switchboard")]
    switchboard_pid: Option<u32>,
    /// Calling extension as USER:PASSWORD.
    #[arg(long, default_value = "1000:bench-1000")]
    caller: String,
    /// Called extension (registered by this program) as USER:PASSWORD.
    #[arg(long, default_value = "1001:bench-1001")]
    callee: String,
    /// Concurrent call counts to step through.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "100,250,500,750,1000,1250,1500,2000,2500,3000"
    )]
    calls: Vec<usize>,
    /// Seconds of traffic before the measurement window.
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    /// Seconds in the measurement window.
    #[arg(long, default_value_t = 10.0)]
    measure: f64,
    /// A target stops stepping once its loss exceeds this percentage.
    #[arg(long, default_value_t = 0.1)]
    max_loss: f64,
    /// New calls per second while setting up a step's calls through switchboard.
    #[arg(long, default_value_t = 200.0)]
    setup_rate: f64,
    /// Address for the generator's sockets and the reference relay.
    #[arg(long, default_value = "127.0.0.1")]
    ip: Ipv4Addr,
    /// Skip the reference relay.
    #[arg(long)]
    no_reference: bool,
    /// Where to write the JSON results.
    #[arg(long)]
    json: Option<PathBuf>,
    /// The codec the callee answers with. PCMU is the caller's, so calls are relayed;
    /// G722 or Opus makes switchboard transcode both ways (no reference relay then).
    #[arg(long, value_enum, default_value_t = CalleeCodec::Pcmu)]
    callee_codec: CalleeCodec,
    /// Send real PCMU speech and match packets by RTP timestamp even when relayed (as
    /// transcoded runs always do), to check that method against the payload stamps.
    #[arg(long)]
    match_by_rtp: bool,
    /// switchboard's admin API (HOST:PORT): checks each step's calls took the expected
    /// path (relay or transcode) and reads switchboard's own count of packets lost on
    /// the way in.
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// How busy the machine was before the run (recorded in the JSON).
    #[arg(long)]
    background_cpu_pct: Option<f64>,
    /// CPU seconds for each figure of the codec-alone measurement (transcoding runs).
    #[arg(long, default_value_t = 2.0)]
    codec_seconds: f64,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CalleeCodec {
    Pcmu,
    G722,
    Opus,
}

impl CalleeCodec {
    fn kind(self) -> CodecKind {
        match self {
            CalleeCodec::Pcmu => CodecKind::Pcmu,
            CalleeCodec::G722 => CodecKind::G722,
            CalleeCodec::Opus => CodecKind::Opus,
        }
    }
}

/// What switchboard's admin API said about a step's calls, read after the window
/// while they were still up.
#[derive(Clone, Debug, Default, serde::Serialize)]
struct PathCheck {
    calls: usize,
    legs_relayed: usize,
    legs_transcoded: usize,
    /// "caller codec → callee codec" and how many calls negotiated it.
    codecs: std::collections::BTreeMap<String, usize>,
    /// RTP from the phones that never reached switchboard (RFC 3550, both legs, since
    /// each call started). A transcoder conceals those, so the receiver cannot see them.
    switchboard_lost_packets: u64,
}

/// One target at one call count.
#[derive(serde::Serialize)]
struct Step {
    target: &'static str,
    #[serde(flatten)]
    measurement: Measurement,
    /// Resident memory growth over the target's idle baseline, divided by the calls.
    memory_per_call_kib: f64,
    /// Calls that did not end with a clean BYE exchange (switchboard only).
    unclean_hangups: usize,
    /// From switchboard's admin API, when given (switchboard only).
    #[serde(skip_serializing_if = "Option::is_none")]
    paths: Option<PathCheck>,
    /// `switchboard_lost_packets` as a share of all packets sent to switchboard.
    #[serde(skip_serializing_if = "Option::is_none")]
    input_loss_pct: Option<f64>,
}

impl Step {
    /// Loss seen by the receivers plus, when known, what switchboard lost on the way
    /// in (hidden by a transcoder's concealment).
    fn total_loss_pct(&self) -> f64 {
        self.measurement.loss_pct + self.input_loss_pct.unwrap_or(0.0)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Relay { ip } => relay::serve(ip),
        Command::Run(args) => run(*args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rtp_load: {e}");
            ExitCode::FAILURE
        }
    }
}

fn account(spec: &str) -> io::Result<Account> {
    let (user, password) = spec
        .split_once(':')
        .ok_or_else(|| io::Error::other(format!("expected USER:PASSWORD, got {spec:?}")))?;
    Ok(Account {
        user: user.into(),
        password: password.into(),
    })
}

fn run(args: RunArgs) -> io::Result<()> {
    let ip = IpAddr::V4(args.ip);
    let timing = Timing {
        warmup: Duration::from_secs_f64(args.warmup),
        measure: Duration::from_secs_f64(args.measure),
        drain: Duration::from_millis(500),
    };
    let endpoints = Endpoints::bind(ip)?;
    let exe = std::env::current_exe()?;
    let callee_kind = args.callee_codec.kind();
    let transcoding = callee_kind != CodecKind::Pcmu;
    let caller_audio = EncodedLoop::new(CodecKind::Pcmu)?;
    let callee_audio = EncodedLoop::new(callee_kind)?;
    let audio = (transcoding || args.match_by_rtp).then_some(Audio {
        caller: &caller_audio,
        callee: &callee_audio,
    });
    let mut notes: Vec<String> = Vec::new();
    // The codec library alone, first, while nothing else of the run loads the machine.
    let codec_alone = if transcoding && args.codec_seconds > 0.0 {
        let cost = codec_cost::measure(callee_kind, args.codec_seconds)?;
        eprintln!(
            "codec alone: PCMU <-> {callee_kind}: {:.0} µs per call-second (codecs {:.0} µs, plus resampling {:.0} µs)",
            cost.chain_us_per_call_second,
            cost.codecs_us_per_call_second,
            cost.chain_us_per_call_second - cost.codecs_us_per_call_second,
        );
        Some(cost)
    } else {
        None
    };

    let mut switchboard = match (args.switchboard, args.switchboard_pid) {
        (Some(server), Some(pid)) => {
            let media = MediaPorts {
                ip,
                caller_port: endpoints.a_addr()?.port(),
                callee_port: endpoints.b_addr()?.port(),
            };
            let mut agent = Agent::new(
                server,
                account(&args.caller)?,
                account(&args.callee)?,
                media,
                callee_kind,
            )?;
            agent.register(Duration::from_secs(10))?;
            let baseline = procfs::rss_bytes(pid)?;
            Some((agent, pid, baseline))
        }
        (Some(_), None) => return Err(io::Error::other("--switchboard needs --switchboard-pid")),
        _ => None,
    };
    // The reference relay cannot transcode; the codec-alone figure stands in for it.
    let mut reference_on = !args.no_reference && !transcoding;
    let mut switchboard_on = switchboard.is_some();
    let mut steps: Vec<Step> = Vec::new();

    for &n in &args.calls {
        if reference_on {
            let mut idle_rss = 0;
            let relay = RelayProcess::start(&exe, ip, n, |pid| {
                idle_rss = procfs::rss_bytes(pid).unwrap_or(0);
            })?;
            let calls: Vec<CallMedia> = relay
                .pairs
                .iter()
                .map(|&(a, b)| CallMedia {
                    a_dest: a,
                    b_dest: b,
                    b_payload_type: 0,
                })
                .collect();
            let agent = switchboard.as_mut().map(|(agent, _, _)| agent);
            let m = measure_serving(agent, &endpoints, &calls, timing, relay.pid(), audio)?;
            let rss = procfs::rss_bytes(relay.pid())?;
            let step = Step {
                target: "reference",
                memory_per_call_kib: per_call_kib(rss, idle_rss, n),
                measurement: m,
                unclean_hangups: 0,
                paths: None,
                input_loss_pct: None,
            };
            drop(relay);
            report(&step);
            reference_on = step.measurement.loss_pct <= args.max_loss;
            steps.push(step);
        }
        if let (true, Some((agent, pid, baseline))) = (switchboard_on, switchboard.as_mut()) {
            let setup_time = Duration::from_secs_f64(30.0 + n as f64 / args.setup_rate * 2.0);
            let bridged = match agent.place_calls(n, args.setup_rate, 200, setup_time) {
                Ok(b) => b,
                Err(e) => {
                    let note = format!("switchboard: {n} calls could not be set up: {e}");
                    eprintln!("{note}");
                    notes.push(note);
                    let _ = agent.hang_up_all(args.setup_rate, Duration::from_secs(30));
                    switchboard_on = false;
                    continue;
                }
            };
            let calls: Vec<CallMedia> = bridged
                .iter()
                .map(|b| CallMedia {
                    a_dest: b.caller_relay,
                    b_dest: b.callee_relay,
                    b_payload_type: b.callee_payload_type,
                })
                .collect();
            let m = measure_serving(Some(&mut *agent), &endpoints, &calls, timing, *pid, audio)?;
            let rss = procfs::rss_bytes(*pid)?;
            let paths = match args.admin {
                Some(admin) => match check_paths(admin, transcoding, n) {
                    Ok(check) => Some(check),
                    Err(e) => {
                        notes.push(format!("{n} calls: {e}"));
                        eprintln!("warning: {e}");
                        None
                    }
                },
                None => None,
            };
            // Everything the phones sent, warm-up included, as the counters count it.
            let sent_total = 2.0 * n as f64 * 50.0 * (args.warmup + args.measure);
            let input_loss_pct = paths
                .as_ref()
                .map(|p| 100.0 * p.switchboard_lost_packets as f64 / sent_total);
            let unclean = agent.hang_up_all(args.setup_rate * 2.0, Duration::from_secs(30))?;
            let step = Step {
                target: "switchboard",
                memory_per_call_kib: per_call_kib(rss, *baseline, n),
                measurement: m,
                unclean_hangups: unclean,
                paths,
                input_loss_pct,
            };
            report(&step);
            switchboard_on = step.total_loss_pct() <= args.max_loss;
            steps.push(step);
            std::thread::sleep(Duration::from_secs(1));
        }
        if !reference_on && !switchboard_on {
            break;
        }
    }

    let mut summary = summarize(&steps, args.max_loss);
    if transcoding {
        summary["transcoding"] = summarize_transcoding(&steps, codec_alone.as_ref(), args.max_loss);
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&summary).unwrap_or_default()
    );
    if let Some(path) = args.json {
        let doc = serde_json::json!({
            "benchmark": "media",
            "machine": machine(),
            "background_cpu_pct_before": args.background_cpu_pct,
            "settings": {
                "calls": args.calls,
                "warmup_s": args.warmup,
                "measure_s": args.measure,
                "max_loss_pct": args.max_loss,
                "packets_per_second_per_direction": 50,
                "codec": codec_description(callee_kind, audio.is_some()),
                "callee_codec": callee_kind.name(),
                "matched_by": if audio.is_some() { "rtp timestamps" } else { "payload stamps" },
            },
            "summary": summary,
            "notes": notes,
            "steps": steps,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&doc)? + "\n")?;
        eprintln!("results: {}", path.display());
    }
    Ok(())
}

fn codec_description(callee: CodecKind, audio: bool) -> String {
    match (callee, audio) {
        (CodecKind::Pcmu, false) => "PCMU, 160-byte payload".into(),
        (CodecKind::Pcmu, true) => "PCMU speech, 160-byte payload".into(),
        (other, _) => format!(
            "caller PCMU, callee {other}, transcoded both ways; speech (sounds/en/vm-intro.wav) in a loop"
        ),
    }
}

/// Reads the live calls from switchboard's admin API and checks each took the path
/// its codecs call for.
fn check_paths(
    admin: SocketAddr,
    transcoding: bool,
    expected_calls: usize,
) -> io::Result<PathCheck> {
    let mut response = ureq::get(format!("http://{admin}/api/calls"))
        .call()
        .map_err(|e| io::Error::other(format!("admin API: {e}")))?;
    let listing: serde_json::Value = response
        .body_mut()
        .with_config()
        .limit(256 << 20)
        .read_json()
        .map_err(|e| io::Error::other(format!("admin API: {e}")))?;
    let check = path_check(&listing);
    let (wanted, got) = if transcoding {
        ("transcode", check.legs_transcoded)
    } else {
        ("relay", check.legs_relayed)
    };
    if check.calls != expected_calls || got != 2 * expected_calls {
        return Err(io::Error::other(format!(
            "expected {expected_calls} calls with both legs on the {wanted} path; switchboard lists {} calls, {} legs relayed, {} transcoded, codecs {:?}",
            check.calls, check.legs_relayed, check.legs_transcoded, check.codecs
        )));
    }
    Ok(check)
}

/// Counts paths, codec pairs and lost packets in a `GET /api/calls` answer.
fn path_check(listing: &serde_json::Value) -> PathCheck {
    let mut check = PathCheck::default();
    let calls = listing["calls"].as_array().map_or(&[][..], Vec::as_slice);
    for call in calls {
        check.calls += 1;
        let legs = [&call["a_leg"], &call["b_leg"]];
        for leg in legs {
            match leg["path"].as_str() {
                Some("relay") => check.legs_relayed += 1,
                Some("transcode") => check.legs_transcoded += 1,
                _ => {}
            }
            check.switchboard_lost_packets += leg["lost_packets"].as_u64().unwrap_or(0);
        }
        let codec = |leg: &serde_json::Value| leg["codec"].as_str().unwrap_or("none").to_owned();
        let pair = format!("{} → {}", codec(legs[0]), codec(legs[1]));
        *check.codecs.entry(pair).or_default() += 1;
    }
    check
}

/// Runs the media while the SIP agent (if any) keeps answering switchboard.
fn measure_serving(
    agent: Option<&mut Agent>,
    endpoints: &Endpoints,
    calls: &[CallMedia],
    timing: Timing,
    relay_pid: u32,
    audio: Option<Audio<'_>>,
) -> io::Result<Measurement> {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let server = agent.map(|a| s.spawn(|| a.serve(&stop)));
        let m = traffic::run(endpoints, calls, timing, relay_pid, audio);
        stop.store(true, Ordering::Relaxed);
        if let Some(h) = server {
            h.join()
                .map_err(|_| io::Error::other("SIP thread panicked"))??;
        }
        m
    })
}

fn per_call_kib(rss: u64, idle: u64, calls: usize) -> f64 {
    rss.saturating_sub(idle) as f64 / 1024.0 / calls.max(1) as f64
}

fn report(step: &Step) {
    let m = &step.measurement;
    eprintln!(
        "{:<11} {:>5} calls  {:>7.0} pkt/s  loss {:>6.3}%{}  latency p50/p99/p99.9 {}/{}/{} µs  jitter mean/p99 {:.0}/{:.0} µs  relay CPU {:>5.1}% = {:.2} µs/pkt = {:.0} µs/call-s  {:.1} KiB/call  generator CPU {:.0}%  others {:.0}%",
        step.target,
        m.calls,
        m.received as f64 / m.window_s,
        m.loss_pct,
        step.input_loss_pct
            .map_or(String::new(), |p| format!(" (+{p:.3}% lost on the way in)")),
        m.latency_us.p50,
        m.latency_us.p99,
        m.latency_us.p999,
        m.jitter_us.mean,
        m.jitter_us.p99,
        m.relay_cpu_pct,
        m.relay_cpu_us_per_packet,
        m.relay_cpu_us_per_call_second,
        step.memory_per_call_kib,
        m.generator_cpu_pct,
        m.others_cpu_pct,
    );
}

/// Per target: the most calls carried within the loss limit; and the CPU-per-packet
/// ratio at each call count both targets carried within it.
fn summarize(steps: &[Step], max_loss: f64) -> serde_json::Value {
    let best = |target: &str| {
        steps
            .iter()
            .filter(|s| s.target == target && s.total_loss_pct() <= max_loss)
            .map(|s| s.measurement.calls)
            .max()
    };
    let ratios: Vec<serde_json::Value> = steps
        .iter()
        .filter(|s| s.target == "switchboard" && s.total_loss_pct() <= max_loss)
        .filter_map(|sb| {
            let reference = steps.iter().find(|r| {
                r.target == "reference"
                    && r.measurement.calls == sb.measurement.calls
                    && r.measurement.loss_pct <= max_loss
            })?;
            let ratio = sb.measurement.relay_cpu_us_per_packet
                / reference.measurement.relay_cpu_us_per_packet;
            Some(serde_json::json!({
                "calls": sb.measurement.calls,
                "switchboard_us_per_packet": sb.measurement.relay_cpu_us_per_packet,
                "reference_us_per_packet": reference.measurement.relay_cpu_us_per_packet,
                "ratio": (ratio * 100.0).round() / 100.0,
            }))
        })
        .collect();
    serde_json::json!({
        "max_calls_within_loss_limit": {
            "switchboard": best("switchboard"),
            "reference": best("reference"),
        },
        "cpu_per_packet_ratio": ratios,
    })
}

/// Transcoding runs: switchboard's CPU per call against the codec library alone doing
/// the same decoding and encoding, at each step within the loss limit.
fn summarize_transcoding(
    steps: &[Step],
    codec_alone: Option<&codec_cost::CodecCost>,
    max_loss: f64,
) -> serde_json::Value {
    let ratio = |x: f64, base: Option<f64>| {
        base.filter(|&b| b > 0.0)
            .map(|b| (x / b * 100.0).round() / 100.0)
    };
    let per_step: Vec<serde_json::Value> = steps
        .iter()
        .filter(|s| s.target == "switchboard")
        .map(|s| {
            let us = s.measurement.relay_cpu_us_per_call_second;
            serde_json::json!({
                "calls": s.measurement.calls,
                "within_loss_limit": s.total_loss_pct() <= max_loss,
                "switchboard_us_per_call_second": us.round(),
                "switchboard_core_pct_per_call": (us / 1e4 * 100.0).round() / 100.0,
                "ratio_to_codecs_alone": ratio(us, codec_alone.map(|c| c.codecs_us_per_call_second)),
                "ratio_to_codec_chain_alone": ratio(us, codec_alone.map(|c| c.chain_us_per_call_second)),
            })
        })
        .collect();
    serde_json::json!({
        "codec_alone": codec_alone,
        "cpu_per_call": per_step,
    })
}

/// The machine the figures come from.
fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned());
    serde_json::json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_owned()),
    })
}
