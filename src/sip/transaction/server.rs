//! Server transactions: INVITE (RFC 3261 §17.2.1 with RFC 6026's "Accepted") and
//! non-INVITE (§17.2.2).
//!
//! ```text
//! INVITE:     Proceeding --300-699--> Completed --ACK--> Confirmed --I--> gone
//!               |  (INVITE: resend      G: resend, double to T2   (ACKs absorbed)
//!               |   last 1xx)           H: timeout, no ACK
//!               +--2xx--> Accepted --L--> gone
//!                         (INVITE absorbed; ACK and the TU's 2xx resends pass through)
//!
//! non-INVITE: Trying --1xx--> Proceeding --final--> Completed --J--> gone
//!             (request absorbed) (request: resend 1xx)  (request: resend final)
//! ```
//!
//! An INVITE transaction sends 100 Trying by itself when the TU has sent no response
//! within 200 ms (§17.2.1); `TransactionLayer::send_trying` sends one at once.

use super::matching::ServerMatch;
use super::timers::Timer;
use super::txn::{Ctx, Flow, Index, Transaction};
use super::{Disposition, Event, Peer, SendError, State};
use crate::sip::{Method, Request, Response};
use bytes::Bytes;

impl Transaction {
    /// A server transaction for a new request; responses go to `reply_to`.
    pub(super) fn new_server(reply_to: Peer, request: Request, index: ServerMatch) -> Transaction {
        let invite = request.method == Method::Invite;
        Transaction {
            index: Index::Server(index),
            invite,
            state: if invite {
                State::Proceeding
            } else {
                State::Trying
            },
            peer: reply_to,
            request,
            repeat: None,
            retransmit: None,
            lifetime: None,
            response_to_tag: None,
        }
    }

    /// A request matched to this server transaction: a retransmission, or the ACK
    /// of an INVITE transaction.
    pub(super) fn on_request(
        &mut self,
        ctx: &mut Ctx,
        source: Peer,
        request: Request,
    ) -> (Disposition, Flow) {
        if request.method != Method::Ack {
            // RFC 6026 §7.1: after a 2xx, retransmitted INVITEs are absorbed; the TU
            // alone resends its 2xx.
            if !matches!(self.state, State::Confirmed | State::Accepted) {
                self.send_repeat(ctx);
            }
            return (Disposition::Absorbed, Flow::Continue);
        }
        match self.state {
            State::Completed => (
                Disposition::Absorbed,
                self.enter(ctx, State::Confirmed, Timer::I),
            ),
            // RFC 6026 §7.1: an ACK in "Accepted" (for the 2xx) belongs to the TU.
            State::Accepted => {
                ctx.event(Event::Ack {
                    invite: Some(ctx.key),
                    source,
                    request,
                });
                (Disposition::Delivered(Some(ctx.key)), Flow::Continue)
            }
            _ => (Disposition::Absorbed, Flow::Continue),
        }
    }

    /// A response from the TU.
    pub(super) fn send_response(
        &mut self,
        ctx: &mut Ctx,
        response: Response,
    ) -> Result<Flow, SendError> {
        let status = response.status;
        if !(100..700).contains(&status) {
            return Err(SendError::Malformed("status code outside 100-699"));
        }
        let provisional = status < 200;
        let success = status < 300;
        let open = matches!(self.state, State::Trying | State::Proceeding);
        let accepted_2xx = self.state == State::Accepted && success && !provisional;
        if !open && !accepted_2xx {
            return Err(SendError::WrongState(self.state));
        }
        if !provisional {
            self.response_to_tag = response
                .to()
                .ok()
                .and_then(|to| to.tag().map(str::to_owned));
        }
        self.repeat = Some(Bytes::from(response.to_bytes()));
        self.send_repeat(ctx);
        Ok(match (self.invite, provisional, success) {
            (_, true, _) => {
                self.state = State::Proceeding;
                Flow::Continue
            }
            (false, false, _) => self.enter(ctx, State::Completed, Timer::J),
            (true, false, true) if accepted_2xx => Flow::Continue,
            (true, false, true) => self.enter(ctx, State::Accepted, Timer::L),
            (true, false, false) => {
                let flow = self.enter(ctx, State::Completed, Timer::H);
                self.start_retransmit(ctx);
                flow
            }
        })
    }
}
