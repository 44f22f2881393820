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

use common::{Server, baresip, free_port, require_tool};
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

#[test]
fn tone_math_finds_the_frequency_played() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.wav");
    baresip::write_tone(&path, 1000.0, 1, 8000, 1);
    let audio = baresip::read_wav(&path);
    assert_eq!((audio.rate, audio.samples.len()), (8000, 8000));
    assert!(baresip::tone_share(&audio.samples, 8000, 1000.0) > 0.95);
    assert!(baresip::tone_share(&audio.samples, 8000, 600.0) < 0.05);
    assert!((baresip::zero_crossing_hz(&audio.samples, 8000) - 1000.0).abs() < 2.0);
}

#[test]
fn baresip_phones_in_namespaces_hear_each_others_tones_through_switchboard() {
    let lab = baresip::Lab::start("");
    let caller = baresip::PhoneSpec {
        user: "1000",
        codecs: "PCMU",
        tone_hz: 1000.0,
    };
    let callee = baresip::PhoneSpec {
        user: "1001",
        codecs: "PCMU",
        tone_hz: 600.0,
    };
    let (caller, callee) = lab.call(&caller, &callee, 8);
    baresip::assert_tone(&callee.heard(), "the callee", 1000.0);
    baresip::assert_tone(&caller.heard(), "the caller", 600.0);
    assert_cdrs(&lab.server, 1, "answered", Some("caller"));
}
