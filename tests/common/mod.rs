//! Starts the real `switchboard` binary on loopback ports with a temporary config and
//! data directory, for tests that talk to it over sockets.

#![allow(dead_code)] // each test binary uses a different part of this module

pub mod baresip;
pub mod media_phone;

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub struct Server {
    pub child: Child,
    pub sip: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    /// The last lines the server logged, printed when a test fails.
    log_tail: LogTail,
}

type LogTail = std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>>;
const LOG_TAIL_LINES: usize = 300;

/// A port free on UDP and TCP, never handed out twice by this process, with the three
/// ports above it free on UDP too (SIPp binds `-mp` and `-mp`+2 for media).
///
/// Ports come from 10000-19999: below the servers' RTP range (20000-29999) and the
/// kernel's ephemeral range, so no socket bound to port 0 (a SIPp's, a server's, another
/// test's) can take one between this check and its use. Tests in one binary run as
/// threads of one process and share the counter; the start depends on the pid so that
/// runners with a process per test rarely meet either.
pub fn free_port() -> u16 {
    static NEXT_BLOCK: AtomicU32 = AtomicU32::new(0);
    const BLOCKS: u32 = 2500;
    let first = std::process::id() % BLOCKS;
    for _ in 0..BLOCKS {
        let block = (first + NEXT_BLOCK.fetch_add(1, Ordering::Relaxed)) % BLOCKS;
        let port = u16::try_from(10000 + block * 4).expect("below 20000");
        let udp_free = (port..port + 4).all(|p| UdpSocket::bind(("127.0.0.1", p)).is_ok());
        if udp_free && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port block left in 10000-19999");
}

impl Server {
    /// Starts with `[sip] listen` on UDP and TCP at 127.0.0.1 (and ::1 when `ipv6`),
    /// plus `extra` TOML appended. Waits until the log says the admin API listens.
    pub fn start(extra: &str) -> Server {
        Self::start_with(extra, false)
    }

    /// Like [`Server::start`], with `sip_keys` added to the `[sip]` table.
    pub fn start_sip(sip_keys: &str) -> Server {
        Self::launch(sip_keys, "", false, None)
    }

    /// [`Server::start_sip`] plus `extra` TOML appended, as [`Server::start`].
    pub fn start_sip_with(sip_keys: &str, extra: &str) -> Server {
        Self::launch(sip_keys, extra, false, None)
    }

    pub fn start_with(extra: &str, ipv6: bool) -> Server {
        Self::launch("", extra, ipv6, None)
    }

    /// Like [`Server::start`], routing calls with the dialplans in `dir`.
    pub fn start_with_dialplans(extra: &str, dir: &std::path::Path) -> Server {
        Self::launch("", extra, false, Some(dir))
    }

    /// Like [`Server::start`], with SIP (UDP and TCP) on `ip` instead of 127.0.0.1, for
    /// phones in network namespaces; the admin API stays on loopback.
    pub fn start_on(ip: IpAddr, extra: &str) -> Server {
        Self::launch_on(ip, "", extra, false, None)
    }

    fn launch(
        sip_keys: &str,
        extra: &str,
        ipv6: bool,
        dialplans: Option<&std::path::Path>,
    ) -> Server {
        Self::launch_on(
            IpAddr::from([127, 0, 0, 1]),
            sip_keys,
            extra,
            ipv6,
            dialplans,
        )
    }

    fn launch_on(
        ip: IpAddr,
        sip_keys: &str,
        extra: &str,
        ipv6: bool,
        dialplans: Option<&std::path::Path>,
    ) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let admin_port = free_port();
        let sip = SocketAddr::new(ip, port);
        let mut listen = format!("\"udp:{sip}\", \"tcp:{sip}\"");
        if ipv6 {
            listen.push_str(&format!(", \"udp:[::1]:{port}\", \"tcp:[::1]:{port}\""));
        }
        let config = dir.path().join("switchboard.toml");
        let text = format!(
            "[sip]\nlisten = [{listen}]\n{sip_keys}[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n[storage]\ndir = \"{data}\"\n[dialplan]\ndir = \"{dialplans}\"\n{extra}\n",
            data = dir.path().join("data").display(),
            dialplans = dialplans
                .map_or(
                    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/dialplans")),
                    |d| d.to_path_buf()
                )
                .display(),
        );
        std::fs::write(&config, text).expect("write config");
        let (child, log_tail) = spawn_ready(&config);
        Server {
            child,
            log_tail,
            sip,
            admin: SocketAddr::from(([127, 0, 0, 1], admin_port)),
            dir,
            config,
        }
    }

    /// Stops the server with SIGTERM and starts it again on the same config and data.
    pub fn restart(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().expect("wait");
        assert!(
            status.success(),
            "switchboard did not stop cleanly: {status}"
        );
        (self.child, self.log_tail) = spawn_ready(&self.config);
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// Starts `switchboard run` on `config` and waits until its admin API listens.
fn spawn_ready(config: &std::path::Path) -> (Child, LogTail) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start switchboard");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    let log_tail = LogTail::default();
    let tail = log_tail.clone();
    std::thread::spawn(move || {
        let mut ready_sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if std::env::var_os("SB_TEST_LOG").is_some() {
                eprintln!("[switchboard] {line}");
            }
            if let Ok(mut tail) = tail.lock() {
                if tail.len() == LOG_TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line.clone());
            }
            if !ready_sent && line.contains("admin API listening") {
                ready_sent = true;
                let _ = tx.send(());
            }
        }
    });
    if rx.recv_timeout(Duration::from_secs(30)).is_err() {
        let _ = child.kill();
        panic!("switchboard did not start:\n{}", joined(&log_tail));
    }
    (child, log_tail)
}

fn joined(tail: &LogTail) -> String {
    tail.lock()
        .map(|t| t.iter().map(String::as_str).collect::<Vec<_>>().join("\n"))
        .unwrap_or_default()
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- the server's last log lines ----\n{}\n----",
                joined(&self.log_tail)
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends one datagram from a fresh socket and returns the first answer, if one comes
/// within `wait`.
pub fn udp_exchange(to: SocketAddr, bytes: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let bind = if to.is_ipv6() {
        "[::1]:0"
    } else {
        "127.0.0.1:0"
    };
    let sock = UdpSocket::bind(bind).expect("bind");
    sock.set_read_timeout(Some(wait)).expect("timeout");
    sock.send_to(bytes, to).expect("send");
    let mut buf = vec![0u8; 65536];
    match sock.recv_from(&mut buf) {
        Ok((n, _)) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

/// The status code of a response's first line.
pub fn status_of(resp: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(resp).ok()?;
    text.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
}

/// An OPTIONS request with a fresh branch and Call-ID.
pub fn options(to: SocketAddr, transport: &str, n: u32) -> Vec<u8> {
    format!(
        "OPTIONS sip:ping@{to} SIP/2.0\r\nVia: SIP/2.0/{transport} 127.0.0.1:9;branch=z9hG4bKping{n}\r\nMax-Forwards: 70\r\nFrom: <sip:tester@127.0.0.1>;tag=t{n}\r\nTo: <sip:ping@{to}>\r\nCall-ID: ping-{n}@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// Fails loudly when an interop tool is missing: tests never skip silently.
pub fn require_tool(bin: &str, package: &str) -> PathBuf {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {bin}"))
        .output()
        .expect("sh");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success() && !path.is_empty(),
        "`{bin}` is required for this test: apt-get install {package} (.ci/run installs it)"
    );
    PathBuf::from(path)
}

/// Waits until `f` is true or `limit` passes; returns the last value of `f`.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// Extensions 1000 and 1001 with MD5-only digest (SIPp knows no SHA-256), and no
/// request-rate limit for load from one address.
pub const SIPP_EXTENSIONS: &str = "[security]\nmax_requests_per_sec = 0\n\
[extensions.1000]\npassword = \"pw1000\"\nauth_algorithms = [\"MD5\"]\n\
[extensions.1001]\npassword = \"pw1001\"\nauth_algorithms = [\"MD5\"]\n";

pub fn sipp_scenario(name: &str) -> String {
    format!("{}/tests/sipp/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// SIPp aimed at the server, with the options every run needs.
pub fn sipp(args: &[&str], server: &Server) -> Command {
    sipp_from("127.0.0.1", args, server)
}

/// [`sipp`] from another local address.
pub fn sipp_from(ip: &str, args: &[&str], server: &Server) -> Command {
    let mut cmd = Command::new(require_tool("sipp", "sip-tester"));
    cmd.args(["-i", ip, "-buff_size", "4194304", "-nostdin"])
        .args(args)
        .arg(server.sip.to_string());
    cmd
}

/// One REGISTER with digest auth (tests/sipp/register.xml) from a fresh port at `ip`
/// for `ext` with `password`, its Contact naming `contact_port`, over `transport`
/// (SIPp's `u1` or `t1`), bounded at 10 s. SIPp exits successfully once it has its 200.
pub fn sipp_register(
    server: &Server,
    (ip, transport): (&str, &str),
    (ext, password): (&str, &str),
    contact_port: u16,
) -> Output {
    let (port, contact_port) = (free_port().to_string(), contact_port.to_string());
    sipp_from(
        ip,
        &[
            "-sf",
            &sipp_scenario("register.xml"),
            "-t",
            transport,
            "-p",
            &port,
            "-s",
            ext,
            "-au",
            ext,
            "-ap",
            password,
            "-set",
            "contact_port",
            &contact_port,
        ],
        server,
    )
    .args(["-m", "1", "-timeout", "10s", "-timeout_error"])
    .output()
    .expect("run SIPp register")
}

/// A SIPp UAS in the foreground, stopped when dropped (even when a test fails, after
/// printing what it wrote).
pub struct Callee {
    child: Child,
    log: tempfile::NamedTempFile,
    /// The RTP port it writes in its SDP (`-mp`).
    pub media_port: u16,
}

impl Callee {
    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// What the callee wrote to stderr so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Waits up to `limit` for a callee started with a call count to exit; it must
    /// have seen every call succeed (its scenario's checks included).
    pub fn finish(&mut self, limit: Duration) {
        wait_until(limit, || !self.running());
        let status = self.child.try_wait().ok().flatten();
        assert!(
            status.is_some_and(|s| s.success()),
            "the SIPp callee failed or did not finish ({status:?}): {}",
            self.output()
        );
    }
}

impl Drop for Callee {
    fn drop(&mut self) {
        let exited = !self.running();
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() || exited {
            eprintln!(
                "---- the SIPp callee (exited early: {exited}) wrote ----\n{}\n----",
                self.output()
            );
        }
    }
}

/// The callee: a SIPp UAS on a free port, registered as 1001 by a second SIPp.
pub fn start_callee(server: &Server) -> Callee {
    start_callee_with(server, "uas.xml", &[])
}

/// [`start_callee`] with another UAS scenario from tests/sipp and more SIPp options
/// (`-m` makes it exit after that many calls, for [`Callee::finish`]).
pub fn start_callee_with(server: &Server, scenario: &str, options: &[&str]) -> Callee {
    let port = free_port();
    let media_port = free_port();
    let log = tempfile::NamedTempFile::new().expect("callee log");
    let uas = sipp(
        &[
            "-sf",
            &sipp_scenario(scenario),
            "-p",
            &port.to_string(),
            "-mp",
            &media_port.to_string(),
        ],
        server,
    )
    .args(options)
    .stdout(Stdio::null())
    .stderr(log.reopen().expect("callee log"))
    .spawn()
    .expect("start SIPp UAS");
    let mut callee = Callee {
        child: uas,
        log,
        media_port,
    };
    // Registered only once it listens, so no INVITE can find the port closed.
    let listening = wait_until(Duration::from_secs(10), || {
        UdpSocket::bind(("127.0.0.1", port)).is_err() || !callee.running()
    });
    assert!(
        listening && callee.running(),
        "the SIPp callee did not start: {}",
        callee.output()
    );
    let reg = sipp_register(server, ("127.0.0.1", "u1"), ("1001", "pw1001"), port);
    assert!(
        reg.status.success(),
        "registration failed: {}",
        String::from_utf8_lossy(&reg.stdout)
    );
    callee
}

/// `calls` calls from 1000 to `callee` at `rate` per second, each held `hold_ms`.
pub fn call_uac(server: &Server, callee: &str, calls: u32, rate: u32, hold_ms: u32) -> Output {
    call_uac_with(server, "uac.xml", callee, calls, rate, hold_ms)
}

/// [`call_uac`] with another UAC scenario from tests/sipp.
pub fn call_uac_with(
    server: &Server,
    scenario: &str,
    callee: &str,
    calls: u32,
    rate: u32,
    hold_ms: u32,
) -> Output {
    let (hold, calls, rate) = (hold_ms.to_string(), calls.to_string(), rate.to_string());
    uac(server, scenario, callee, free_port())
        .args([
            "-d",
            &hold,
            "-m",
            &calls,
            "-r",
            &rate,
            "-timeout",
            "120s",
            "-timeout_error",
        ])
        .output()
        .expect("run SIPp UAC")
}

/// A SIPp UAC calling `callee` as 1000 with a scenario from tests/sipp, its RTP port
/// (`-mp`) `media_port`; add the call options.
pub fn uac(server: &Server, scenario: &str, callee: &str, media_port: u16) -> Command {
    let mut cmd = sipp(
        &[
            "-sf",
            &sipp_scenario(scenario),
            "-p",
            &free_port().to_string(),
            "-mp",
            &media_port.to_string(),
            "-s",
            callee,
            "-au",
            "1000",
            "-ap",
            "pw1000",
        ],
        server,
    );
    cmd.args(["-set", "caller", "1000"]);
    cmd
}

/// SIPp's own limit for either end of a one-call test; every such call ends well
/// within it.
pub const ONE_CALL_TIMEOUT: &str = "30s";

/// One call from 1000 to 1001 with the UAC scenario `scenario` from tests/sipp, pausing
/// `hold_ms` where the scenario pauses, with more SIPp options (`-set` for the
/// scenario's variables, `-t t1` for TCP, ...) in `options`.
pub fn one_call(server: &Server, scenario: &str, hold_ms: u32, options: &[&str]) -> Output {
    one_call_command(server, scenario, free_port(), hold_ms, options)
        .output()
        .expect("run SIPp UAC")
}

/// [`one_call`] on another thread, the caller's RTP port `media`, so that the test can
/// watch the call while it is up.
pub fn one_call_in_background(
    server: &Server,
    scenario: &str,
    media: u16,
    hold_ms: u32,
    options: &[&str],
) -> std::thread::JoinHandle<Output> {
    let mut cmd = one_call_command(server, scenario, media, hold_ms, options);
    std::thread::spawn(move || cmd.output().expect("run SIPp UAC"))
}

fn one_call_command(
    server: &Server,
    scenario: &str,
    media: u16,
    hold_ms: u32,
    options: &[&str],
) -> Command {
    let mut cmd = uac(server, scenario, "1001", media);
    cmd.args(["-d", &hold_ms.to_string()])
        .args(["-m", "1", "-timeout", ONE_CALL_TIMEOUT, "-timeout_error"])
        .args(options);
    cmd
}

/// The callee of a one-call test: the UAS scenario `scenario` for exactly one call
/// (bounded by [`ONE_CALL_TIMEOUT`]), with more SIPp options in `options`; its verdict
/// comes from [`Callee::finish`].
pub fn one_call_callee(server: &Server, scenario: &str, options: &[&str]) -> Callee {
    let mut args = vec!["-m", "1", "-timeout", ONE_CALL_TIMEOUT, "-timeout_error"];
    args.extend(options);
    start_callee_with(server, scenario, &args)
}

/// Fails with `what` and everything SIPp wrote unless it exited successfully (every
/// call succeeded and passed the scenario's checks).
pub fn assert_sipp_succeeded(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A server that asks for and accepts sessions of `secs` seconds (RFC 4028), below the
/// RFC's 90 s minimum for tests.
pub fn session_timer_server(secs: u32) -> Server {
    Server::start_sip_with(
        &format!("session_expires_secs = {secs}\nmin_se_secs = {secs}\n"),
        SIPP_EXTENSIONS,
    )
}

/// The server's call detail records, oldest first.
pub fn cdrs(server: &Server) -> Vec<serde_json::Value> {
    let url = format!("http://{}/api/cdrs?limit=5000", server.admin);
    let body = ureq::get(&url)
        .call()
        .expect("cdrs")
        .into_body()
        .read_to_string()
        .expect("body");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    v["cdrs"].as_array().cloned().unwrap_or_default()
}

/// Runs an admin subcommand against the server and parses its JSON.
pub fn admin_json(server: &Server, command: &str) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args([command, "--config"])
        .arg(&server.config)
        .output()
        .expect("cli");
    assert!(
        out.status.success(),
        "{command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

/// The torture messages and what the server must do with each
/// (tests/fixtures/torture-expect.tsv): full path and expectation.
pub fn expectations() -> Vec<(String, String)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    std::fs::read_to_string(format!("{dir}/torture-expect.tsv"))
        .expect("table")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("file\t") && !l.is_empty())
        .map(|l| {
            let (f, e) = l.split_once('\t').expect("two columns");
            (format!("{dir}/conformance/{f}"), e.to_string())
        })
        .collect()
}

/// The only CDR the server wrote, waiting up to 10 s for it.
pub fn only_cdr(server: &Server) -> serde_json::Value {
    assert!(
        wait_until(Duration::from_secs(10), || !cdrs(server).is_empty()),
        "no CDR"
    );
    let records = cdrs(server);
    assert_eq!(records.len(), 1, "{records:?}");
    records[0].clone()
}

/// An answered call from 1000 to 1001 that `by` hung up with a cause starting with
/// `cause_prefix` (the whole cause is a prefix too).
pub fn assert_answered_cdr(cdr: &serde_json::Value, by: &str, cause_prefix: &str) {
    assert_eq!(
        (cdr["caller"].as_str(), cdr["callee"].as_str()),
        (Some("1000"), Some("1001")),
        "{cdr}"
    );
    assert_eq!(cdr["disposition"], "answered", "{cdr}");
    assert_eq!(cdr["hangup_by"], by, "{cdr}");
    assert!(
        cdr["hangup_cause"]
            .as_str()
            .is_some_and(|c| c.starts_with(cause_prefix)),
        "want a cause starting {cause_prefix:?}: {cdr}"
    );
}

/// Waits up to 10 s for the server's first live call to satisfy `check`; fails with
/// `what` and the last list of calls if it never does.
pub fn assert_first_call_becomes(
    server: &Server,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) {
    let mut last = serde_json::Value::Null;
    let ok = wait_until(Duration::from_secs(10), || {
        last = admin_json(server, "calls");
        check(&last["calls"][0])
    });
    assert!(ok, "{what}: {last}");
}

/// Whether the relay sends a live `call`'s media to `caller` on the caller's leg and to
/// `callee` on the callee's (`ip:port`, as the phones' SDP said).
pub fn relays_to(call: &serde_json::Value, caller: &str, callee: &str) -> bool {
    call["a_leg"]["remote_media"] == caller && call["b_leg"]["remote_media"] == callee
}

/// A call in which one phone sends a re-INVITE without SDP, and the offer and answer
/// that follow move both phones' RTP ports by 2 (the scenarios say which phone asks).
/// The relay must follow both while the call is up and both ends must succeed; the
/// caller hangs up 3 s after the exchange. Returns the call's CDR.
pub fn offerless_reinvite_moving_both_ports(
    server: &Server,
    callee_scenario: &str,
    caller_scenario: &str,
) -> serde_json::Value {
    let mut callee = one_call_callee(server, callee_scenario, &[]);
    let caller_media = free_port();
    let caller = one_call_in_background(server, caller_scenario, caller_media, 3000, &[]);
    let wanted = (
        format!("127.0.0.1:{}", caller_media + 2),
        format!("127.0.0.1:{}", callee.media_port + 2),
    );
    assert_first_call_becomes(
        server,
        &format!("the relay did not follow the late exchange {wanted:?}"),
        |call| relays_to(call, &wanted.0, &wanted.1),
    );
    assert_sipp_succeeded(&caller.join().expect("UAC thread"), "the caller failed");
    callee.finish(Duration::from_secs(40));
    only_cdr(server)
}

/// Within 10 s: no live call and every media port free again.
pub fn assert_no_call_left(server: &Server) {
    let ok = wait_until(Duration::from_secs(10), || {
        let calls = admin_json(server, "calls");
        calls["calls"].as_array().is_some_and(|c| c.is_empty()) && calls["media_ports_in_use"] == 0
    });
    assert!(
        ok,
        "calls or media ports left: {}",
        admin_json(server, "calls")
    );
}
