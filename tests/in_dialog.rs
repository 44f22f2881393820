//! Requests inside an answered call through the real binary, with SIPp on both ends
//! (caller 1000, callee 1001, each for one call): re-INVITEs relayed from one leg to
//! the other, and the reordered or repeated messages RFC 3261 expects a B2BUA to cope
//! with there. The callee runs with `-m 1` and a timeout, so its own checks count
//! through its exit status.

mod common;

use common::{
    SIPP_EXTENSIONS, Server, assert_answered_cdr, assert_first_call_becomes, assert_no_call_left,
    assert_sipp_succeeded, offerless_reinvite_moving_both_ports, one_call, one_call_callee,
    one_call_in_background, only_cdr, session_timer_server,
};
use std::time::Duration;

#[test]
fn a_retransmitted_2xx_to_a_relayed_reinvite_is_acked_again() {
    // The callee answers the caller's hold, gets the ACK, then sends its 200 again and
    // fails unless a second ACK comes within 2 s; the caller hangs up 3 s after the hold.
    let server = Server::start(SIPP_EXTENSIONS);
    // `-nr`: SIPp would take the repeated ACK (the same bytes, as it must be) for a
    // retransmission of the first and answer it with its 200 instead of matching it.
    let mut callee = one_call_callee(&server, "uas_reinvite_200_again.xml", &["-nr"]);
    let out = one_call(&server, "uac_hold.xml", 3000, &[]);
    assert_sipp_succeeded(&out, "the caller's hold or BYE failed");
    callee.finish(Duration::from_secs(40));
    assert_answered_cdr(&only_cdr(&server), "caller", "normal clearing");
    assert_no_call_left(&server);
}

#[test]
fn a_callee_without_update_in_its_allow_is_refreshed_by_reinvite() {
    // The callee grants 6 s with switchboard refreshing and lists no UPDATE: both
    // refreshes (about 3 s and 6 s) must be re-INVITEs with the INVITE's SDP unchanged,
    // which it answers and checks are ACKed; the caller hangs up at 7.5 s, after the
    // first session would have run out unrefreshed.
    assert_refreshed_call_lasts("uas_refresh_reinvite.xml");
}

#[test]
fn a_callee_that_refuses_update_with_405_is_refreshed_by_reinvite() {
    // No Allow in the callee's 200, so the first refresh is an UPDATE; its 405 must
    // bring a re-INVITE at once, and the next refresh must be a re-INVITE too.
    assert_refreshed_call_lasts("uas_refresh_405.xml");
}

/// A call whose callee, running `callee_scenario`, grants a 6 s session with
/// switchboard refreshing and checks each refresh; the caller hangs up at 7.5 s, so the
/// call lasts only if the refreshes worked.
fn assert_refreshed_call_lasts(callee_scenario: &str) {
    let server = session_timer_server(6);
    let mut callee = one_call_callee(&server, callee_scenario, &["-set", "se", "6"]);
    let out = one_call(&server, "uac.xml", 7500, &[]);
    assert_sipp_succeeded(&out, "the refreshed call did not last");
    callee.finish(Duration::from_secs(40));
    assert_answered_cdr(&only_cdr(&server), "caller", "normal clearing");
    assert_no_call_left(&server);
}

#[test]
fn a_bye_racing_the_callees_reinvite_ends_the_call_cleanly() {
    // The callee sends a hold re-INVITE and at once a BYE: the BYE gets 200 and the
    // re-INVITE 487 (the callee checks both); the caller gets the relayed re-INVITE,
    // answers it 200, gets the BYE, and must still get the ACK of its 200.
    let server = Server::start(SIPP_EXTENSIONS);
    let mut callee = one_call_callee(&server, "uas_reinvite_then_bye.xml", &[]);
    let out = one_call(&server, "uac_held_then_bye.xml", 0, &[]);
    assert_sipp_succeeded(
        &out,
        "the caller's re-INVITE answer went unACKed, or no BYE came",
    );
    callee.finish(Duration::from_secs(40));
    assert_answered_cdr(&only_cdr(&server), "callee", "normal clearing");
    assert_no_call_left(&server);
}

#[test]
fn an_offerless_reinvite_from_the_callee_gets_the_callers_offer() {
    // The callee's re-INVITE has no SDP; the caller offers in its 200 and the callee
    // answers in its ACK, both moving their RTP port by 2: the relay must follow both.
    let server = Server::start(SIPP_EXTENSIONS);
    let cdr = offerless_reinvite_moving_both_ports(
        &server,
        "uas_offerless_reinvite.xml",
        "uac_offer_in_reinvite_200.xml",
    );
    assert_answered_cdr(&cdr, "caller", "normal clearing");
    assert_no_call_left(&server);
}

#[test]
fn a_late_offer_call_from_a_caller_on_tcp() {
    // Over TCP switchboard does not resend its 200 (the transport is reliable); the
    // answer still has to come from the caller's ACK and reach the callee's.
    let server = Server::start(SIPP_EXTENSIONS);
    let mut callee = one_call_callee(&server, "uas_late_offer.xml", &[]);
    let caller = one_call_in_background(
        &server,
        "uac_late_offer.xml",
        common::free_port(),
        2000,
        &["-t", "t1", "-set", "answer_in_ack", "1"],
    );
    assert_first_call_becomes(&server, "no bridged call with the caller on TCP", |call| {
        call["state"] == "bridged"
            && call["a_leg"]["signaling"]
                .as_str()
                .is_some_and(|s| s.starts_with("Tcp"))
    });
    assert_sipp_succeeded(
        &caller.join().expect("UAC thread"),
        "the late-offer call over TCP failed",
    );
    callee.finish(Duration::from_secs(40));
    assert_answered_cdr(&only_cdr(&server), "caller", "normal clearing");
    assert_no_call_left(&server);
}
