//! Calls through the real binary with SIPp on both ends: a SIPp UAS registers as
//! extension 1001 with digest auth, a SIPp UAC calls it as 1000, and switchboard
//! bridges every call. Afterwards the CDRs match the calls and no media port, call or
//! task is left behind.

mod common;

use common::{
    SIPP_EXTENSIONS, Server, admin_json, assert_no_call_left, assert_sipp_succeeded, call_uac,
    call_uac_with, cdrs, start_callee,
};
use std::process::Command;
use std::time::Duration;

#[test]
fn a_thousand_calls_between_registered_extensions_all_bridge_and_leave_nothing_behind() {
    let server = Server::start(SIPP_EXTENSIONS);
    let _callee = start_callee(&server);
    let regs = admin_json(&server, "registrations");
    assert_eq!(regs["registrations"][0]["aor"], "1001", "{regs}");
    let tasks_before = admin_json(&server, "status")["tasks"].clone();
    assert!(
        tasks_before.as_u64().is_some_and(|n| n > 0),
        "{tasks_before}"
    );

    let out = call_uac(&server, "1001", 1000, 100, 100);
    assert_sipp_succeeded(&out, "SIPp UAC reported failed calls");

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
    // The CLI exports the same records as CSV: a header and one row per call.
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["cdr", "--format", "csv", "--limit", "5000", "--config"])
        .arg(&server.config)
        .output()
        .expect("cli");
    let csv = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(csv.starts_with("id,call_id,caller,callee,"), "{csv}");
    assert_eq!(csv.lines().count(), 1001);
    assert_eq!(
        csv.lines()
            .filter(|l| l.contains(",1000,1001,") && l.contains(",answered,caller,"))
            .count(),
        1000
    );
    // Nothing left behind: no live call, every media port released, and as many tasks
    // as before the calls (each bridged call ran a relay task).
    assert_no_call_left(&server);
    let tasks_back = common::wait_until(Duration::from_secs(10), || {
        admin_json(&server, "status")["tasks"] == tasks_before
    });
    assert!(
        tasks_back,
        "tasks leaked: {} (before the calls: {tasks_before})",
        admin_json(&server, "status")["tasks"]
    );
}

#[test]
fn a_call_to_an_unregistered_extension_gets_480() {
    let server = Server::start(SIPP_EXTENSIONS);
    // Nobody registered as 1001: the UAC's INVITE must fail with 480.
    let out = call_uac(&server, "1001", 1, 1, 0);
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

#[test]
fn session_timers_are_granted_to_the_caller() {
    // RFC 4028 on the caller's leg: it asks for 120 s refreshed by itself and gets
    // exactly that in the 200, with Require: timer; the SIPp scenario fails the call
    // when either header is missing or different.
    let server = Server::start(SIPP_EXTENSIONS);
    let _callee = start_callee(&server);
    let out = call_uac_with(&server, "uac_timer.xml", "1001", 3, 3, 100);
    assert_sipp_succeeded(&out, "session timer headers missing");
}
