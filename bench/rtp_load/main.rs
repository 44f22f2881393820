//! Media benchmark (issue 6): N concurrent calls through switchboard, each with G.711
//! RTP at 50 packets per second both ways, beside a minimal reference relay measured
//! the same way in the same run. For N stepping up, it reports loss, one-way latency
//! percentiles, added jitter, relay CPU per relayed packet and memory per call, and
//! stops a target once its loss passes the limit. `bench/media.sh` builds and runs it;
//! docs/performance.md explains the figures.
//!
//!   rtp_load run --switchboard 127.0.0.1:5060 --switchboard-pid PID [options]
//!   rtp_load relay --ip 127.0.0.1        (the reference relay; started by `run`)

mod histogram;
mod procfs;
mod relay;
mod rtp;
mod sip;
mod traffic;

use clap::{Parser, Subcommand};
use relay::RelayProcess;
use sip::{Account, Agent, MediaPorts};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use traffic::{CallMedia, Endpoints, Measurement, Timing};

#[derive(Parser)]
#[command(about = "RTP load generator and reference relay for switchboard's media benchmark")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the stepped benchmark.
    Run(RunArgs),
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Relay { ip } => relay::serve(ip),
        Command::Run(args) => run(args),
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
            )?;
            agent.register(Duration::from_secs(10))?;
            let baseline = procfs::rss_bytes(pid)?;
            Some((agent, pid, baseline))
        }
        (Some(_), None) => return Err(io::Error::other("--switchboard needs --switchboard-pid")),
        _ => None,
    };
    let mut reference_on = !args.no_reference;
    let mut switchboard_on = switchboard.is_some();
    let mut steps: Vec<Step> = Vec::new();
    let mut notes: Vec<String> = Vec::new();

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
                })
                .collect();
            let agent = switchboard.as_mut().map(|(agent, _, _)| agent);
            let m = measure_serving(agent, &endpoints, &calls, timing, relay.pid())?;
            let rss = procfs::rss_bytes(relay.pid())?;
            let step = Step {
                target: "reference",
                memory_per_call_kib: per_call_kib(rss, idle_rss, n),
                measurement: m,
                unclean_hangups: 0,
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
                })
                .collect();
            let m = measure_serving(Some(&mut *agent), &endpoints, &calls, timing, *pid)?;
            let rss = procfs::rss_bytes(*pid)?;
            let unclean = agent.hang_up_all(args.setup_rate * 2.0, Duration::from_secs(30))?;
            let step = Step {
                target: "switchboard",
                memory_per_call_kib: per_call_kib(rss, *baseline, n),
                measurement: m,
                unclean_hangups: unclean,
            };
            report(&step);
            switchboard_on = step.measurement.loss_pct <= args.max_loss;
            steps.push(step);
            std::thread::sleep(Duration::from_secs(1));
        }
        if !reference_on && !switchboard_on {
            break;
        }
    }

    let summary = summarize(&steps, args.max_loss);
    println!(
        "{}",
        serde_json::to_string_pretty(&summary).unwrap_or_default()
    );
    if let Some(path) = args.json {
        let doc = serde_json::json!({
            "benchmark": "media",
            "machine": machine(),
            "settings": {
                "calls": args.calls,
                "warmup_s": args.warmup,
                "measure_s": args.measure,
                "max_loss_pct": args.max_loss,
                "packets_per_second_per_direction": 50,
                "codec": "PCMU, 160-byte payload",
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

/// Runs the media while the SIP agent (if any) keeps answering switchboard.
fn measure_serving(
    agent: Option<&mut Agent>,
    endpoints: &Endpoints,
    calls: &[CallMedia],
    timing: Timing,
    relay_pid: u32,
) -> io::Result<Measurement> {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let server = agent.map(|a| s.spawn(|| a.serve(&stop)));
        let m = traffic::run(endpoints, calls, timing, relay_pid);
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
        "{:<11} {:>5} calls  {:>7.0} pkt/s  loss {:>6.3}%  latency p50/p99/p99.9 {}/{}/{} µs  jitter mean/p99 {:.0}/{:.0} µs  relay CPU {:>5.1}% = {:.2} µs/pkt  {:.1} KiB/call  generator CPU {:.0}%",
        step.target,
        m.calls,
        m.received as f64 / m.window_s,
        m.loss_pct,
        m.latency_us.p50,
        m.latency_us.p99,
        m.latency_us.p999,
        m.jitter_us.mean,
        m.jitter_us.p99,
        m.relay_cpu_pct,
        m.relay_cpu_us_per_packet,
        step.memory_per_call_kib,
        m.generator_cpu_pct,
    );
}

/// Per target: the most calls carried within the loss limit; and the CPU-per-packet
/// ratio at each call count both targets carried within it.
fn summarize(steps: &[Step], max_loss: f64) -> serde_json::Value {
    let best = |target: &str| {
        steps
            .iter()
            .filter(|s| s.target == target && s.measurement.loss_pct <= max_loss)
            .map(|s| s.measurement.calls)
            .max()
    };
    let ratios: Vec<serde_json::Value> = steps
        .iter()
        .filter(|s| s.target == "switchboard" && s.measurement.loss_pct <= max_loss)
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
