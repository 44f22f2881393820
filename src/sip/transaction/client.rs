//! Client transactions: INVITE (RFC 3261 §17.1.1 with RFC 6026's "Accepted") and
//! non-INVITE (§17.1.2).
//!
//! ```text
//! INVITE:     Calling --1xx--> Proceeding --300-699: send ACK--> Completed --D--> gone
//!               |  A: resend, double    |                          (final again: resend ACK)
//!               |  B: timeout           +--2xx--> Accepted --M--> gone
//!               +--2xx / 300-699 as from Proceeding              (every 2xx to the TU)
//!
//! non-INVITE: Trying --1xx--> Proceeding --final--> Completed --K--> gone
//!               E: resend, double to T2   E: resend every T2       (responses absorbed)
//!               F: timeout                F: timeout
//! ```

use super::hop::ack_for;
use super::timers::Timer;
use super::txn::{Ctx, Flow, Index, Transaction};
use super::{Disposition, Event, Peer, State};
use crate::sip::{Method, Request, Response};
use bytes::Bytes;

impl Transaction {
    /// Sends `request` and starts Timer A/E (unreliable transports) and Timer B/F.
    pub(super) fn new_client(
        ctx: &mut Ctx,
        dest: Peer,
        request: Request,
        index: Index,
    ) -> Transaction {
        let invite = request.method == Method::Invite;
        let mut tx = Transaction {
            index,
            invite,
            state: if invite {
                State::Calling
            } else {
                State::Trying
            },
            peer: dest,
            repeat: Some(Bytes::from(request.to_bytes())),
            request,
            retransmit: None,
            lifetime: None,
            response_to_tag: None,
        };
        tx.send_repeat(ctx);
        tx.start_retransmit(ctx);
        tx.set_lifetime(ctx, if invite { Timer::B } else { Timer::F });
        tx
    }

    /// A response matched to this client transaction.
    pub(super) fn on_response(&mut self, ctx: &mut Ctx, response: Response) -> (Disposition, Flow) {
        let delivered = Disposition::Delivered(Some(ctx.key));
        let status = response.status;
        let flow = match (self.invite, self.state) {
            (_, State::Calling | State::Trying | State::Proceeding) if status < 200 => {
                if self.state == State::Calling {
                    // Timer B guards only "Calling"; the TU decides how long to ring.
                    self.retransmit = None;
                    self.lifetime = None;
                }
                self.state = State::Proceeding;
                Flow::Continue
            }
            (true, State::Calling | State::Proceeding) if status < 300 => {
                self.enter(ctx, State::Accepted, Timer::M)
            }
            (true, State::Calling | State::Proceeding) => {
                self.repeat = Some(Bytes::from(ack_for(&self.request, &response).to_bytes()));
                self.send_repeat(ctx);
                self.enter(ctx, State::Completed, Timer::D)
            }
            (false, State::Trying | State::Proceeding) => {
                self.enter(ctx, State::Completed, Timer::K)
            }
            // RFC 6026 §7.2: every 2xx, retransmitted or from another fork, goes up.
            (true, State::Accepted) if (200..300).contains(&status) => Flow::Continue,
            (true, State::Completed) if status >= 300 => {
                self.send_repeat(ctx);
                return (Disposition::Absorbed, Flow::Continue);
            }
            _ => return (Disposition::Absorbed, Flow::Continue),
        };
        ctx.event(Event::Response {
            key: ctx.key,
            response,
        });
        (delivered, flow)
    }
}
