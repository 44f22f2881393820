//! What every transaction holds, and the timer bookkeeping the four state machines
//! share. The machines themselves are in `client.rs` and `server.rs`.

use super::matching::{ClientMatch, ServerMatch};
use super::timers::{Timer, TimerConfig};
use super::{Event, Output, Peer, State, Transmit, TxKey};
use crate::sip::{Request, Response};
use bytes::Bytes;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

/// How long an INVITE server transaction waits for the TU before it sends 100 Trying
/// itself (RFC 3261 §17.2.1).
const AUTO_TRYING: Duration = Duration::from_millis(200);

/// How a transaction finds its way back out of the layer's indexes.
pub(super) enum Index {
    Client(ClientMatch),
    Server(ServerMatch),
}

/// Whether a transaction lives on after handling an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub(super) enum Flow {
    Continue,
    Terminate,
}

/// The two timers a transaction can have running at once: one that retransmits
/// (A, E, G) and one that ends the current state (B, D, F, H, I, J, K, L, M).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Slot {
    Retransmit,
    Lifetime,
}

/// A scheduled timer. The heap may hold entries a transaction has since replaced or
/// outlived; an entry counts only while its transaction's slot still holds `at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Deadline {
    pub(super) at: Instant,
    pub(super) key: TxKey,
    pub(super) slot: Slot,
}

/// The layer's side of a call into one transaction: the time, the configuration, and
/// the queues the transaction writes its outputs and timers to.
pub(super) struct Ctx<'a> {
    pub(super) now: Instant,
    pub(super) config: &'a TimerConfig,
    pub(super) key: TxKey,
    pub(super) out: &'a mut VecDeque<Output>,
    pub(super) deadlines: &'a mut BinaryHeap<Reverse<Deadline>>,
}

impl Ctx<'_> {
    pub(super) fn transmit(&mut self, dest: Peer, bytes: Bytes) {
        self.out.push_back(Output::Transmit(Transmit {
            dest,
            bytes,
            key: Some(self.key),
        }));
    }

    pub(super) fn event(&mut self, event: Event) {
        self.out.push_back(Output::Event(event));
    }

    fn schedule(&mut self, at: Instant, slot: Slot) {
        self.deadlines.push(Reverse(Deadline {
            at,
            key: self.key,
            slot,
        }));
    }
}

pub(super) struct Transaction {
    pub(super) index: Index,
    pub(super) invite: bool,
    pub(super) state: State,
    /// Client: where the request goes. Server: where responses go.
    pub(super) peer: Peer,
    /// The request that created the transaction.
    pub(super) request: Request,
    /// What a retransmission repeats: the request (client), then the ACK for a
    /// non-2xx final response (INVITE client); the last response sent (server).
    pub(super) repeat: Option<Bytes>,
    /// When the retransmission timer fires next, and its current interval.
    pub(super) retransmit: Option<(Instant, Duration)>,
    /// When the current state ends, and by which timer.
    pub(super) lifetime: Option<(Instant, Timer)>,
    /// Server: the To tag of the final response, which an RFC 2543 ACK must carry.
    pub(super) response_to_tag: Option<String>,
}

impl Transaction {
    pub(super) fn is_client(&self) -> bool {
        matches!(self.index, Index::Client(_))
    }

    fn retransmit_timer(&self) -> Timer {
        match (self.is_client(), self.invite) {
            (true, true) => Timer::A,
            (true, false) => Timer::E,
            (false, _) => Timer::G,
        }
    }

    pub(super) fn send_repeat(&self, ctx: &mut Ctx) {
        if let Some(bytes) = &self.repeat {
            ctx.transmit(self.peer, bytes.clone());
        }
    }

    /// Starts this transaction's retransmission timer at T1; over reliable transports
    /// the transport retransmits, so the timer isn't started.
    pub(super) fn start_retransmit(&mut self, ctx: &mut Ctx) {
        if !self.peer.is_reliable() {
            self.set_retransmit(ctx, ctx.config.t1);
        }
    }

    fn set_retransmit(&mut self, ctx: &mut Ctx, interval: Duration) {
        let at = ctx.now + interval;
        self.retransmit = Some((at, interval));
        ctx.schedule(at, Slot::Retransmit);
    }

    /// INVITE server: RFC 3261 §17.2.1 wants a 100 Trying unless the TU answers
    /// within 200 ms. The retransmission slot is free until a final response (which
    /// re-arms or clears it), so it carries that deadline.
    pub(super) fn arm_trying(&mut self, ctx: &mut Ctx) {
        self.set_retransmit(ctx, AUTO_TRYING);
    }

    pub(super) fn set_lifetime(&mut self, ctx: &mut Ctx, timer: Timer) {
        let at = ctx.now + ctx.config.duration(timer, self.peer.is_reliable());
        self.lifetime = Some((at, timer));
        ctx.schedule(at, Slot::Lifetime);
    }

    /// Moves to `state`, stopping retransmissions and starting `timer` as the state's
    /// end. A zero duration (D, I, J, K over reliable transports) ends it at once.
    pub(super) fn enter(&mut self, ctx: &mut Ctx, state: State, timer: Timer) -> Flow {
        self.state = state;
        self.retransmit = None;
        if ctx
            .config
            .duration(timer, self.peer.is_reliable())
            .is_zero()
        {
            self.lifetime = None;
            return Flow::Terminate;
        }
        self.set_lifetime(ctx, timer);
        Flow::Continue
    }

    /// Whether `deadline` is still this transaction's pending timer.
    pub(super) fn is_due(&self, deadline: &Deadline) -> bool {
        let at = match deadline.slot {
            Slot::Retransmit => self.retransmit.map(|(at, _)| at),
            Slot::Lifetime => self.lifetime.map(|(at, _)| at),
        };
        at == Some(deadline.at)
    }

    /// Fires the timer in `slot`; the caller has checked [`Transaction::is_due`].
    pub(super) fn on_timer(&mut self, ctx: &mut Ctx, slot: Slot) -> Flow {
        match slot {
            Slot::Retransmit => {
                let Some((_, interval)) = self.retransmit else {
                    return Flow::Continue;
                };
                if self.invite && !self.is_client() && self.state == State::Proceeding {
                    // The 200 ms of §17.2.1 are up: 100 Trying, unless the TU has
                    // answered meanwhile.
                    self.retransmit = None;
                    if self.repeat.is_none() {
                        let trying = Response::to_request(&self.request, 100, "Trying");
                        self.repeat = Some(Bytes::from(trying.to_bytes()));
                        self.send_repeat(ctx);
                    }
                    return Flow::Continue;
                }
                self.send_repeat(ctx);
                let timer = self.retransmit_timer();
                // §17.1.2.2: once a provisional response has arrived, a non-INVITE
                // request is repeated every T2.
                let next = if timer == Timer::E && self.state == State::Proceeding {
                    ctx.config.t2
                } else {
                    ctx.config.backoff(timer, interval)
                };
                self.set_retransmit(ctx, next);
                Flow::Continue
            }
            Slot::Lifetime => {
                if let Some((_, timer)) = self.lifetime.take()
                    && timer.is_timeout()
                {
                    ctx.event(Event::Timeout {
                        key: ctx.key,
                        timer,
                    });
                }
                Flow::Terminate
            }
        }
    }
}
