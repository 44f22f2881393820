//! Late offers through the real binary (RFC 3261 §13.2.1, RFC 3264 §4): a caller
//! whose INVITE has no SDP. The callee (a SIPp UAS registered as 1001) must get an
//! offerless INVITE too and make the offer in its 200; switchboard offers it on to
//! the caller in its own 200 and passes the caller's answer, from its ACK, on in the
//! callee's ACK. Both SIPp ends check the messages (the callee runs for a set number
//! of calls, so its checks count); the test checks the relay's addresses, the CDR, and
//! that nothing is left behind.

mod common;

use common::{
    SIPP_EXTENSIONS, Server, assert_first_call_becomes, assert_no_call_left, assert_sipp_succeeded,
    offerless_reinvite_moving_both_ports, one_call, one_call_callee, one_call_in_background,
    only_cdr, relays_to,
};
use std::time::Duration;

#[test]
fn an_offerless_invite_gets_the_callees_offer_and_the_ack_carries_the_answer() {
    let server = Server::start(SIPP_EXTENSIONS);
    let mut callee = one_call_callee(&server, "uas_late_offer.xml", &[]);
    let caller_media = common::free_port();
    let caller = one_call_in_background(
        &server,
        "uac_late_offer.xml",
        caller_media,
        3000,
        &["-set", "answer_in_ack", "1"],
    );

    // While the call is up, the relay sends each leg's media where its SDP said: the
    // caller's address came in its ACK, the callee's in its 200.
    let wanted = (
        format!("127.0.0.1:{caller_media}"),
        format!("127.0.0.1:{}", callee.media_port),
    );
    assert_first_call_becomes(
        &server,
        &format!("the relay lacks a leg's address {wanted:?}"),
        |call| call["state"] == "bridged" && relays_to(call, &wanted.0, &wanted.1),
    );

    let out = caller.join().expect("UAC thread");
    assert_sipp_succeeded(&out, "the late-offer call failed");
    callee.finish(Duration::from_secs(10));
    let cdr = only_cdr(&server);
    assert_eq!(cdr["disposition"], "answered", "{cdr}");
    assert_eq!(cdr["hangup_by"], "caller", "{cdr}");
    assert_eq!(cdr["callee"], "1001", "{cdr}");
    assert_no_call_left(&server);
}

#[test]
fn a_late_offer_call_whose_ack_has_no_answer_is_ended_on_both_legs() {
    // The caller ACKs without the answer: the callee's 200 still gets its ACK (with
    // switchboard's own answer, which the callee checks), then both legs get a BYE.
    let server = Server::start(SIPP_EXTENSIONS);
    let mut callee = one_call_callee(&server, "uas_late_offer.xml", &[]);
    let out = one_call(
        &server,
        "uac_late_offer.xml",
        0,
        &["-set", "answer_in_ack", "0"],
    );
    assert_sipp_succeeded(&out, "the late-offer call without the answer failed");
    callee.finish(Duration::from_secs(10));
    let cdr = only_cdr(&server);
    assert_eq!(cdr["hangup_by"], "system", "{cdr}");
    assert_eq!(cdr["hangup_cause"], "no SDP answer in the ACK", "{cdr}");
    assert_no_call_left(&server);
}

#[test]
fn an_offerless_reinvite_gets_the_other_legs_offer_and_its_ack_carries_the_answer() {
    // Both phones move their RTP port by 2 in the late exchange (the callee in its
    // offer, the caller in its answer): the relay must follow both.
    let server = Server::start(SIPP_EXTENSIONS);
    let cdr = offerless_reinvite_moving_both_ports(
        &server,
        "uas_reinvite_late_offer.xml",
        "uac_reinvite_late_offer.xml",
    );
    assert_eq!(cdr["disposition"], "answered", "{cdr}");
    assert_eq!(cdr["hangup_by"], "caller", "{cdr}");
    assert_no_call_left(&server);
}

#[test]
fn a_late_offer_call_without_an_ack_is_ended_after_64_t1() {
    // T1 = 100 ms: switchboard resends its 200 for 6.4 s, then gives up on the ACK; the
    // callee is ACKed with switchboard's own answer, then both legs get a BYE.
    let server = Server::start_sip_with("t1_ms = 100\n", SIPP_EXTENSIONS);
    let mut callee = one_call_callee(&server, "uas_late_offer.xml", &[]);
    let out = one_call(
        &server,
        "uac_late_offer.xml",
        0,
        &["-set", "answer_in_ack", "-1"],
    );
    assert_sipp_succeeded(&out, "the late-offer call without an ACK failed");
    callee.finish(Duration::from_secs(10));
    let cdr = only_cdr(&server);
    assert_eq!(cdr["hangup_by"], "system", "{cdr}");
    // Over UDP the 2xx resend timer and the late offer's own deadline run out at the
    // same instant; either one's cause says what happened.
    let cause = cdr["hangup_cause"].as_str().unwrap_or_default();
    assert!(cause.starts_with("no ACK"), "{cdr}");
    assert_no_call_left(&server);
}
