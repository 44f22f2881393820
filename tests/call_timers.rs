//! The timers that end a call whose phone is gone, through the real binary with SIPp on
//! both ends: the media timeout (`[media] timeout_secs`), which spares held calls, and
//! RFC 4028 session timers on each leg, with intervals of seconds (`[sip]
//! min_se_secs` below the RFC's 90 s, for tests). Each test runs one call with a SIPp
//! caller (1000) and a SIPp callee (1001, `-m 1`), checks that both ends saw the call
//! go as expected, and reads the CDR and the live calls afterwards.

mod common;

use common::{
    SIPP_EXTENSIONS, Server, admin_json, cdrs, free_port, sipp, sipp_scenario, start_callee_with,
};
use std::process::Output;
use std::time::Duration;

/// SIPp's own limit for each end's call; every test's call ends well within it.
const SIPP_TIMEOUT: &str = "30s";

/// One call from 1000 to 1001 with the caller scenario `scenario`, `-set` for each of
/// `vars`, holding `hold_ms` where the scenario pauses.
fn call(server: &Server, scenario: &str, vars: &[(&str, &str)], hold_ms: u32) -> Output {
    let (port, media) = (free_port().to_string(), free_port().to_string());
    let mut cmd = sipp(
        &[
            "-sf",
            &sipp_scenario(scenario),
            "-p",
            &port,
            "-mp",
            &media,
            "-s",
            "1001",
            "-au",
            "1000",
            "-ap",
            "pw1000",
        ],
        server,
    );
    cmd.args(["-set", "caller", "1000", "-d", &hold_ms.to_string()])
        .args(["-m", "1", "-timeout", SIPP_TIMEOUT, "-timeout_error"]);
    for (name, value) in vars {
        cmd.args(["-set", name, value]);
    }
    cmd.output().expect("run SIPp UAC")
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The callee: `scenario` for exactly one call, then SIPp exits with its verdict.
fn callee(server: &Server, scenario: &str, vars: &[(&str, &str)]) -> common::Callee {
    let mut args = vec!["-m", "1", "-timeout", SIPP_TIMEOUT, "-timeout_error"];
    for (name, value) in vars {
        args.extend(["-set", name, value]);
    }
    start_callee_with(server, scenario, &args)
}

fn assert_callee_ok(callee: &mut common::Callee) {
    callee.finish(Duration::from_secs(40));
}

/// The only CDR, once written.
fn the_cdr(server: &Server) -> serde_json::Value {
    assert!(
        common::wait_until(Duration::from_secs(5), || !cdrs(server).is_empty()),
        "no CDR"
    );
    let records = cdrs(server);
    assert_eq!(records.len(), 1, "{records:?}");
    records[0].clone()
}

/// An answered call between 1000 and 1001 that `by` ended with a cause starting with
/// `cause`.
fn assert_cdr(cdr: &serde_json::Value, by: &str, cause: &str) {
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
            .is_some_and(|c| c.starts_with(cause)),
        "want a cause starting {cause:?}: {cdr}"
    );
}

fn duration(cdr: &serde_json::Value) -> u64 {
    cdr["duration_secs"].as_u64().expect("duration_secs")
}

/// No live call and every media port free again.
fn assert_nothing_left(server: &Server) {
    let ok = common::wait_until(Duration::from_secs(5), || {
        let calls = admin_json(server, "calls");
        calls["calls"].as_array().is_some_and(|c| c.is_empty()) && calls["media_ports_in_use"] == 0
    });
    assert!(
        ok,
        "calls or media ports left: {}",
        admin_json(server, "calls")
    );
}

/// A server whose media timeout is `secs`.
fn media_timeout_server(secs: u32) -> Server {
    Server::start(&format!(
        "[media]\ntimeout_secs = {secs}\n{SIPP_EXTENSIONS}"
    ))
}

/// A server that asks for and accepts sessions of `secs` seconds.
fn session_timer_server(secs: u32) -> Server {
    Server::start_sip_with(
        &format!("session_expires_secs = {secs}\nmin_se_secs = {secs}\n"),
        SIPP_EXTENSIONS,
    )
}

#[test]
fn a_call_in_which_no_rtp_flows_is_ended_by_the_media_timeout() {
    let server = media_timeout_server(2);
    let mut callee = callee(&server, "uas.xml", &[]);
    // The caller's session timer is far away; only the media timeout can end the call.
    let out = call(&server, "uac_wait_bye.xml", &[("se", "1800")], 0);
    assert_ok(&out, "the caller got no BYE");
    assert_callee_ok(&mut callee);
    let cdr = the_cdr(&server);
    assert_cdr(
        &cdr,
        "system",
        "media timeout: no RTP from the caller for 2 s",
    );
    assert!(duration(&cdr) >= 2, "ended before the timeout: {cdr}");
    assert_nothing_left(&server);
}

#[test]
fn a_call_on_hold_outlives_the_media_timeout() {
    let server = media_timeout_server(2);
    let mut callee = callee(&server, "uas.xml", &[]);
    // Inactive media for 6 s, three times the timeout; a BYE from switchboard in that
    // time would fail the caller's scenario.
    let out = call(&server, "uac_inactive.xml", &[], 6000);
    assert_ok(&out, "the held call did not last until the caller hung up");
    assert_callee_ok(&mut callee);
    let cdr = the_cdr(&server);
    assert_cdr(&cdr, "caller", "normal clearing");
    assert!(duration(&cdr) >= 5, "{cdr}");
    assert_nothing_left(&server);
}

#[test]
fn a_caller_that_never_refreshes_its_session_is_hung_up_before_it_expires() {
    // The caller asks for 9 s with itself as refresher (and Min-SE 9); switchboard
    // accepts down to 6 s. RFC 4028 §10: the BYE goes at 9 s - min(32, 9/3) = 6 s.
    let server = Server::start_sip_with(
        "session_expires_secs = 12\nmin_se_secs = 6\n",
        SIPP_EXTENSIONS,
    );
    let mut callee = callee(&server, "uas.xml", &[]);
    let out = call(&server, "uac_wait_bye.xml", &[("se", "9")], 0);
    assert_ok(&out, "the caller got no BYE");
    assert_callee_ok(&mut callee);
    let cdr = the_cdr(&server);
    assert_cdr(&cdr, "system", "session timer: the caller did not refresh");
    let secs = duration(&cdr);
    assert!(
        (5..9).contains(&secs),
        "BYE due at 6 s, before the 9 s session ran out: {cdr}"
    );
    assert_nothing_left(&server);
}

#[test]
fn switchboard_refreshes_the_callee_session_and_the_call_stays_up() {
    // The callee grants 6 s with switchboard refreshing: UPDATEs at about 3 s and 6 s,
    // both answered 200 (the callee's scenario waits for exactly two), and the caller
    // hangs up at 7.5 s, after the first session would have run out unrefreshed.
    let server = session_timer_server(6);
    let mut callee = callee(&server, "uas_refresh.xml", &[("se", "6")]);
    let out = call(&server, "uac.xml", &[], 7500);
    assert_ok(&out, "the refreshed call did not last");
    assert_callee_ok(&mut callee);
    let cdr = the_cdr(&server);
    assert_cdr(&cdr, "caller", "normal clearing");
    assert_nothing_left(&server);
}

#[test]
fn a_callee_that_answers_the_refresh_481_ends_the_call() {
    let server = session_timer_server(6);
    let mut callee = callee(&server, "uas_refresh_refused.xml", &[("se", "6")]);
    let out = call(&server, "uac_wait_bye.xml", &[("se", "1800")], 0);
    assert_ok(&out, "the caller got no BYE");
    assert_callee_ok(&mut callee);
    let cdr = the_cdr(&server);
    assert_cdr(
        &cdr,
        "system",
        "session timer: the callee answered our refresh with 481",
    );
    assert_nothing_left(&server);
}

#[test]
fn a_callee_that_goes_silent_is_hung_up_when_its_session_runs_out() {
    // The refresh at 3 s goes unanswered; at 6 s - 2 s the session is dead and both
    // legs get a BYE (the callee ignores its own). Nothing waits for the BYE's timeout.
    let server = session_timer_server(6);
    let mut callee = callee(&server, "uas_silent.xml", &[("se", "6")]);
    let out = call(&server, "uac_wait_bye.xml", &[("se", "1800")], 0);
    assert_ok(&out, "the caller got no BYE");
    assert_callee_ok(&mut callee);
    let cdr = the_cdr(&server);
    assert_cdr(
        &cdr,
        "system",
        "session timer: the callee did not answer our refresh",
    );
    assert!(duration(&cdr) < 6, "{cdr}");
    assert_nothing_left(&server);
}

#[test]
fn hanging_up_on_a_silent_callee_leaves_nothing_behind() {
    // The caller's BYE is answered at once; the one relayed to the callee never is.
    let server = session_timer_server(6);
    let mut callee = callee(&server, "uas_silent.xml", &[("se", "6")]);
    let out = call(&server, "uac.xml", &[], 500);
    assert_ok(&out, "the caller's BYE was not answered");
    assert_callee_ok(&mut callee);
    let cdr = the_cdr(&server);
    assert_cdr(&cdr, "caller", "normal clearing");
    assert_nothing_left(&server);
}

#[test]
fn a_reinvite_the_callee_never_answers_ends_the_call() {
    // T1 = 100 ms: the relayed re-INVITE times out (Timer B, 64 × T1) after 6.4 s.
    let server = Server::start_sip_with("t1_ms = 100\n", SIPP_EXTENSIONS);
    let mut callee = callee(&server, "uas_silent.xml", &[("se", "1800")]);
    let out = call(&server, "uac_reinvite_timeout.xml", &[], 500);
    assert_ok(&out, "the caller got no 408 and BYE");
    assert_callee_ok(&mut callee);
    let cdr = the_cdr(&server);
    assert_cdr(&cdr, "system", "the callee stopped answering");
    assert_nothing_left(&server);
}

#[test]
fn a_caller_that_refreshes_its_session_keeps_the_call() {
    // The caller's 9 s session would end at 6 s; its UPDATE at 4 s, relayed to the
    // callee and answered 200 with the session named again, carries it past that.
    let server = Server::start_sip_with(
        "session_expires_secs = 12\nmin_se_secs = 6\n",
        SIPP_EXTENSIONS,
    );
    let mut callee = callee(&server, "uas_update.xml", &[]);
    let out = call(&server, "uac_refresh.xml", &[("se", "9")], 0);
    assert_ok(
        &out,
        "the refreshed call did not last, or the 200 named no session",
    );
    assert_callee_ok(&mut callee);
    let cdr = the_cdr(&server);
    assert_cdr(&cdr, "caller", "normal clearing");
    assert!(duration(&cdr) >= 7, "{cdr}");
    assert_nothing_left(&server);
}
