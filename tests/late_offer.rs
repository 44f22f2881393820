//! Late offers through the real binary (RFC 3261 §13.2.1, RFC 3264 §4): a caller
//! whose INVITE has no SDP. The callee (a SIPp UAS registered as 1001) must get an
//! offerless INVITE too and make the offer in its 200; switchboard offers it on to
//! the caller in its own 200 and passes the caller's answer, from its ACK, on in the
//! callee's ACK. Both SIPp ends check the messages (the callee runs for a set number
//! of calls, so its checks count); the test checks the relay's addresses, the CDR, and
//! that nothing is left behind.

mod common;

use common::{SIPP_EXTENSIONS, Server, admin_json, cdrs, start_callee_with, uac};
use std::process::{Output, Stdio};
use std::time::Duration;

/// Runs `scenario` from 1000 to 1001 once in the background, its RTP port `media`.
fn call_in_background(
    server: &Server,
    scenario: &str,
    media: u16,
    options: &[&str],
) -> std::thread::JoinHandle<Output> {
    let mut cmd = uac(server, scenario, "1001", media);
    cmd.args(options)
        .args(["-m", "1", "-timeout", "30s", "-timeout_error"])
        .stdin(Stdio::null());
    std::thread::spawn(move || cmd.output().expect("run SIPp UAC"))
}

fn assert_succeeded(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: the caller saw a failed call:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The only CDR, once written.
fn only_cdr(server: &Server) -> serde_json::Value {
    assert!(common::wait_until(Duration::from_secs(10), || !cdrs(
        server
    )
    .is_empty()));
    let records = cdrs(server);
    assert_eq!(records.len(), 1, "{records:?}");
    records[0].clone()
}

fn assert_nothing_left(server: &Server) {
    let ok = common::wait_until(Duration::from_secs(10), || {
        let calls = admin_json(server, "calls");
        calls["calls"].as_array().is_some_and(|c| c.is_empty()) && calls["media_ports_in_use"] == 0
    });
    assert!(
        ok,
        "calls or media ports leaked: {}",
        admin_json(server, "calls")
    );
}

#[test]
fn an_offerless_invite_gets_the_callees_offer_and_the_ack_carries_the_answer() {
    let server = Server::start(SIPP_EXTENSIONS);
    let mut callee = start_callee_with(&server, "uas_late_offer.xml", &["-m", "1"]);
    let caller_media = common::free_port();
    let caller = call_in_background(
        &server,
        "uac_late_offer.xml",
        caller_media,
        &["-set", "answer_in_ack", "1", "-d", "3000"],
    );

    // While the call is up, the relay sends each leg's media where its SDP said: the
    // caller's address came in its ACK, the callee's in its 200.
    let wanted = (
        format!("127.0.0.1:{caller_media}"),
        format!("127.0.0.1:{}", callee.media_port),
    );
    let mut last = serde_json::Value::Null;
    let bridged = common::wait_until(Duration::from_secs(10), || {
        last = admin_json(&server, "calls");
        let call = &last["calls"][0];
        call["state"] == "bridged"
            && call["a_leg"]["remote_media"] == wanted.0.as_str()
            && call["b_leg"]["remote_media"] == wanted.1.as_str()
    });
    assert!(
        bridged,
        "the relay lacks a leg's address {wanted:?}: {last}"
    );

    let out = caller.join().expect("UAC thread");
    assert_succeeded(&out, "uac_late_offer");
    callee.finish(Duration::from_secs(10));
    let cdr = only_cdr(&server);
    assert_eq!(cdr["disposition"], "answered", "{cdr}");
    assert_eq!(cdr["hangup_by"], "caller", "{cdr}");
    assert_eq!(cdr["callee"], "1001", "{cdr}");
    assert_nothing_left(&server);
}

#[test]
fn a_late_offer_call_whose_ack_has_no_answer_is_ended_on_both_legs() {
    // The caller ACKs without the answer: the callee's 200 still gets its ACK (with
    // switchboard's own answer, which the callee checks), then both legs get a BYE.
    let server = Server::start(SIPP_EXTENSIONS);
    let mut callee = start_callee_with(&server, "uas_late_offer.xml", &["-m", "1"]);
    let caller = call_in_background(
        &server,
        "uac_late_offer.xml",
        common::free_port(),
        &["-set", "answer_in_ack", "0"],
    );
    let out = caller.join().expect("UAC thread");
    assert_succeeded(&out, "uac_late_offer without the answer");
    callee.finish(Duration::from_secs(10));
    let cdr = only_cdr(&server);
    assert_eq!(cdr["hangup_by"], "system", "{cdr}");
    assert_eq!(cdr["hangup_cause"], "no SDP answer in the ACK", "{cdr}");
    assert_nothing_left(&server);
}

#[test]
fn an_offerless_reinvite_gets_the_other_legs_offer_and_its_ack_carries_the_answer() {
    // Both phones move their RTP port by 2 in the late exchange (the callee in its
    // offer, the caller in its answer): the relay must follow both.
    let server = Server::start(SIPP_EXTENSIONS);
    let mut callee = start_callee_with(&server, "uas_reinvite_late_offer.xml", &["-m", "1"]);
    let caller_media = common::free_port();
    let caller = call_in_background(
        &server,
        "uac_reinvite_late_offer.xml",
        caller_media,
        &["-d", "3000"],
    );
    let wanted = (
        format!("127.0.0.1:{}", caller_media + 2),
        format!("127.0.0.1:{}", callee.media_port + 2),
    );
    let mut last = serde_json::Value::Null;
    let moved = common::wait_until(Duration::from_secs(10), || {
        last = admin_json(&server, "calls");
        let call = &last["calls"][0];
        call["a_leg"]["remote_media"] == wanted.0.as_str()
            && call["b_leg"]["remote_media"] == wanted.1.as_str()
    });
    assert!(
        moved,
        "the relay did not follow the late exchange {wanted:?}: {last}"
    );

    let out = caller.join().expect("UAC thread");
    assert_succeeded(&out, "uac_reinvite_late_offer");
    callee.finish(Duration::from_secs(10));
    let cdr = only_cdr(&server);
    assert_eq!(cdr["disposition"], "answered", "{cdr}");
    assert_eq!(cdr["hangup_by"], "caller", "{cdr}");
    assert_nothing_left(&server);
}

#[test]
fn a_late_offer_call_without_an_ack_is_ended_after_64_t1() {
    // T1 = 100 ms: switchboard resends its 200 for 6.4 s, then gives up on the ACK; the
    // callee is ACKed with switchboard's own answer, then both legs get a BYE.
    let server = Server::start_sip_with("t1_ms = 100\n", SIPP_EXTENSIONS);
    let mut callee = start_callee_with(&server, "uas_late_offer.xml", &["-m", "1"]);
    let caller = call_in_background(
        &server,
        "uac_late_offer.xml",
        common::free_port(),
        &["-set", "answer_in_ack", "-1"],
    );
    let out = caller.join().expect("UAC thread");
    assert_succeeded(&out, "uac_late_offer without an ACK");
    callee.finish(Duration::from_secs(10));
    let cdr = only_cdr(&server);
    assert_eq!(cdr["hangup_by"], "system", "{cdr}");
    // Over UDP the 2xx resend timer and the late offer's own deadline run out at the
    // same instant; either one's cause says what happened.
    let cause = cdr["hangup_cause"].as_str().unwrap_or_default();
    assert!(cause.starts_with("no ACK"), "{cdr}");
    assert_nothing_left(&server);
}
