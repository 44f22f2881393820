//! Requests inside an answered call through the real binary, with SIPp on both ends
//! (caller 1000, callee 1001 registered by `start_callee_with`, each for one call):
//! re-INVITEs relayed from one leg to the other, and the reordered or repeated
//! messages RFC 3261 expects a B2BUA to cope with there. The callee runs with `-m 1`
//! and a timeout, so its own checks count through its exit status.

mod common;

use common::{SIPP_EXTENSIONS, Server, assert_no_call_left, only_cdr, start_callee_with, uac};
use std::process::{Output, Stdio};
use std::time::Duration;

/// SIPp's limit for either end's call.
const SIPP_TIMEOUT: &str = "30s";

/// One call from 1000 to 1001 with the caller scenario `scenario`, pausing `hold_ms`
/// where it pauses; extra SIPp options in `options`.
fn call(server: &Server, scenario: &str, hold_ms: u32, options: &[&str]) -> Output {
    call_in_background(server, scenario, common::free_port(), hold_ms, options)
        .join()
        .expect("UAC thread")
}

/// [`call`] on another thread, the caller's RTP port `media`, to watch the call.
fn call_in_background(
    server: &Server,
    scenario: &str,
    media: u16,
    hold_ms: u32,
    options: &[&str],
) -> std::thread::JoinHandle<Output> {
    let mut cmd = uac(server, scenario, "1001", media);
    cmd.args(["-d", &hold_ms.to_string()])
        .args(["-m", "1", "-timeout", SIPP_TIMEOUT, "-timeout_error"])
        .args(options)
        .stdin(Stdio::null());
    std::thread::spawn(move || cmd.output().expect("run SIPp UAC"))
}

/// The callee: `scenario` for exactly one call.
fn callee(server: &Server, scenario: &str, options: &[&str]) -> common::Callee {
    let mut args = vec!["-m", "1", "-timeout", SIPP_TIMEOUT, "-timeout_error"];
    args.extend(options);
    start_callee_with(server, scenario, &args)
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An answered call between 1000 and 1001 hung up by `by` with `cause`.
fn assert_cdr(server: &Server, by: &str, cause: &str) {
    let cdr = only_cdr(server);
    assert_eq!(
        (cdr["caller"].as_str(), cdr["callee"].as_str()),
        (Some("1000"), Some("1001")),
        "{cdr}"
    );
    assert_eq!(cdr["disposition"], "answered", "{cdr}");
    assert_eq!(cdr["hangup_by"], by, "{cdr}");
    assert_eq!(cdr["hangup_cause"], cause, "{cdr}");
}

#[test]
fn a_retransmitted_2xx_to_a_relayed_reinvite_is_acked_again() {
    // The callee answers the caller's hold, gets the ACK, then sends its 200 again and
    // fails unless a second ACK comes within 2 s; the caller hangs up 3 s after the hold.
    let server = Server::start(SIPP_EXTENSIONS);
    // `-nr`: SIPp would take the repeated ACK (the same bytes, as it must be) for a
    // retransmission of the first and answer it with its 200 instead of matching it.
    let mut callee = callee(&server, "uas_reinvite_200_again.xml", &["-nr"]);
    let out = call(&server, "uac_hold.xml", 3000, &[]);
    assert_ok(&out, "the caller's hold or BYE failed");
    callee.finish(Duration::from_secs(40));
    assert_cdr(&server, "caller", "normal clearing");
    assert_no_call_left(&server);
}

/// A server that asks for and accepts sessions of `secs` seconds (RFC 4028).
fn session_timer_server(secs: u32) -> Server {
    Server::start_sip_with(
        &format!("session_expires_secs = {secs}\nmin_se_secs = {secs}\n"),
        SIPP_EXTENSIONS,
    )
}

#[test]
fn a_callee_without_update_in_its_allow_is_refreshed_by_reinvite() {
    // The callee grants 6 s with switchboard refreshing and lists no UPDATE: both
    // refreshes (about 3 s and 6 s) must be re-INVITEs with the INVITE's SDP unchanged,
    // which it answers and checks are ACKed; the caller hangs up at 7.5 s, after the
    // first session would have run out unrefreshed.
    let server = session_timer_server(6);
    let mut callee = callee(&server, "uas_refresh_reinvite.xml", &["-set", "se", "6"]);
    let out = call(&server, "uac.xml", 7500, &[]);
    assert_ok(&out, "the refreshed call did not last");
    callee.finish(Duration::from_secs(40));
    assert_cdr(&server, "caller", "normal clearing");
    assert_no_call_left(&server);
}

#[test]
fn a_callee_that_refuses_update_with_405_is_refreshed_by_reinvite() {
    // No Allow in the callee's 200, so the first refresh is an UPDATE; its 405 must
    // bring a re-INVITE at once, and the next refresh must be a re-INVITE too.
    let server = session_timer_server(6);
    let mut callee = callee(&server, "uas_refresh_405.xml", &["-set", "se", "6"]);
    let out = call(&server, "uac.xml", 7500, &[]);
    assert_ok(&out, "the refreshed call did not last");
    callee.finish(Duration::from_secs(40));
    assert_cdr(&server, "caller", "normal clearing");
    assert_no_call_left(&server);
}

#[test]
fn a_bye_racing_the_callees_reinvite_ends_the_call_cleanly() {
    // The callee sends a hold re-INVITE and at once a BYE: the BYE gets 200 and the
    // re-INVITE 487 (the callee checks both); the caller gets the relayed re-INVITE,
    // answers it 200, gets the BYE, and must still get the ACK of its 200.
    let server = Server::start(SIPP_EXTENSIONS);
    let mut callee = callee(&server, "uas_reinvite_then_bye.xml", &[]);
    let out = call(&server, "uac_held_then_bye.xml", 0, &[]);
    assert_ok(
        &out,
        "the caller's re-INVITE answer went unACKed, or no BYE came",
    );
    callee.finish(Duration::from_secs(40));
    assert_cdr(&server, "callee", "normal clearing");
    assert_no_call_left(&server);
}

#[test]
fn an_offerless_reinvite_from_the_callee_gets_the_callers_offer() {
    // The callee's re-INVITE has no SDP; the caller offers in its 200 and the callee
    // answers in its ACK, both moving their RTP port by 2: the relay must follow both.
    let server = Server::start(SIPP_EXTENSIONS);
    let mut callee = callee(&server, "uas_offerless_reinvite.xml", &[]);
    let caller_media = common::free_port();
    let caller = call_in_background(
        &server,
        "uac_offer_in_reinvite_200.xml",
        caller_media,
        3000,
        &[],
    );
    let wanted = (
        format!("127.0.0.1:{}", caller_media + 2),
        format!("127.0.0.1:{}", callee.media_port + 2),
    );
    let mut last = serde_json::Value::Null;
    let moved = common::wait_until(Duration::from_secs(10), || {
        last = common::admin_json(&server, "calls");
        let call = &last["calls"][0];
        call["a_leg"]["remote_media"] == wanted.0.as_str()
            && call["b_leg"]["remote_media"] == wanted.1.as_str()
    });
    assert!(
        moved,
        "the relay did not follow the exchange {wanted:?}: {last}"
    );
    assert_ok(
        &caller.join().expect("UAC thread"),
        "the caller's side failed",
    );
    callee.finish(Duration::from_secs(40));
    assert_cdr(&server, "caller", "normal clearing");
    assert_no_call_left(&server);
}

#[test]
fn a_late_offer_call_from_a_caller_on_tcp() {
    // Over TCP switchboard does not resend its 200 (the transport is reliable); the
    // answer still has to come from the caller's ACK and reach the callee's.
    let server = Server::start(SIPP_EXTENSIONS);
    let mut callee = start_callee_with(&server, "uas_late_offer.xml", &["-m", "1"]);
    let caller = call_in_background(
        &server,
        "uac_late_offer.xml",
        common::free_port(),
        2000,
        &["-t", "t1", "-set", "answer_in_ack", "1"],
    );
    let mut last = serde_json::Value::Null;
    let on_tcp = common::wait_until(Duration::from_secs(10), || {
        last = common::admin_json(&server, "calls");
        let call = &last["calls"][0];
        call["state"] == "bridged"
            && call["a_leg"]["signaling"]
                .as_str()
                .is_some_and(|s| s.starts_with("Tcp"))
    });
    assert!(on_tcp, "no bridged call with the caller on TCP: {last}");
    assert_ok(
        &caller.join().expect("UAC thread"),
        "the late-offer call over TCP failed",
    );
    callee.finish(Duration::from_secs(40));
    assert_cdr(&server, "caller", "normal clearing");
    assert_no_call_left(&server);
}
