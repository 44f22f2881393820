//! The timers that end a call whose phone is gone, through the real binary with SIPp on
//! both ends: the media timeout (`[media] timeout_secs`), which spares held calls, and
//! RFC 4028 session timers on each leg, with intervals of seconds (`[sip]
//! min_se_secs` below the RFC's 90 s, for tests). Each test runs one call with a SIPp
//! caller (1000) and a SIPp callee (1001, `-m 1`), checks that both ends saw the call
//! go as expected, and reads the CDR and the live calls afterwards.

mod common;

use common::{
    SIPP_EXTENSIONS, Server, assert_answered_cdr, assert_no_call_left, assert_sipp_succeeded,
    one_call, one_call_callee, only_cdr, session_timer_server,
};
use std::time::Duration;

fn duration(cdr: &serde_json::Value) -> u64 {
    cdr["duration_secs"].as_u64().expect("duration_secs")
}

/// A server whose media timeout is `secs`.
fn media_timeout_server(secs: u32) -> Server {
    Server::start(&format!(
        "[media]\ntimeout_secs = {secs}\n{SIPP_EXTENSIONS}"
    ))
}

#[test]
fn a_call_in_which_no_rtp_flows_is_ended_by_the_media_timeout() {
    let server = media_timeout_server(2);
    let mut callee = one_call_callee(&server, "uas.xml", &[]);
    // The caller's session timer is far away; only the media timeout can end the call.
    let out = one_call(&server, "uac_wait_bye.xml", 0, &["-set", "se", "1800"]);
    assert_sipp_succeeded(&out, "the caller got no BYE");
    callee.finish(Duration::from_secs(40));
    let cdr = only_cdr(&server);
    assert_answered_cdr(
        &cdr,
        "system",
        "media timeout: no RTP from the caller for 2 s",
    );
    assert!(duration(&cdr) >= 2, "ended before the timeout: {cdr}");
    assert_no_call_left(&server);
}

#[test]
fn a_call_on_hold_outlives_the_media_timeout() {
    let server = media_timeout_server(2);
    let mut callee = one_call_callee(&server, "uas.xml", &[]);
    // Inactive media for 6 s, three times the timeout; a BYE from switchboard in that
    // time would fail the caller's scenario.
    let out = one_call(&server, "uac_inactive.xml", 6000, &[]);
    assert_sipp_succeeded(&out, "the held call did not last until the caller hung up");
    callee.finish(Duration::from_secs(40));
    let cdr = only_cdr(&server);
    assert_answered_cdr(&cdr, "caller", "normal clearing");
    assert!(duration(&cdr) >= 5, "{cdr}");
    assert_no_call_left(&server);
}

#[test]
fn a_caller_that_never_refreshes_its_session_is_hung_up_before_it_expires() {
    // The caller asks for 9 s with itself as refresher (and Min-SE 9); switchboard
    // accepts down to 6 s. RFC 4028 §10: the BYE goes at 9 s - min(32, 9/3) = 6 s.
    let server = Server::start_sip_with(
        "session_expires_secs = 12\nmin_se_secs = 6\n",
        SIPP_EXTENSIONS,
    );
    let mut callee = one_call_callee(&server, "uas.xml", &[]);
    let out = one_call(&server, "uac_wait_bye.xml", 0, &["-set", "se", "9"]);
    assert_sipp_succeeded(&out, "the caller got no BYE");
    callee.finish(Duration::from_secs(40));
    let cdr = only_cdr(&server);
    assert_answered_cdr(&cdr, "system", "session timer: the caller did not refresh");
    let secs = duration(&cdr);
    assert!(
        (5..9).contains(&secs),
        "BYE due at 6 s, before the 9 s session ran out: {cdr}"
    );
    assert_no_call_left(&server);
}

#[test]
fn switchboard_refreshes_the_callee_session_and_the_call_stays_up() {
    // The callee grants 6 s with switchboard refreshing: UPDATEs at about 3 s and 6 s,
    // both answered 200 (the callee's scenario waits for exactly two), and the caller
    // hangs up at 7.5 s, after the first session would have run out unrefreshed.
    let server = session_timer_server(6);
    let mut callee = one_call_callee(&server, "uas_refresh.xml", &["-set", "se", "6"]);
    let out = one_call(&server, "uac.xml", 7500, &[]);
    assert_sipp_succeeded(&out, "the refreshed call did not last");
    callee.finish(Duration::from_secs(40));
    let cdr = only_cdr(&server);
    assert_answered_cdr(&cdr, "caller", "normal clearing");
    assert_no_call_left(&server);
}

#[test]
fn a_callee_that_answers_the_refresh_481_ends_the_call() {
    let server = session_timer_server(6);
    let mut callee = one_call_callee(&server, "uas_refresh_refused.xml", &["-set", "se", "6"]);
    let out = one_call(&server, "uac_wait_bye.xml", 0, &["-set", "se", "1800"]);
    assert_sipp_succeeded(&out, "the caller got no BYE");
    callee.finish(Duration::from_secs(40));
    let cdr = only_cdr(&server);
    assert_answered_cdr(
        &cdr,
        "system",
        "session timer: the callee answered our refresh with 481",
    );
    assert_no_call_left(&server);
}

#[test]
fn a_callee_that_goes_silent_is_hung_up_when_its_session_runs_out() {
    // The refresh at 3 s goes unanswered; at 6 s - 2 s the session is dead and both
    // legs get a BYE (the callee ignores its own). Nothing waits for the BYE's timeout.
    let server = session_timer_server(6);
    let mut callee = one_call_callee(&server, "uas_silent.xml", &["-set", "se", "6"]);
    let out = one_call(&server, "uac_wait_bye.xml", 0, &["-set", "se", "1800"]);
    assert_sipp_succeeded(&out, "the caller got no BYE");
    callee.finish(Duration::from_secs(40));
    let cdr = only_cdr(&server);
    assert_answered_cdr(
        &cdr,
        "system",
        "session timer: the callee did not answer our refresh",
    );
    assert!(duration(&cdr) < 6, "{cdr}");
    assert_no_call_left(&server);
}

#[test]
fn hanging_up_on_a_silent_callee_leaves_nothing_behind() {
    // The caller's BYE is answered at once; the one relayed to the callee never is.
    let server = session_timer_server(6);
    let mut callee = one_call_callee(&server, "uas_silent.xml", &["-set", "se", "6"]);
    let out = one_call(&server, "uac.xml", 500, &[]);
    assert_sipp_succeeded(&out, "the caller's BYE was not answered");
    callee.finish(Duration::from_secs(40));
    let cdr = only_cdr(&server);
    assert_answered_cdr(&cdr, "caller", "normal clearing");
    assert_no_call_left(&server);
}

#[test]
fn a_reinvite_the_callee_never_answers_ends_the_call() {
    // T1 = 100 ms: the relayed re-INVITE times out (Timer B, 64 × T1) after 6.4 s.
    let server = Server::start_sip_with("t1_ms = 100\n", SIPP_EXTENSIONS);
    let mut callee = one_call_callee(&server, "uas_silent.xml", &["-set", "se", "1800"]);
    let out = one_call(&server, "uac_reinvite_timeout.xml", 500, &[]);
    assert_sipp_succeeded(&out, "the caller got no 408 and BYE");
    callee.finish(Duration::from_secs(40));
    let cdr = only_cdr(&server);
    assert_answered_cdr(&cdr, "system", "the callee stopped answering");
    assert_no_call_left(&server);
}

#[test]
fn a_caller_that_refreshes_its_session_keeps_the_call() {
    // The caller's 9 s session would end at 6 s; its UPDATE at 4 s, relayed to the
    // callee and answered 200 with the session named again, carries it past that.
    let server = Server::start_sip_with(
        "session_expires_secs = 12\nmin_se_secs = 6\n",
        SIPP_EXTENSIONS,
    );
    let mut callee = one_call_callee(&server, "uas_update.xml", &[]);
    let out = one_call(&server, "uac_refresh.xml", 0, &["-set", "se", "9"]);
    assert_sipp_succeeded(
        &out,
        "the refreshed call did not last, or the 200 named no session",
    );
    callee.finish(Duration::from_secs(40));
    let cdr = only_cdr(&server);
    assert_answered_cdr(&cdr, "caller", "normal clearing");
    assert!(duration(&cdr) >= 7, "{cdr}");
    assert_no_call_left(&server);
}
