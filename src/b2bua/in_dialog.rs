//! Requests inside a call's dialogs: BYE ends the call, re-INVITE and UPDATE (hold,
//! resume, codec or address changes) and INFO are carried to the other leg with the
//! SDP rewritten, and the other leg's answer is carried back. A re-INVITE without SDP
//! goes on without; the offer in the other leg's 2xx is then a late offer (see
//! `late_offer`).

use super::B2bua;
use super::call::{HeldAck, Relayed};
use super::dial::sdp_of;
use super::timers::add_session_timer;
use crate::media::Side;
use crate::sdp::Sdp;
use crate::sip::dialog::Body;
use crate::sip::transaction::{Peer, TransactionLayer, TxKey};
use crate::sip::{Method, Request, Response, reason_phrase};
use crate::store::{Disposition, HangupBy};
use std::time::Instant;

/// The leg across the bridge from `side`.
pub(super) fn other(side: Side) -> Side {
    match side {
        Side::A => Side::B,
        Side::B => Side::A,
    }
}

impl B2bua {
    /// A request with a To tag. Returns false when it belongs to no call of ours (the
    /// core answers 481).
    pub fn on_in_dialog(
        &mut self,
        txl: &mut TransactionLayer,
        key: TxKey,
        _source: Peer,
        req: Request,
    ) -> bool {
        let Some((id, side)) = self.dialog_of(&req) else {
            return false;
        };
        let now = Instant::now();
        let Some(call) = self.calls.get_mut(&id) else {
            return false;
        };
        let _enter = call.span.clone().entered();
        let Some((dialog, _)) = call.leg_mut(side) else {
            return false;
        };
        if let Err(refusal) = dialog.on_request(&req) {
            let _ = txl.send_response(now, key, refusal.response(&req, rand::random()));
            return true;
        }
        match req.method {
            Method::Bye => {
                let resp = dialog.respond(&req, 200);
                let _ = txl.send_response(now, key, resp);
                let by = if side == Side::A {
                    HangupBy::Caller
                } else {
                    HangupBy::Callee
                };
                tracing::info!(?side, "BYE");
                self.end_call(txl, id, Disposition::Answered, by, "normal clearing");
            }
            Method::Invite | Method::Update => {
                // It refreshes the leg's session when we answer 2xx (RFC 4028 §10); one
                // asking for less than our minimum gets 422 here instead (§9).
                if let Err(rejection) = self.ctx.timer_policy.answer(&req) {
                    let resp = crate::sip::checks::rejection_response(&req, &rejection);
                    let _ = txl.send_response(now, key, resp);
                    return true;
                }
                self.relay_request(txl, id, side, key, req, now)
            }
            Method::Info => {
                if !self.on_info_key(txl, id, side, key, &req) {
                    self.relay_request(txl, id, side, key, req, now)
                }
            }
            _ => {
                let resp = dialog.respond(&req, 200);
                let _ = txl.send_response(now, key, resp);
            }
        }
        true
    }

    /// Carries a request to the other leg; answers it here when there is none.
    fn relay_request(
        &mut self,
        txl: &mut TransactionLayer,
        id: u64,
        side: Side,
        key: TxKey,
        req: Request,
        now: Instant,
    ) {
        let offer = (!req.body.is_empty())
            .then(|| Sdp::parse(&req.body).ok())
            .flatten();
        if self.offer_collides(id, side, &req) {
            // An exchange is still open (RFC 3261 §14.1): our own offer on the other
            // leg, or our late offer waiting for its answer in an ACK. The phone
            // retries after its own random back-off; nothing of this offer is applied.
            let resp = Response::to_request(&req, 491, reason_phrase(491));
            let _ = txl.send_response(now, key, resp);
            return;
        }
        if let Some(sdp) = &offer {
            self.update_relay(id, side, sdp);
        }
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if let Some(sdp) = &offer
            && side == Side::A
        {
            call.a.sdp = Some(sdp.clone());
        }
        let (a_port, b_port) = (call.media.a_port, call.media.b_port);
        let other_timer = call.session_timer(other(side));
        let Some(b) = call.b.as_mut() else {
            // Answered by the script but not bridged: answer for ourselves, or make our
            // own offer to an offerless re-INVITE.
            let mut resp = call.a.dialog.respond(&req, 200);
            let codecs = &call.a.codecs;
            let (ip, origin) = (call.a.our_ip, &mut call.a.origin);
            let late = offer.is_none() && req.method == Method::Invite;
            match &offer {
                Some(sdp) => {
                    let ours = crate::sdp::answer(sdp, codecs, ip, &[a_port], origin);
                    resp.set_body("application/sdp", ours.to_bytes());
                }
                None if late => {
                    let ours = crate::sdp::own_offer(codecs, ip, a_port, origin);
                    resp.set_body("application/sdp", ours.to_bytes());
                }
                None => {}
            }
            let reliable = call.a.peer.is_reliable();
            self.accept_refresh(id, side, &req, &mut resp, now);
            let resend = (!reliable).then(|| (key, resp.clone()));
            let _ = txl.send_response(now, key, resp);
            if late {
                let cseq = req.cseq().map_or(0, |c| c.seq);
                self.await_answer(id, Side::A, cseq, None, resend, now);
            }
            return;
        };
        let (target, peer, our_ip, port, origin, codecs) = match other(side) {
            Side::A => (
                &mut call.a.dialog,
                call.a.peer,
                call.a.our_ip,
                a_port,
                &mut call.a.origin,
                &call.a.codecs,
            ),
            Side::B => (
                &mut b.dialog,
                b.peer,
                b.our_ip,
                b_port,
                &mut b.origin,
                &b.codecs,
            ),
        };
        let music = call.hold_music.is_some();
        let across = offer.as_ref().map(|sdp| {
            let mut across = crate::sdp::offer_across(sdp, codecs)?;
            if music {
                crate::sdp::hold_with_music(&mut across);
            }
            Some(across)
        });
        let body = match (across, req.body.is_empty()) {
            (Some(Some(sdp)), _) => Some(Body::sdp(
                crate::sdp::rewrite_for_leg(&sdp, our_ip, &[port], origin).to_bytes(),
            )),
            (Some(None), _) => {
                let resp = Response::to_request(&req, 488, "Not Acceptable Here (no audio)");
                let _ = txl.send_response(now, key, resp);
                return;
            }
            (None, false) => req.content_type().map(|ct| Body {
                content_type: ct.clone(),
                bytes: req.body.clone(),
            }),
            (None, true) => None,
        };
        let mut forwarded = target.new_request(req.method.clone(), body);
        add_session_timer(other_timer, &mut forwarded);
        let cseq = forwarded.cseq().map_or(0, |c| c.seq);
        match txl.send_request(now, peer, forwarded) {
            Ok(client_tx) => {
                self.by_client_tx.insert(client_tx, id);
                call.relayed.push(Relayed {
                    client_tx,
                    cseq,
                    from: side,
                    server_tx: key,
                    request: req,
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not relay in-dialog request");
                let resp = Response::to_request(&req, 500, reason_phrase(500));
                let _ = txl.send_response(now, key, resp);
            }
        }
    }

    /// Whether `req` from `side` would start an offer/answer exchange while another
    /// is open on the call: an INVITE, or an UPDATE with a body, and either a late
    /// offer of ours still unanswered or an offer of ours open on the other leg.
    fn offer_collides(&self, id: u64, side: Side, req: &Request) -> bool {
        let Some(call) = self.calls.get(&id) else {
            return false;
        };
        let starts_exchange =
            req.method == Method::Invite || (req.method == Method::Update && !req.body.is_empty());
        let other_leg = match other(side) {
            Side::A => Some(&call.a.dialog),
            Side::B => call.b.as_ref().map(|b| &b.dialog),
        };
        starts_exchange
            && (call.late_offer.is_some() || other_leg.is_some_and(|d| !d.can_send_offer()))
    }

    /// The other leg answered a relayed request: answer the original the same way.
    pub(super) fn on_relayed_response(
        &mut self,
        txl: &mut TransactionLayer,
        id: u64,
        index: usize,
        resp: Response,
    ) {
        if resp.status < 200 {
            return;
        }
        let now = Instant::now();
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let relayed = call.relayed.remove(index);
        let to = other(relayed.from);
        let (a_port, b_port) = (call.media.a_port, call.media.b_port);
        let answer = sdp_of(&resp);
        let accepted_invite = relayed.request.method == Method::Invite && resp.is_success();
        let seq = resp.cseq().map_or(0, |c| c.seq);
        // An offerless re-INVITE: this 2xx carries the offer, and its ACK must wait
        // for the requester's answer (see `late_offer`).
        let late = accepted_invite && relayed.request.body.is_empty() && answer.is_some();
        // The leg that answered: keep its dialog current, ACK a 2xx to our re-INVITE
        // (a late offer's ACK waits for the answer).
        let Some((dialog, peer)) = call.leg_mut(to) else {
            return;
        };
        dialog.on_response(&resp);
        if accepted_invite {
            let ack = (!late).then(|| dialog.ack_for_2xx(seq, None));
            self.ack_reinvite(txl, relayed.client_tx, peer, ack.as_ref());
        }
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(b) = call.b.as_mut() else { return };
        let (source, our_ip, port, origin, codecs) = match relayed.from {
            Side::A => (
                &mut call.a.dialog,
                call.a.our_ip,
                a_port,
                &mut call.a.origin,
                &call.a.codecs,
            ),
            Side::B => (&mut b.dialog, b.our_ip, b_port, &mut b.origin, &b.codecs),
        };
        let mut out = source.respond(&relayed.request, resp.status);
        out.reason = resp.reason.clone();
        let requested = Sdp::parse(&relayed.request.body).ok();
        // The answer to the requester's offer, made from the other phone's; or, to an
        // offerless re-INVITE, the other phone's offer passed on.
        let passed_on = match (&answer, &requested) {
            (Some(sdp), Some(offer)) => Some(crate::sdp::answer_across(
                offer,
                sdp,
                codecs,
                our_ip,
                &[port],
                origin,
            )),
            (Some(sdp), None) => crate::sdp::offer_across(sdp, codecs)
                .map(|offer| crate::sdp::rewrite_for_leg(&offer, our_ip, &[port], origin)),
            (None, _) => None,
        };
        if let Some(sdp) = &passed_on {
            out.set_body("application/sdp", sdp.to_bytes());
        } else if !resp.body.is_empty()
            && let Some(ct) = resp.content_type()
        {
            out.set_body(ct, resp.body.clone());
        }
        let requester_reliable = match relayed.from {
            Side::A => call.a.peer.is_reliable(),
            Side::B => b.peer.is_reliable(),
        };
        self.accept_refresh(id, relayed.from, &relayed.request, &mut out, now);
        self.on_refresh_answer(id, to, relayed.request.method.clone(), &resp, now);
        let resend = (late && !requester_reliable).then(|| (relayed.server_tx, out.clone()));
        let _ = txl.send_response(now, relayed.server_tx, out);
        let Some(sdp) = answer else { return };
        if late {
            let cseq = relayed.request.cseq().map_or(0, |c| c.seq);
            let held = HeldAck {
                cseq: seq,
                offer: sdp.clone(),
                reinvite: Some(relayed.client_tx),
            };
            self.await_answer(id, relayed.from, cseq, Some(held), resend, now);
        }
        self.update_relay(id, to, &sdp);
    }
}
