//! Requests the peer sends inside the dialog (RFC 3261 §12.2.2, §14.2).

use super::{Dialog, DialogState, contact_uri, is_target_refresh};
use crate::sip::{Known, Method, Request, Response, reason_phrase};

/// Why a request in the dialog is refused, and so which response it gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 400: a header the dialog needs (CSeq, Contact) doesn't parse.
    Malformed(&'static str),
    /// 481: the dialog has ended.
    Terminated,
    /// 500: the CSeq is not above the last one accepted (§12.2.2). An equal one can
    /// only be a retransmission that outlived its transaction.
    OutOfOrder,
    /// 491: an offer of ours is waiting for its answer (§14.2, RFC 3311 §5.2).
    Glare,
    /// 500 with Retry-After: an offer of theirs is still waiting for our answer.
    OfferPending,
}

impl Refusal {
    pub fn status(self) -> u16 {
        match self {
            Refusal::Malformed(_) => 400,
            Refusal::Terminated => 481,
            Refusal::OutOfOrder | Refusal::OfferPending => 500,
            Refusal::Glare => 491,
        }
    }

    /// The response to `req`. `random` picks the Retry-After of an `OfferPending` 500,
    /// 0–10 s as §14.2 asks; pass any uniformly random value.
    pub fn response(self, req: &Request, random: u32) -> Response {
        let status = self.status();
        let reason = match self {
            Refusal::Malformed(why) => format!("Bad Request ({why})"),
            _ => reason_phrase(status).to_string(),
        };
        let mut resp = Response::to_request(req, status, &reason);
        if self == Refusal::OfferPending {
            resp.headers
                .push(Known::RetryAfter, (random % 11).to_string());
        }
        resp
    }
}

impl Dialog {
    /// Checks a request the peer sent in this dialog (the caller matched it by
    /// [`super::DialogId::of_request`]) and applies it: the remote CSeq, the offer it
    /// starts, and the end of the dialog on BYE. The Contact of a target refresh
    /// (INVITE, UPDATE, ...) becomes the remote target when [`Dialog::respond`] sends
    /// its 2xx: RFC 6141 §4 makes a target refresh all or nothing, so a re-INVITE
    /// refused with 488 leaves the old target. Answer an accepted request with
    /// [`Dialog::respond`], a refused one with [`Refusal::response`].
    ///
    /// ACK and CANCEL reuse the INVITE's CSeq and are not checked; CANCEL belongs to the
    /// transaction layer, and the ACK of our 2xx ends nothing here.
    pub fn on_request(&mut self, req: &Request) -> Result<(), Refusal> {
        if matches!(req.method, Method::Ack | Method::Cancel) {
            return Ok(());
        }
        if self.state == DialogState::Terminated {
            return Err(Refusal::Terminated);
        }
        let seq = req.cseq().map_err(|e| Refusal::Malformed(e.0))?.seq;
        if self.remote_seq.is_some_and(|last| seq <= last) {
            return Err(Refusal::OutOfOrder);
        }
        let target = if is_target_refresh(&req.method) {
            contact_uri(req.contacts()).map_err(|e| Refusal::Malformed(e.0))?
        } else {
            None
        };
        // §12.2.2: an in-order request moves the remote CSeq on even if it is then refused.
        self.remote_seq = Some(seq);
        self.in_flight
            .received(&req.method, seq, !req.body.is_empty())?;
        if let Some(uri) = target {
            self.pending_target = Some((seq, uri));
        }
        if req.method == Method::Bye {
            self.state = DialogState::Terminated;
        }
        Ok(())
    }
}
