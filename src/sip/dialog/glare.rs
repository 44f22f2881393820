//! Offers in flight and glare (RFC 3261 §14, RFC 3311 §5.2).
//!
//! Only one offer/answer exchange may run on a dialog at a time. Every INVITE starts
//! one (its offer is in the request or, for an offerless INVITE, in the 2xx), and so
//! does an UPDATE with a body. While ours runs, a new one from the peer collides and
//! gets 491; while theirs runs unanswered, another from them gets 500 with Retry-After.
//! An INVITE counts until its final response; the ACK that may carry the answer
//! follows the 2xx at once from our side and is not waited for from theirs.

use super::{Dialog, Refusal};
use crate::sip::Method;
use std::time::Duration;

/// CSeq numbers of the offer-bearing transactions without a final response.
#[derive(Clone, Debug, Default)]
pub(super) struct InFlight {
    invite_out: Option<u32>,
    update_out: Option<u32>,
    invite_in: Option<u32>,
    update_in: Option<u32>,
}

/// Which slot a request occupies, if it starts an offer/answer exchange.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Exchange {
    Invite,
    Update,
}

fn exchange(method: &Method, has_body: bool) -> Option<Exchange> {
    match method {
        Method::Invite => Some(Exchange::Invite),
        Method::Update if has_body => Some(Exchange::Update),
        _ => None,
    }
}

impl InFlight {
    /// A UAC-side dialog: our INVITE `seq` awaits its final response.
    pub(super) fn invite_sent(seq: u32) -> InFlight {
        InFlight {
            invite_out: Some(seq),
            ..InFlight::default()
        }
    }

    /// A UAS-side dialog: we owe the INVITE `seq` its final response.
    pub(super) fn invite_received(seq: u32) -> InFlight {
        InFlight {
            invite_in: Some(seq),
            ..InFlight::default()
        }
    }

    pub(super) fn awaiting_answer(&self) -> bool {
        self.invite_out.is_some() || self.update_out.is_some()
    }

    pub(super) fn owes_answer(&self) -> bool {
        self.invite_in.is_some() || self.update_in.is_some()
    }

    fn outgoing(&mut self, x: Exchange) -> &mut Option<u32> {
        match x {
            Exchange::Invite => &mut self.invite_out,
            Exchange::Update => &mut self.update_out,
        }
    }

    fn incoming(&mut self, x: Exchange) -> &mut Option<u32> {
        match x {
            Exchange::Invite => &mut self.invite_in,
            Exchange::Update => &mut self.update_in,
        }
    }

    /// We sent a request.
    pub(super) fn sent(&mut self, method: &Method, seq: u32, has_body: bool) {
        if let Some(x) = exchange(method, has_body) {
            *self.outgoing(x) = Some(seq);
        }
    }

    /// A final response to our request `seq` arrived.
    pub(super) fn answered_ours(&mut self, method: &Method, seq: u32) {
        if let Some(x) = exchange(method, true) {
            let slot = self.outgoing(x);
            if *slot == Some(seq) {
                *slot = None;
            }
        }
    }

    /// A request from the peer: refused if it would start a second exchange.
    pub(super) fn received(
        &mut self,
        method: &Method,
        seq: u32,
        has_body: bool,
    ) -> Result<(), Refusal> {
        let Some(x) = exchange(method, has_body) else {
            return Ok(());
        };
        if self.owes_answer() {
            return Err(Refusal::OfferPending);
        }
        if self.awaiting_answer() {
            return Err(Refusal::Glare);
        }
        *self.incoming(x) = Some(seq);
        Ok(())
    }

    /// We sent the final response to the peer's request `seq`.
    pub(super) fn answered_theirs(&mut self, method: &Method, seq: u32) {
        if let Some(x) = exchange(method, true) {
            let slot = self.incoming(x);
            if *slot == Some(seq) {
                *slot = None;
            }
        }
    }
}

impl Dialog {
    /// Our INVITE, or our UPDATE with an offer, has no final response yet.
    pub fn awaiting_answer(&self) -> bool {
        self.in_flight.awaiting_answer()
    }

    /// The peer's INVITE, or its UPDATE with an offer, has no final response from us.
    pub fn owes_answer(&self) -> bool {
        self.in_flight.owes_answer()
    }

    /// True when a re-INVITE or an UPDATE with an offer may be sent now (§14.1: never
    /// while another INVITE is in progress in either direction).
    pub fn can_send_offer(&self) -> bool {
        !self.awaiting_answer() && !self.owes_answer()
    }

    /// How long to wait before retrying a re-INVITE or UPDATE that got 491 (§14.1):
    /// 2.1–4 s when we generated the Call-ID, 0–2 s otherwise, in 10 ms steps, so the
    /// two sides don't retry together. `random` is any uniformly random value.
    pub fn glare_retry_delay(&self, random: u32) -> Duration {
        let steps = if self.owns_call_id() {
            210 + random % 191
        } else {
            random % 201
        };
        Duration::from_millis(u64::from(steps) * 10)
    }
}
