//! The timers that end a call whose leg stopped answering: the media timeout (no RTP
//! or RTCP from a phone that should be sending) and RFC 4028 session timers, which run
//! on each leg on its own, switchboard refreshing the legs where it is the refresher
//! and ending the call when a leg's session is not refreshed in time.

use super::call::Call;
use super::{B2bua, CallTimer, side_index};
use crate::media::Side;
use crate::sdp::Direction;
use crate::sip::dialog::{Body, SessionTimer};
use crate::sip::transaction::{TransactionLayer, TxKey};
use crate::sip::{Headers, Known, Method, Request, Response};
use crate::store::{Disposition, HangupBy};
use std::time::{Duration, Instant};

/// Whether a bridged call's media should be flowing, for the media timeout. A held
/// call legitimately sends RTP one way or not at all (many phones send nothing while
/// they hold), so the timeout applies only while both legs' streams are sendrecv, and
/// counts from when that started, so a call resumed after a long hold is not ended
/// before its phones had time to send again.
#[derive(Clone, Copy, Debug)]
pub struct MediaActivity {
    /// The direction in the latest SDP from each leg's phone, offer or answer.
    directions: [Direction; 2],
    /// Since when both legs are sendrecv; `None` on hold and before the bridge.
    active_since: Option<Instant>,
}

impl Default for MediaActivity {
    fn default() -> MediaActivity {
        MediaActivity {
            directions: [Direction::SendRecv; 2],
            active_since: None,
        }
    }
}

impl MediaActivity {
    /// A leg's phone sent SDP (the caller's first offer counts once the bridge starts).
    pub fn on_sdp(&mut self, side: Side, direction: Direction, now: Instant) {
        self.directions[side_index(side)] = direction;
        let active = self.directions.iter().all(|d| *d == Direction::SendRecv);
        match (active, self.active_since) {
            (true, None) => self.active_since = Some(now),
            (false, _) => self.active_since = None,
            (true, Some(_)) => {}
        }
    }

    /// The first leg not heard from (`last_heard`, RTP or RTCP) for `limit` while the
    /// media was active.
    pub fn silent_leg(
        &self,
        last_heard: [Instant; 2],
        now: Instant,
        limit: Duration,
    ) -> Option<Side> {
        let since = self.active_since?;
        [Side::A, Side::B].into_iter().find(|&side| {
            let heard = last_heard[side_index(side)].max(since);
            now.saturating_duration_since(heard) >= limit
        })
    }
}

/// How often the relay's counters are looked at: often enough that a short timeout
/// ends the call soon after it runs out, rarely enough to cost nothing.
fn media_check_interval(limit: Duration) -> Duration {
    (limit / 2).clamp(Duration::from_secs(1), Duration::from_secs(5))
}

/// Who a leg's phone is, for log lines and CDR causes.
fn party(side: Side) -> &'static str {
    match side {
        Side::A => "caller",
        Side::B => "callee",
    }
}

impl Call {
    fn takes_update(&self, side: Side) -> bool {
        match side {
            Side::A => self.a.takes_update,
            Side::B => self.b.as_ref().is_some_and(|b| b.takes_update),
        }
    }

    fn set_takes_update(&mut self, side: Side, takes: bool) {
        match side {
            Side::A => self.a.takes_update = takes,
            Side::B => {
                if let Some(b) = self.b.as_mut() {
                    b.takes_update = takes;
                }
            }
        }
    }

    fn set_session_timer(&mut self, side: Side, timer: Option<SessionTimer>) {
        match side {
            Side::A => self.a.timer = timer,
            Side::B => {
                if let Some(b) = self.b.as_mut() {
                    b.timer = timer;
                }
            }
        }
    }
}

impl B2bua {
    /// Starts watching a freshly bridged call's media, unless `[media] timeout_secs`
    /// turned the timeout off.
    pub(super) fn start_media_check(&mut self, id: u64, now: Instant) {
        if let Some(limit) = self.ctx.media_timeout {
            self.schedule(now + media_check_interval(limit), id, CallTimer::MediaCheck);
        }
    }

    /// Notes the direction of SDP a leg's phone sent, once the bridge runs.
    pub(super) fn note_media_direction(&mut self, id: u64, side: Side, direction: Direction) {
        if let Some(call) = self.calls.get_mut(&id) {
            call.media.activity.on_sdp(side, direction, Instant::now());
        }
    }

    pub(super) fn check_media(&mut self, txl: &mut TransactionLayer, id: u64, now: Instant) {
        let Some(limit) = self.ctx.media_timeout else {
            return;
        };
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        if call.ended.is_some() {
            return;
        }
        let Some(relay) = call.media.relay.as_ref() else {
            return;
        };
        let heard = [relay.last_heard(Side::A), relay.last_heard(Side::B)];
        if let Some(side) = call.media.activity.silent_leg(heard, now, limit) {
            call.span
                .in_scope(|| tracing::warn!(?side, "no RTP; ending the call"));
            let cause = format!(
                "media timeout: no RTP from the {} for {} s",
                party(side),
                limit.as_secs()
            );
            self.end_call(txl, id, Disposition::Answered, HangupBy::System, &cause);
            return;
        }
        self.schedule(now + media_check_interval(limit), id, CallTimer::MediaCheck);
    }

    /// (Re)starts a leg's session timer after the session was set up or refreshed:
    /// when we refresh, a refresh is due at half the interval; either way the call ends
    /// if no refresh has succeeded before the interval runs out (RFC 4028 §10).
    pub(super) fn arm_session_timer(&mut self, id: u64, side: Side, now: Instant) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let generation = call.session_generation[side_index(side)] + 1;
        call.session_generation[side_index(side)] = generation;
        let Some(timer) = call.session_timer(side) else {
            return;
        };
        if let Some(at) = timer.refresh_at(now) {
            self.schedule(at, id, CallTimer::SessionRefresh { side, generation });
        }
        self.schedule(
            timer.expires_at(now),
            id,
            CallTimer::SessionExpired { side, generation },
        );
    }

    /// Sends a session refresh (RFC 4028 §7.4, §9): an UPDATE without a body when the
    /// phone takes UPDATE, else a re-INVITE offering the description last sent on the
    /// leg, o= line and all, so it changes nothing (RFC 3264 §8). Its 2xx re-arms the
    /// timer ([`B2bua::on_own_request_answer`]); without one the session expires. A
    /// re-INVITE waits while another offer/answer exchange runs on the call (that one,
    /// answered, refreshes the session too, §10).
    pub(super) fn refresh_session(
        &mut self,
        txl: &mut TransactionLayer,
        id: u64,
        side: Side,
        generation: u64,
        now: Instant,
    ) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call.ended.is_some() || call.session_generation[side_index(side)] != generation {
            return;
        }
        let Some(timer) = call.session_timer(side) else {
            return;
        };
        let by_update = call.takes_update(side);
        let late_offer_open = call.late_offer.is_some();
        let Some(leg) = call.leg_sdp(side) else {
            return;
        };
        let mut refresh = if by_update {
            leg.dialog.new_request(Method::Update, None)
        } else {
            if late_offer_open || !leg.dialog.can_send_offer() {
                let delay = leg.dialog.glare_retry_delay(rand::random());
                self.schedule(
                    now + delay,
                    id,
                    CallTimer::SessionRefresh { side, generation },
                );
                return;
            }
            let Some(ours) = leg.origin.last_sent() else {
                return;
            };
            let body = Body::sdp(ours.to_bytes());
            leg.dialog.new_request(Method::Invite, Some(body))
        };
        timer.add_to_request(&mut refresh);
        match txl.send_request(now, leg.peer, refresh) {
            Ok(key) => {
                call.own_requests.push((key, side));
                self.by_client_tx.insert(key, id);
            }
            Err(e) => tracing::warn!(error = %e, "session refresh not sent"),
        }
    }

    /// A leg's session ran out without a successful refresh: the phone is gone, or
    /// at least no longer keeps the session, so the whole call ends.
    pub(super) fn on_session_expired(
        &mut self,
        txl: &mut TransactionLayer,
        id: u64,
        side: Side,
        generation: u64,
    ) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        if call.session_generation[side_index(side)] != generation || call.ended.is_some() {
            return;
        }
        let cause = if call.session_timer(side).is_some_and(|t| t.we_refresh()) {
            format!(
                "session timer: the {} did not answer our refresh",
                party(side)
            )
        } else {
            format!("session timer: the {} did not refresh", party(side))
        };
        call.span
            .in_scope(|| tracing::warn!(?side, "session expired without a refresh"));
        self.end_call(txl, id, Disposition::Answered, HangupBy::System, &cause);
    }

    /// A leg left a request in its dialog unanswered (`None`) or answered it 408 or
    /// 481: its dialog is gone (RFC 3261 §12.2.1.2), and with it the call.
    pub(super) fn on_leg_lost(
        &mut self,
        txl: &mut TransactionLayer,
        id: u64,
        side: Side,
        answer: Option<u16>,
    ) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        if call.ended.is_some() || !call.is_answered() {
            return;
        }
        let cause = match answer {
            None => format!("the {} stopped answering", party(side)),
            Some(status) => format!("the {} lost the call ({status})", party(side)),
        };
        self.end_call(txl, id, Disposition::Answered, HangupBy::System, &cause);
    }

    /// Our 2xx to a re-INVITE or UPDATE from a leg's phone: the request refreshed that
    /// leg's session, so the timer is agreed again from it, named in the 2xx, and
    /// restarted (RFC 4028 §9, §10). A request without Session-Expires from a phone
    /// that does not support timers turns the leg's timer off.
    pub(super) fn accept_refresh(
        &mut self,
        id: u64,
        side: Side,
        request: &Request,
        ok: &mut Response,
        now: Instant,
    ) {
        if !is_refresh(request.method.clone(), ok.status) {
            return;
        }
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        // An interval below our minimum was refused with 422 before the relay.
        if let Ok(timer) = self.ctx.timer_policy.answer(request) {
            call.set_session_timer(side, timer);
            if let Some(timer) = timer {
                timer.add_to_response(ok);
            }
        }
        self.arm_session_timer(id, side, now);
    }

    /// A leg's final answer to a re-INVITE or UPDATE we sent it. A 2xx refreshed the
    /// session with the interval it names (none: the timer is off, §7.2).
    pub(super) fn on_refresh_answer(
        &mut self,
        id: u64,
        side: Side,
        method: Method,
        resp: &Response,
        now: Instant,
    ) {
        if !is_refresh(method, resp.status) {
            return;
        }
        let timer = self.ctx.timer_policy.from_response(resp);
        if let Some(call) = self.calls.get_mut(&id) {
            call.set_session_timer(side, timer);
        }
        self.arm_session_timer(id, side, now);
    }

    /// The final answer to a request of our own in a leg's dialog (a session refresh
    /// or a BYE). A refresh's 2xx re-arms the timer (a re-INVITE's is ACKed, and its
    /// answer given to the relay); 491 means our refresh met the phone's offer, so it
    /// is retried after the §14.1 delay; 405 or 501 to an UPDATE means the phone takes
    /// none, so the refresh goes again at once by re-INVITE. 408 or 481 means the peer
    /// lost the dialog, and RFC 4028 §10 says to end the session. Any other failure
    /// leaves the session to expire.
    pub(super) fn on_own_request_answer(
        &mut self,
        txl: &mut TransactionLayer,
        id: u64,
        side: Side,
        key: TxKey,
        resp: &Response,
    ) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(method) = resp
            .cseq()
            .ok()
            .map(|c| c.method)
            .filter(|m| matches!(m, Method::Update | Method::Invite))
        else {
            return;
        };
        if resp.status < 200 {
            return;
        }
        let now = Instant::now();
        let generation = call.session_generation[side_index(side)];
        if method == Method::Invite
            && resp.is_success()
            && let Some((dialog, peer)) = call.leg_mut(side)
        {
            let ack = dialog.ack_for_2xx(resp.cseq().map_or(0, |c| c.seq), None);
            self.ack_reinvite(txl, key, peer, Some(&ack));
            if let Some(answer) = super::dial::sdp_of(resp) {
                self.update_relay(id, side, &answer);
            }
        }
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call.ended.is_some() {
            return;
        }
        match resp.status {
            200..=299 => self.on_refresh_answer(id, side, method, resp, now),
            491 => {
                let Some((dialog, _)) = call.leg_mut(side) else {
                    return;
                };
                let delay = dialog.glare_retry_delay(rand::random());
                call.span.in_scope(|| {
                    tracing::info!(?side, ?delay, "session refresh met an offer; retrying")
                });
                self.schedule(
                    now + delay,
                    id,
                    CallTimer::SessionRefresh { side, generation },
                );
            }
            405 | 501 if method == Method::Update => {
                call.span.in_scope(|| {
                    tracing::info!(
                        ?side,
                        status = resp.status,
                        "no UPDATE; refreshing by re-INVITE"
                    )
                });
                call.set_takes_update(side, false);
                self.refresh_session(txl, id, side, generation, now);
            }
            408 | 481 => {
                let cause = format!(
                    "session timer: the {} answered our refresh with {}",
                    party(side),
                    resp.status
                );
                self.end_call(txl, id, Disposition::Answered, HangupBy::System, &cause);
            }
            status => call.span.in_scope(|| {
                tracing::warn!(
                    ?side,
                    status,
                    "session refresh failed; the session will expire"
                )
            }),
        }
    }
}

/// Whether a phone takes session refreshes by UPDATE, judged by the Allow of its
/// INVITE or 2xx (RFC 4028 §7.4, §9). Without an Allow nothing is known: UPDATE is
/// tried, and a 405 or 501 turns the leg's refreshes to re-INVITE.
pub(super) fn takes_update(headers: &Headers) -> bool {
    !headers.contains(Known::Allow)
        || headers
            .list(Known::Allow)
            .any(|m| m.eq_ignore_ascii_case("UPDATE"))
}

/// Session-Expires for a re-INVITE or UPDATE we relay to a leg with `timer`: each
/// refreshes that leg's session, and one without the header would turn the peer's
/// timer off (RFC 4028 §9).
pub(super) fn add_session_timer(timer: Option<SessionTimer>, request: &mut Request) {
    if let Some(timer) = timer
        && matches!(request.method, Method::Invite | Method::Update)
    {
        timer.add_to_request(request);
    }
}

/// A 2xx to a re-INVITE or UPDATE, the transactions that refresh a session.
fn is_refresh(method: Method, status: u16) -> bool {
    matches!(method, Method::Invite | Method::Update) && (200..300).contains(&status)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(60);

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn a_leg_silent_for_the_limit_is_named_once_media_flows() {
        let t0 = Instant::now();
        let mut media = MediaActivity::default();
        // Before the bridge nothing is checked.
        assert_eq!(media.silent_leg([t0, t0], t0 + secs(600), LIMIT), None);
        media.on_sdp(Side::B, Direction::SendRecv, t0);
        // B never sent anything: silent since the bridge started.
        let heard = [t0 + secs(50), t0];
        assert_eq!(media.silent_leg(heard, t0 + secs(59), LIMIT), None);
        assert_eq!(media.silent_leg(heard, t0 + secs(60), LIMIT), Some(Side::B));
        // A stops after 50 s: it times out at 110 s when B keeps talking.
        let heard = [t0 + secs(50), t0 + secs(109)];
        assert_eq!(media.silent_leg(heard, t0 + secs(109), LIMIT), None);
        assert_eq!(
            media.silent_leg(heard, t0 + secs(110), LIMIT),
            Some(Side::A)
        );
    }

    #[test]
    fn a_held_call_is_never_timed_out_and_gets_a_fresh_start_on_resume() {
        let t0 = Instant::now();
        let mut media = MediaActivity::default();
        media.on_sdp(Side::A, Direction::SendRecv, t0);
        media.on_sdp(Side::B, Direction::SendRecv, t0);
        // The caller holds (sendonly), the callee answers recvonly; nobody sends.
        media.on_sdp(Side::A, Direction::SendOnly, t0 + secs(10));
        media.on_sdp(Side::B, Direction::RecvOnly, t0 + secs(10));
        let heard = [t0 + secs(10), t0 + secs(10)];
        assert_eq!(media.silent_leg(heard, t0 + secs(3600), LIMIT), None);
        // The caller resumes after an hour; the callee's answer is still recvonly.
        media.on_sdp(Side::A, Direction::SendRecv, t0 + secs(3600));
        assert_eq!(media.silent_leg(heard, t0 + secs(3700), LIMIT), None);
        // Once both are sendrecv the clock starts again from then, not from 10 s.
        media.on_sdp(Side::B, Direction::SendRecv, t0 + secs(3601));
        assert_eq!(media.silent_leg(heard, t0 + secs(3660), LIMIT), None);
        assert_eq!(
            media.silent_leg(heard, t0 + secs(3661), LIMIT),
            Some(Side::A)
        );
        // A later SDP that changes nothing does not restart it.
        media.on_sdp(Side::A, Direction::SendRecv, t0 + secs(3650));
        assert_eq!(
            media.silent_leg(heard, t0 + secs(3661), LIMIT),
            Some(Side::A)
        );
    }

    #[test]
    fn a_call_set_up_inactive_is_on_hold() {
        let t0 = Instant::now();
        let mut media = MediaActivity::default();
        media.on_sdp(Side::A, Direction::Inactive, t0);
        media.on_sdp(Side::B, Direction::Inactive, t0);
        assert_eq!(media.silent_leg([t0, t0], t0 + secs(600), LIMIT), None);
    }

    #[test]
    fn refreshes_go_by_update_unless_the_phones_allow_leaves_it_out() {
        let allow = |value: Option<&str>| {
            let mut headers = Headers::new();
            if let Some(value) = value {
                headers.push(Known::Allow, value);
            }
            takes_update(&headers)
        };
        assert!(allow(Some("INVITE, ACK, CANCEL, BYE, update, INFO")));
        assert!(!allow(Some("INVITE, ACK, CANCEL, BYE, OPTIONS")));
        // No Allow says nothing: UPDATE is tried (a 405 or 501 turns it off).
        assert!(allow(None));
    }

    #[test]
    fn media_is_checked_often_enough_for_short_timeouts() {
        assert_eq!(media_check_interval(secs(2)), secs(1));
        assert_eq!(media_check_interval(secs(6)), secs(3));
        assert_eq!(media_check_interval(secs(60)), secs(5));
    }
}
