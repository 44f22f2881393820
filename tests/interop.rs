//! Interop suite (issue 6): switchboard against other people's SIP stacks.
//!
//! SIPp scenarios (tests/interop/*.xml) on loopback: REGISTER with the right and a
//! wrong password; a basic call; CANCEL; busy; hold and resume by re-INVITE; BYE from
//! the callee; forking with a 200 that crosses the CANCEL (ACKed and hung up); a 180
//! that arrives after the 200 (not relayed). Calls go through the shipped Lua dialplan
//! (dialplans/), except busy. In each call test the callee is a SIPp UAS registered as
//! 1001 from the port it then answers on, and the caller a SIPp UAC calling as 1000
//! (answering the 407). Both SIPp processes must finish with every call successful, and
//! the CDR must say what happened.
//!
//! baresip: two baresip phones in their own network namespaces (baresip refuses a
//! loopback media address) register and call each other through switchboard, each
//! playing a tone from a WAV file; the audio each one decodes must be the other one's
//! tone. Needs root for the namespaces (CI runs as root).
//!
//! Every test is bounded by SIPp's own `-timeout` or explicit deadlines.

mod common;

use common::{Server, free_port, require_tool};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const EXTENSIONS: &str = "[extensions.1000]\npassword = \"interop-1000\"\nauth_algorithms = [\"MD5\"]\n\
[extensions.1001]\npassword = \"interop-1001\"\nauth_algorithms = [\"MD5\"]\n";

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop")
        .join(format!("{name}.xml"))
}

/// SIPp against `server`, run from `dir` (where `-trace_err` puts its error log).
fn sipp(server: &Server, name: &str, dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(require_tool("sipp", "sip-tester"));
    cmd.current_dir(dir)
        .arg("-sf")
        .arg(scenario(name))
        .args(["-i", "127.0.0.1", "-buff_size", "4194304", "-nostdin"])
        .args(["-timeout", "30s", "-timeout_error", "-trace_err"])
        .args(args)
        .arg(server.sip.to_string());
    cmd
}

/// SIPp's output and error log, for assertion messages.
fn sipp_report(out: &Output, dir: &Path) -> String {
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().ends_with("_errors.log") {
                text.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
    }
    // The last screen is what matters; earlier ones repeat it.
    let tail: String = text.chars().rev().take(6000).collect();
    tail.chars().rev().collect()
}

fn register(server: &Server, dir: &Path, scenario: &str, password: &str, port: u16) -> Output {
    sipp(
        server,
        scenario,
        dir,
        &[
            "-s",
            "1001",
            "-au",
            "1001",
            "-ap",
            password,
            "-p",
            &port.to_string(),
            "-m",
            "1",
        ],
    )
    .output()
    .expect("run SIPp")
}

/// A SIPp UAS answering as extension 1001, registered from the port it listens on.
struct Callee {
    child: Child,
    dir: tempfile::TempDir,
}

impl Callee {
    fn start(server: &Server, uas: &str, calls: u32) -> Callee {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let reg = register(server, dir.path(), "register", "interop-1001", port);
        assert!(
            reg.status.success(),
            "1001 could not register: {}",
            sipp_report(&reg, dir.path())
        );
        let child = sipp(
            server,
            uas,
            dir.path(),
            &["-p", &port.to_string(), "-m", &calls.to_string()],
        )
        .stdout(std::fs::File::create(dir.path().join("uas.out")).expect("log"))
        .stderr(Stdio::null())
        .spawn()
        .expect("start SIPp UAS");
        Callee { child, dir }
    }

    /// Waits (bounded) for the UAS to finish its calls; returns whether all succeeded.
    fn finish(mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => break Err(format!("SIPp UAS exited with {status}")),
                Ok(None) if Instant::now() > deadline => break Err("SIPp UAS still running".into()),
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => break Err(e.to_string()),
            }
        }
        .map_err(|why| {
            let screen =
                std::fs::read_to_string(self.dir.path().join("uas.out")).unwrap_or_default();
            let tail: String = screen
                .chars()
                .rev()
                .take(4000)
                .collect::<String>()
                .chars()
                .rev()
                .collect();
            format!("{why}\n{tail}")
        })
    }
}

impl Drop for Callee {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `calls` calls from a SIPp UAC (as 1000) against a SIPp UAS (as 1001); both
/// must report every call successful.
fn call_through(server: &Server, uac: &str, uas: &str, calls: u32) {
    call_forked(server, uac, &[uas], calls);
}

/// Like [`call_through`], with one SIPp UAS per scenario in `phones`, each registered
/// as a contact of 1001, so that every call forks to all of them.
fn call_forked(server: &Server, uac: &str, phones: &[&str], calls: u32) {
    let callees: Vec<Callee> = phones
        .iter()
        .map(|uas| Callee::start(server, uas, calls))
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = sipp(
        server,
        uac,
        dir.path(),
        &[
            "-s",
            "1001",
            "-au",
            "1000",
            "-ap",
            "interop-1000",
            "-m",
            &calls.to_string(),
            "-r",
            "5",
            "-d",
            "300",
            "-p",
            &free_port().to_string(),
        ],
    )
    .output()
    .expect("run SIPp UAC");
    assert!(
        out.status.success(),
        "{uac}: the caller saw a failed call:\n{}",
        sipp_report(&out, dir.path())
    );
    for (callee, uas) in callees.into_iter().zip(phones) {
        if let Err(why) = callee.finish() {
            panic!("{uas}: the callee saw a failed call: {why}");
        }
    }
}

fn cdrs(server: &Server, n: usize) -> Vec<serde_json::Value> {
    common::wait_until(Duration::from_secs(10), || common::cdrs(server).len() >= n);
    common::cdrs(server)
}

/// Every one of the `n` CDRs is a call from 1000 to 1001 that ended as `disposition`,
/// hung up by `hangup_by` when given.
fn assert_cdrs(server: &Server, n: usize, disposition: &str, hangup_by: Option<&str>) {
    let records = cdrs(server, n);
    assert_eq!(records.len(), n, "{records:?}");
    for r in &records {
        assert_eq!(r["caller"], "1000", "{r}");
        assert_eq!(r["callee"], "1001", "{r}");
        assert_eq!(r["disposition"], disposition, "{r}");
        if let Some(by) = hangup_by {
            assert_eq!(r["hangup_by"], by, "{r}");
        }
    }
}

#[test]
fn register_with_the_right_password_is_accepted() {
    let server = Server::start(EXTENSIONS);
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let out = register(&server, dir.path(), "register", "interop-1001", port);
    assert!(out.status.success(), "{}", sipp_report(&out, dir.path()));
    let url = format!("http://{}/api/registrations", server.admin);
    let body = ureq::get(&url)
        .call()
        .expect("registrations")
        .body_mut()
        .read_to_string()
        .expect("body");
    assert!(body.contains("1001"), "{body}");
    assert!(
        body.contains(&port.to_string()),
        "the contact is SIPp's: {body}"
    );
}

#[test]
fn register_with_a_wrong_password_is_refused() {
    let server = Server::start(EXTENSIONS);
    let dir = tempfile::tempdir().expect("tempdir");
    let out = register(
        &server,
        dir.path(),
        "register_rejected",
        "not-the-password",
        free_port(),
    );
    assert!(
        out.status.success(),
        "a wrong password must get 401 or 403 after the credentials:\n{}",
        sipp_report(&out, dir.path())
    );
    let url = format!("http://{}/api/registrations", server.admin);
    let body = ureq::get(&url)
        .call()
        .expect("registrations")
        .body_mut()
        .read_to_string()
        .expect("body");
    assert!(!body.contains("1001"), "nothing may be registered: {body}");
}

#[test]
fn basic_call_from_1000_to_1001_hung_up_by_the_caller() {
    let server = Server::start(EXTENSIONS);
    call_through(&server, "uac_call", "uas_answer", 3);
    assert_cdrs(&server, 3, "answered", Some("caller"));
}

#[test]
fn cancel_while_ringing_reaches_the_callee_and_the_caller_gets_487() {
    let server = Server::start(EXTENSIONS);
    call_through(&server, "uac_cancel", "uas_ring", 2);
    assert_cdrs(&server, 2, "cancelled", Some("caller"));
}

/// The shipped dialplan sends a busy extension's callers to voicemail; this test's plan
/// (tests/interop/dialplans) hands the callee's 486 to the caller, as a plain B2BUA would.
#[test]
fn busy_callee_gives_the_caller_486() {
    let plans = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/dialplans");
    let server = Server::start_with_dialplans(EXTENSIONS, &plans);
    call_through(&server, "uac_busy", "uas_busy", 2);
    assert_cdrs(&server, 2, "busy", None);
}

#[test]
fn hold_and_resume_by_reinvite_are_carried_to_the_other_leg() {
    let server = Server::start(EXTENSIONS);
    call_through(&server, "uac_hold", "uas_hold", 2);
    assert_cdrs(&server, 2, "answered", Some("caller"));
}

/// Forking with a race: one phone answers, the other answers too, after its CANCEL
/// (its 200 crossed the CANCEL). The caller gets one answered call; the late phone gets
/// its 200 ACKed and then a BYE (uas_fork_late_200.xml fails without them).
#[test]
fn a_second_2xx_from_a_cancelled_fork_is_acked_and_hung_up() {
    let server = Server::start(EXTENSIONS);
    call_forked(&server, "uac_call", &["uas_answer", "uas_fork_late_200"], 2);
    assert_cdrs(&server, 2, "answered", Some("caller"));
}

/// The callee's 180 arrives after its 200: the caller never sees a 180 after the 200.
#[test]
fn a_180_arriving_after_the_200_is_not_relayed() {
    let server = Server::start(EXTENSIONS);
    call_through(&server, "uac_call_in_order", "uas_late_180", 2);
    assert_cdrs(&server, 2, "answered", Some("caller"));
}

#[test]
fn bye_from_the_callee_ends_the_caller_leg() {
    let server = Server::start(EXTENSIONS);
    call_through(&server, "uac_wait_bye", "uas_bye", 2);
    assert_cdrs(&server, 2, "answered", Some("callee"));
}

// ---- baresip in network namespaces ----

/// Runs `ip` with `args`, panicking with its stderr on failure.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace joined to this one by a veth pair, with `outside` on our side
/// and `inside` in the namespace (a /30), and a default route back to us. Dropping it
/// deletes the namespace, which takes the veth pair with it.
struct Namespace {
    name: String,
}

impl Namespace {
    fn create(name: &str, outside: Ipv4Addr, inside: Ipv4Addr) -> Namespace {
        // A namespace left behind by a killed run of this test goes first.
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        ip(&["netns", "add", name]);
        let ns = Namespace { name: name.into() };
        let host_if = format!("{name}h");
        let ns_if = format!("{name}n");
        let _ = Command::new("ip").args(["link", "del", &host_if]).output();
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ]);
        ip(&["link", "set", &ns_if, "netns", name]);
        ip(&["addr", "add", &format!("{outside}/30"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        ns.exec_ip(&["addr", "add", &format!("{inside}/30"), "dev", &ns_if]);
        ns.exec_ip(&["link", "set", &ns_if, "up"]);
        ns.exec_ip(&["link", "set", "lo", "up"]);
        ns.exec_ip(&["route", "add", "default", "via", &outside.to_string()]);
        ns
    }

    fn exec_ip(&self, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.name, "ip"];
        all.extend_from_slice(args);
        ip(&all);
    }

    fn interface(&self) -> String {
        format!("{}n", self.name)
    }

    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A running baresip, killed when dropped.
struct Phone {
    child: Child,
    dir: PathBuf,
}

impl Drop for Phone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const SAMPLE_RATE: u32 = 8000;

/// A mono 16-bit WAV file holding `seconds` of a sine at `hz`.
fn write_tone(path: &Path, hz: f64, seconds: u32) {
    let samples: Vec<i16> = (0..SAMPLE_RATE * seconds)
        .map(|i| {
            let t = f64::from(i) / f64::from(SAMPLE_RATE);
            (12_000.0 * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16
        })
        .collect();
    let data_len = (samples.len() * 2) as u32;
    let mut wav = Vec::with_capacity(44 + data_len as usize);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data_len).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&SAMPLE_RATE.to_le_bytes());
    wav.extend_from_slice(&(SAMPLE_RATE * 2).to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        wav.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(path, wav).expect("write WAV");
}

/// The samples of a mono 16-bit PCM WAV file (the chunk walk tolerates extra chunks).
fn read_wav(path: &Path) -> Vec<i16> {
    let bytes = std::fs::read(path).expect("read WAV");
    assert!(bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WAVE");
    let mut at = 12;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        let body = &bytes[at + 8..(at + 8 + len).min(bytes.len())];
        if id == b"fmt " {
            let channels = u16::from_le_bytes([body[2], body[3]]);
            let bits = u16::from_le_bytes([body[14], body[15]]);
            assert_eq!(
                (channels, bits),
                (1, 16),
                "{}: mono 16-bit expected",
                path.display()
            );
        }
        if id == b"data" {
            return body
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]))
                .collect();
        }
        at += 8 + len + (len & 1);
    }
    panic!("{}: no data chunk", path.display());
}

/// Signal power at `hz` (Goertzel) as a share of the total power of `samples`.
fn tone_share(samples: &[i16], hz: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * hz / f64::from(SAMPLE_RATE);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    let mut total = 0.0f64;
    for &x in samples {
        let x = f64::from(x);
        let s0 = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
        total += x * x;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    // A pure sine of N samples gives power N^2 A^2 / 4 and total N A^2 / 2.
    if total == 0.0 {
        0.0
    } else {
        2.0 * power / (samples.len() as f64 * total)
    }
}

/// The frequency zero crossings say `samples` has.
fn zero_crossing_hz(samples: &[i16]) -> f64 {
    let crossings = samples
        .windows(2)
        .filter(|w| (w[0] < 0) != (w[1] < 0))
        .count();
    crossings as f64 / 2.0 / (samples.len() as f64 / f64::from(SAMPLE_RATE))
}

/// Asserts that the audio a phone decoded is the tone the other phone played.
fn assert_heard(phone: &Phone, who: &str, hz: f64) {
    let dump = std::fs::read_dir(&phone.dir)
        .expect("phone dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
        .unwrap_or_else(|| panic!("{who} recorded no received audio"));
    let samples = read_wav(&dump);
    // Loud samples: the far end's tone, skipping silence before the media flowed.
    let start = samples.iter().position(|s| s.unsigned_abs() > 2_000);
    let Some(start) = start else {
        panic!("{who} received only silence ({} samples)", samples.len());
    };
    let heard = &samples[start..];
    assert!(
        heard.len() >= SAMPLE_RATE as usize,
        "{who} received under a second of audio: {} samples",
        heard.len()
    );
    let second = &heard[..SAMPLE_RATE as usize];
    let share = tone_share(second, hz);
    let zc = zero_crossing_hz(second);
    assert!(
        share > 0.8 && (zc - hz).abs() < 20.0,
        "{who} did not hear {hz} Hz: {:.0}% of the power at {hz} Hz, zero crossings say {zc:.0} Hz",
        share * 100.0
    );
}

#[test]
fn tone_math_finds_the_frequency_played() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.wav");
    write_tone(&path, 1000.0, 1);
    let samples = read_wav(&path);
    assert_eq!(samples.len(), SAMPLE_RATE as usize);
    assert!(tone_share(&samples, 1000.0) > 0.95);
    assert!(tone_share(&samples, 600.0) < 0.05);
    assert!((zero_crossing_hz(&samples) - 1000.0).abs() < 2.0);
}

#[test]
fn baresip_phones_in_namespaces_hear_each_others_tones_through_switchboard() {
    let baresip = require_tool("baresip", "baresip");
    require_tool("ip", "iproute2");
    let uid = Command::new("id").arg("-u").output().expect("id");
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "network namespaces need root (CI runs as root)"
    );
    let modules = Path::new("/usr/lib/baresip/modules");
    assert!(
        modules.join("aufile.so").exists(),
        "baresip's aufile module is missing"
    );

    // Two /30 subnets picked from the process id, so a parallel run elsewhere does not
    // collide; switchboard listens on the caller side's host address, which the callee
    // namespace reaches through its own default route.
    let pid = std::process::id();
    let (b, c) = (100 + (pid % 100) as u8, ((pid / 100) % 250) as u8);
    let host_a = Ipv4Addr::new(10, b, c, 1);
    let caller_ip = Ipv4Addr::new(10, b, c, 2);
    let host_b = Ipv4Addr::new(10, b, c, 5);
    let callee_ip = Ipv4Addr::new(10, b, c, 6);
    let caller_ns = Namespace::create(&format!("sbia{pid}"), host_a, caller_ip);
    let callee_ns = Namespace::create(&format!("sbib{pid}"), host_b, callee_ip);

    let server = Server::start_on(
        IpAddr::V4(host_a),
        &format!("[media]\npublic_address = \"{host_a}\"\n{EXTENSIONS}"),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let phone = |ns: &Namespace,
                 name: &str,
                 user: &str,
                 ip: Ipv4Addr,
                 tone_hz: f64,
                 extra: &str| {
        let home = dir.path().join(name);
        std::fs::create_dir_all(&home).expect("mkdir");
        write_tone(&home.join("tone.wav"), tone_hz, 30);
        let config = format!(
            "poll_method\t\tepoll\nsip_listen\t\t{ip}:5060\nsip_trans_def\t\tudp\n\
             audio_player\t\taubridge,nil\naudio_alert\t\taubridge,nil\n\
             audio_source\t\taufile,{tone}\naudio_srate\t\t8000\naudio_channels\t\t1\n\
             net_interface\t\t{iface}\nmodule_path\t\t{modules}\n\
             module\t\t\tg711.so\nmodule\t\t\taufile.so\nmodule\t\t\taubridge.so\nmodule\t\t\tsndfile.so\n\
             module_app\t\taccount.so\nmodule_app\t\tmenu.so\nsnd_path\t\t{home}\n",
            tone = home.join("tone.wav").display(),
            iface = ns.interface(),
            modules = modules.display(),
            home = home.display(),
        );
        std::fs::write(home.join("config"), config).expect("config");
        std::fs::write(
            home.join("accounts"),
            format!(
                "<sip:{user}@{sip}>;auth_pass=interop-{user};regint=600;audio_codecs=PCMU{extra}\n",
                sip = server.sip
            ),
        )
        .expect("accounts");
        (home, ns.command(&baresip))
    };

    let (callee_home, mut callee_cmd) = phone(
        &callee_ns,
        "callee",
        "1001",
        callee_ip,
        600.0,
        ";answermode=auto",
    );
    let callee = Phone {
        child: callee_cmd
            .args(["-f"])
            .arg(&callee_home)
            .args(["-t", "20"])
            .stdout(std::fs::File::create(callee_home.join("out.log")).expect("log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("start callee baresip"),
        dir: callee_home.clone(),
    };
    let registered = common::wait_until(Duration::from_secs(10), || {
        ureq::get(&format!("http://{}/api/registrations", server.admin))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .is_some_and(|body| body.contains("1001"))
    });
    assert!(
        registered,
        "the callee baresip did not register: {}",
        std::fs::read_to_string(callee_home.join("out.log")).unwrap_or_default()
    );

    let (caller_home, mut caller_cmd) = phone(&caller_ns, "caller", "1000", caller_ip, 1000.0, "");
    let mut caller = Phone {
        child: caller_cmd
            .args(["-f"])
            .arg(&caller_home)
            .args(["-t", "8", "-e"])
            .arg(format!("/dial sip:1001@{}", server.sip))
            .stdout(std::fs::File::create(caller_home.join("out.log")).expect("log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("start caller baresip"),
        dir: caller_home.clone(),
    };
    // The caller talks for its -t seconds, then quits, hanging up.
    let done = common::wait_until(Duration::from_secs(20), || {
        matches!(caller.child.try_wait(), Ok(Some(_)))
    });
    let log = |home: &Path| std::fs::read_to_string(home.join("out.log")).unwrap_or_default();
    assert!(
        done,
        "the caller baresip did not finish: {}",
        log(&caller_home)
    );
    assert!(
        log(&caller_home).contains("Call established"),
        "the call was not established:\ncaller: {}\ncallee: {}",
        log(&caller_home),
        log(&callee_home)
    );
    assert_heard(&callee, "the callee", 1000.0);
    assert_heard(&caller, "the caller", 600.0);
    assert_cdrs(&server, 1, "answered", Some("caller"));
}
