//! Calls through the real binary with SIPp on both ends: a SIPp UAS registers as
//! extension 1001 with digest auth, a SIPp UAC calls it as 1000, and switchboard
//! bridges every call. Afterwards the CDRs match the calls and no media port or call
//! is left behind.

mod common;

use common::{Server, require_tool};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const EXTENSIONS: &str = "[security]\nmax_requests_per_sec = 0\n\
[extensions.1000]\npassword = \"pw1000\"\nauth_algorithms = [\"MD5\"]\n\
[extensions.1001]\npassword = \"pw1001\"\nauth_algorithms = [\"MD5\"]\n";

fn scenario(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sipp")).join(name)
}

fn sipp(args: &[&str], server: &Server) -> Command {
    let mut cmd = Command::new(require_tool("sipp", "sip-tester"));
    cmd.args(["-i", "127.0.0.1", "-buff_size", "4194304", "-nostdin"])
        .args(args)
        .arg(server.sip.to_string());
    cmd
}

/// The callee: a SIPp UAS on a free port, registered as 1001.
fn start_callee(server: &Server) -> (Child, u16) {
    let port = common::free_port();
    let media = common::free_port();
    let uas = sipp(
        &[
            "-sf",
            scenario("uas.xml").to_str().unwrap_or_default(),
            "-p",
            &port.to_string(),
            "-mp",
            &media.to_string(),
            "-bg",
        ][..],
        server,
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("start SIPp UAS");
    let reg = sipp(
        &[
            "-sf",
            scenario("register.xml").to_str().unwrap_or_default(),
            "-p",
            &common::free_port().to_string(),
            "-s",
            "1001",
            "-au",
            "1001",
            "-ap",
            "pw1001",
            "-set",
            "contact_port",
            &port.to_string(),
            "-m",
            "1",
            "-timeout",
            "10s",
            "-timeout_error",
        ],
        server,
    )
    .output()
    .expect("run SIPp register");
    assert!(
        reg.status.success(),
        "registration failed: {}",
        String::from_utf8_lossy(&reg.stdout)
    );
    (uas, port)
}

fn call(server: &Server, calls: u32, rate: u32, hold_ms: u32) -> Output {
    sipp(
        &[
            "-sf",
            scenario("uac.xml").to_str().unwrap_or_default(),
            "-p",
            &common::free_port().to_string(),
            "-mp",
            &common::free_port().to_string(),
            "-s",
            "1001",
            "-au",
            "1000",
            "-ap",
            "pw1000",
            "-set",
            "caller",
            "1000",
            "-d",
            &hold_ms.to_string(),
            "-m",
            &calls.to_string(),
            "-r",
            &rate.to_string(),
            "-timeout",
            "120s",
            "-timeout_error",
        ],
        server,
    )
    .output()
    .expect("run SIPp UAC")
}

fn admin_json(server: &Server, command: &str) -> serde_json::Value {
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

fn cdrs(server: &Server) -> Vec<serde_json::Value> {
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

#[test]
fn a_thousand_calls_between_registered_extensions_all_bridge_and_leave_nothing_behind() {
    let server = Server::start(EXTENSIONS);
    let (mut uas, _) = start_callee(&server);
    let regs = admin_json(&server, "registrations");
    assert_eq!(regs["registrations"][0]["aor"], "1001", "{regs}");

    let out = call(&server, 1000, 100, 100);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "SIPp UAC reported failed calls:\n{text}"
    );

    // Every call has its CDR: answered, caller 1000, callee 1001, hung up by the caller.
    assert!(common::wait_until(Duration::from_secs(10), || cdrs(
        &server
    )
    .len()
        == 1000));
    let records = cdrs(&server);
    assert_eq!(records.len(), 1000);
    for r in &records {
        assert_eq!(
            (r["caller"].as_str(), r["callee"].as_str()),
            (Some("1000"), Some("1001")),
            "{r}"
        );
        assert_eq!(r["disposition"], "answered", "{r}");
        assert_eq!(r["hangup_by"], "caller", "{r}");
        assert!(r["answer_unix"].is_u64(), "{r}");
    }
    // Nothing left behind: no live call, every media port released.
    let ok = common::wait_until(Duration::from_secs(10), || {
        let calls = admin_json(&server, "calls");
        calls["calls"].as_array().is_some_and(|c| c.is_empty()) && calls["media_ports_in_use"] == 0
    });
    assert!(
        ok,
        "calls or media ports leaked: {}",
        admin_json(&server, "calls")
    );
    let _ = uas.kill();
    let _ = uas.wait();
}

#[test]
fn a_call_to_an_unregistered_extension_gets_480() {
    let server = Server::start(EXTENSIONS);
    // Nobody registered as 1001: the UAC's INVITE must fail with 480.
    let out = call(&server, 1, 1, 0);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the call cannot succeed: {text}");
    assert!(common::wait_until(Duration::from_secs(5), || cdrs(&server)
        .len()
        == 1));
    let records = cdrs(&server);
    assert_eq!(records[0]["disposition"], "no-answer", "{}", records[0]);
    assert_eq!(
        records[0]["hangup_cause"], "rejected with 480",
        "{}",
        records[0]
    );
}
