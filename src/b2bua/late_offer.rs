//! Late offers (RFC 3261 §13.2.1, RFC 3264 §4): an INVITE or re-INVITE without SDP.
//!
//! Switchboard passes the lack of an offer on: the B-leg INVITE, or the relayed
//! re-INVITE, goes without SDP too, so the other phone's 2xx carries the offer. That
//! offer is rewritten for the requesting leg and sent in our 2xx to it; the answer
//! comes in that leg's ACK. Only then can the other phone's 2xx be acknowledged, since
//! the ACK of a 2xx that carried an offer must carry the answer (§13.2.2.4): until
//! then its retransmissions are absorbed, and our own 2xx is resent until the ACK. If
//! no ACK comes within 64*T1, or one comes without a usable answer, the call ends; an
//! offer still held is then answered by switchboard itself so the ACK before the BYE
//! is a valid one. When the dialplan answers an offerless call itself, the offer in
//! our 2xx is switchboard's own.

use super::call::{HeldAck, LateOffer, LegSdp};
use super::{B2bua, CallTimer};
use crate::media::Side;
use crate::sdp::Sdp;
use crate::sip::Request;
use crate::sip::dialog::Body;
use crate::sip::transaction::{TransactionLayer, TxKey};
use crate::store::{Disposition, HangupBy};
use std::time::{Duration, Instant};

/// Why an ACK that should carry the answer to our late offer can't be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadAnswer {
    Missing,
    Malformed,
    /// Every stream was rejected: there is no media to bridge.
    NoStream,
}

impl BadAnswer {
    /// The CDR's hangup cause.
    pub fn cause(self) -> &'static str {
        match self {
            BadAnswer::Missing => "no SDP answer in the ACK",
            BadAnswer::Malformed => "malformed SDP answer in the ACK",
            BadAnswer::NoStream => "the SDP answer in the ACK accepted no stream",
        }
    }
}

/// The answer an ACK carries.
pub fn answer_in(ack: &Request) -> Result<Sdp, BadAnswer> {
    if ack.body.is_empty() {
        return Err(BadAnswer::Missing);
    }
    let sdp = Sdp::parse(&ack.body).map_err(|_| BadAnswer::Malformed)?;
    if sdp.media.iter().any(|m| m.is_rtp() && !m.is_rejected()) {
        Ok(sdp)
    } else {
        Err(BadAnswer::NoStream)
    }
}

/// Whether an ACK from `side` with CSeq `seq` is the one that answers `late`: an ACK
/// for an earlier INVITE (prompted by a stray 2xx retransmission) is not.
pub fn answers(late: &LateOffer, side: Side, seq: Option<u32>) -> bool {
    late.answerer == side && seq == Some(late.cseq)
}

impl B2bua {
    /// Our 2xx with an offer went to `answerer` for its INVITE `cseq`: wait for the
    /// ACK with the answer. `held` is the other leg's unacknowledged 2xx the offer came
    /// from; `resend` our 2xx to resend (re-INVITEs over UDP).
    pub(super) fn await_answer(
        &mut self,
        id: u64,
        answerer: Side,
        cseq: u32,
        held: Option<HeldAck>,
        resend: Option<(TxKey, crate::sip::Response)>,
        now: Instant,
    ) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let give_up = now + self.ctx.t1 * 64;
        let first = if resend.is_some() {
            now + self.ctx.t1
        } else {
            give_up
        };
        call.late_offer = Some(LateOffer {
            answerer,
            cseq,
            held,
            resend,
            give_up,
        });
        let interval = (self.ctx.t1 * 2).min(self.ctx.t2);
        self.schedule(first, id, CallTimer::LateAnswer { give_up, interval });
    }

    /// An ACK from `side`: when it answers our late offer, the held 2xx on the other
    /// leg gets its ACK with that answer, and the relay the answerer's address.
    pub(super) fn on_late_answer(
        &mut self,
        txl: &mut TransactionLayer,
        id: u64,
        side: Side,
        ack: &Request,
    ) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let seq = ack.cseq().ok().map(|c| c.seq);
        if !call
            .late_offer
            .as_ref()
            .is_some_and(|late| answers(late, side, seq))
        {
            return;
        }
        let answer = match answer_in(ack) {
            Ok(answer) => answer,
            Err(bad) => {
                call.span
                    .in_scope(|| tracing::warn!(?side, ?bad, "late offer not answered"));
                self.end_call(
                    txl,
                    id,
                    Disposition::Answered,
                    HangupBy::System,
                    bad.cause(),
                );
                return;
            }
        };
        let Some(late) = call.late_offer.take() else {
            return;
        };
        if side == Side::A {
            call.a.sdp = Some(answer.clone());
        }
        call.span
            .in_scope(|| tracing::info!(?side, "late offer answered"));
        if let Some(held) = late.held {
            let to = super::in_dialog::other(side);
            self.ack_held(txl, id, to, &held, |leg| {
                leg.answer_across(&held.offer, &answer)
            });
        }
        self.update_relay(id, side, &answer);
    }

    /// The late offer's timer: resend our 2xx, or give up on the ACK.
    pub(super) fn on_late_answer_timer(
        &mut self,
        txl: &mut TransactionLayer,
        id: u64,
        give_up: Instant,
        interval: Duration,
        now: Instant,
    ) {
        let Some(late) = self
            .calls
            .get(&id)
            .and_then(|c| c.late_offer.as_ref())
            .filter(|late| late.give_up == give_up)
        else {
            return;
        };
        if now >= give_up {
            self.end_call(
                txl,
                id,
                Disposition::Answered,
                HangupBy::System,
                "no ACK with the SDP answer",
            );
            return;
        }
        let next = match &late.resend {
            Some((key, ok)) => {
                let _ = txl.send_response(now, *key, ok.clone());
                (now + interval).min(give_up)
            }
            None => give_up,
        };
        let interval = (interval * 2).min(self.ctx.t2);
        self.schedule(next, id, CallTimer::LateAnswer { give_up, interval });
    }

    /// The call is ending with a late offer unanswered: the held 2xx still gets its
    /// ACK, with switchboard's own answer, before the BYE (RFC 3261 §13.2.2.4).
    pub(super) fn settle_late_offer(&mut self, txl: &mut TransactionLayer, id: u64) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(held) = call.late_offer.take().and_then(|late| {
            let to = super::in_dialog::other(late.answerer);
            late.held.map(|held| (to, held))
        }) else {
            return;
        };
        let (to, held) = held;
        self.ack_held(txl, id, to, &held, |leg| leg.answer(&held.offer));
    }

    /// ACKs the held 2xx of the leg on `to`, with the answer `write` makes for that
    /// leg, keeping the ACK for the 2xx's retransmissions.
    fn ack_held(
        &mut self,
        txl: &mut TransactionLayer,
        id: u64,
        to: Side,
        held: &HeldAck,
        write: impl FnOnce(&mut LegSdp<'_>) -> Sdp,
    ) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(mut leg) = call.leg_sdp(to) else {
            return;
        };
        let answer = write(&mut leg);
        let ack = leg
            .dialog
            .ack_for_2xx(held.cseq, Some(Body::sdp(answer.to_bytes())));
        let peer = leg.peer;
        match held.reinvite {
            Some(tx) => self.ack_reinvite(txl, tx, peer, Some(&ack)),
            None => {
                txl.send_stateless(peer, bytes::Bytes::from(ack.to_bytes()));
                if let Some(b) = call.b.as_mut().filter(|_| to == Side::B) {
                    b.ack = Some(ack);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(cseq: u32, body: &str) -> Request {
        let content_type = if body.is_empty() {
            String::new()
        } else {
            "Content-Type: application/sdp\r\n".to_string()
        };
        let text = format!(
            "ACK sip:switchboard@127.0.0.1:5060 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKack{cseq}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:1000@127.0.0.1>;tag=caller\r\n\
             To: <sip:1001@127.0.0.1>;tag=sb\r\n\
             Call-ID: late@test\r\n\
             CSeq: {cseq} ACK\r\n\
             {content_type}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        match crate::sip::parse_datagram(text.into_bytes().into()) {
            Ok(crate::sip::Message::Request(r)) => r,
            other => panic!("not a request: {other:?}"),
        }
    }

    const ANSWER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n\
                          t=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

    fn late(answerer: Side, cseq: u32) -> LateOffer {
        LateOffer {
            answerer,
            cseq,
            held: None,
            resend: None,
            give_up: Instant::now(),
        }
    }

    #[test]
    fn the_ack_answer_is_read_from_its_body() {
        let answer = answer_in(&ack(2, ANSWER)).unwrap();
        assert_eq!(answer.rtp_addr(0), Some("127.0.0.1:6000".parse().unwrap()));
        assert_eq!(answer_in(&ack(2, "")), Err(BadAnswer::Missing));
        assert_eq!(answer_in(&ack(2, "hello")), Err(BadAnswer::Malformed));
        let rejected = ANSWER.replace("audio 6000", "audio 0");
        assert_eq!(answer_in(&ack(2, &rejected)), Err(BadAnswer::NoStream));
    }

    #[test]
    fn only_the_answerers_ack_for_that_invite_answers() {
        let pending = late(Side::A, 2);
        assert!(answers(&pending, Side::A, Some(2)));
        // An ACK for an earlier INVITE, or from the other leg, is not the answer.
        assert!(!answers(&pending, Side::A, Some(1)));
        assert!(!answers(&pending, Side::B, Some(2)));
        assert!(!answers(&pending, Side::A, None));
    }
}
