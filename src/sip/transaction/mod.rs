//! The SIP transaction layer (RFC 3261 §17, amended by RFC 6026), sans-IO.
//!
//! A [`TransactionLayer`] holds every client and server transaction of one endpoint.
//! It never touches a socket or reads a clock: the transport shell feeds it parsed
//! messages and the current time, and carries out what it asks for. The loop, in the
//! style of quinn-proto and str0m:
//!
//! ```text
//! loop {
//!     // 1. Inputs, each stamped with `now`:
//!     //    a datagram or stream frame parsed into a Request/Response
//!     //        layer.handle_request(now, source_peer, request) / layer.handle_response(now, response)
//!     //    the TU (UAS/B2BUA core) acting
//!     //        layer.send_request(now, dest, request) / send_response / send_trying / send_cancel
//!     //    a send that failed          layer.handle_transport_error(now, key)
//!     //    the deadline passed         layer.handle_timeout(now)
//!     // 2. Drain the outputs, in order:
//!     while let Some(out) = layer.poll_output() {
//!         match out {
//!             Output::Transmit(t) => { /* send t.bytes to t.dest */ }
//!             Output::Event(e) => { /* hand to the TU: requests, responses, ACKs, timeouts */ }
//!         }
//!     }
//!     // 3. Sleep until a message, a TU command, or layer.poll_timeout().
//! }
//! ```
//!
//! What the layer does on its own: retransmits requests (Timers A, E) and non-2xx
//! INVITE responses (Timer G) over UDP; answers request retransmissions with the last
//! response; sends the ACK for a non-2xx final response and repeats it for each
//! retransmission of that response; absorbs the ACK of a non-2xx; times transactions
//! out (B, F, H); and removes every transaction when it ends, reporting
//! [`Event::Terminated`] once per transaction.
//!
//! What it leaves to the TU: whether to send 100 Trying; the ACK for a 2xx and the
//! retransmission of a 2xx (RFC 6026 puts both in the TU, and the "Accepted" states
//! keep the transactions alive meanwhile so INVITE retransmissions are absorbed and
//! every 2xx and ACK reaches the TU); Timer C and when to CANCEL (an INVITE client
//! transaction in "Proceeding" lives until a final response, or until 64·T1 after
//! [`TransactionLayer::send_cancel`]); and a response to every request it is given
//! (a server transaction waits for the TU as long as it takes).
//!
//! Late arrivals, after a transaction has ended: a response matches nothing and is
//! dropped (RFC 6026 amends RFC 3261 §18.1.2: only a stateless proxy forwards a stray
//! response); an ACK is passed to the TU as [`Event::Ack`] with no transaction, which
//! is how ACKs for 2xx arrive anyway; any other request starts a new server
//! transaction. That last case can only be a retransmission from a client whose own
//! timers have run longer than ours (64·T1 over UDP, and reliable transports don't
//! retransmit), so the TU sees it as new and its dialog layer answers it (a BYE for a
//! gone dialog gets 481, a repeat INVITE without a To tag is caught by merged-request
//! detection, RFC 3261 §8.2.2.2).

mod client;
mod hop;
mod matching;
mod peer;
mod server;
mod timers;
mod txn;

#[cfg(test)]
mod tests;

pub use hop::{ack_for, cancel_for};
pub use peer::{Peer, TransportKind};
pub use timers::{Timer, TimerConfig};

use crate::sip::{Method, Request, Response, SipStr};
use bytes::Bytes;
use matching::{ClientMatch, ServerMatch};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::time::Instant;
use txn::{Ctx, Deadline, Flow, Index, Transaction};

/// Names one transaction for as long as it lives. Keys are never reused, so a key
/// kept after [`Event::Terminated`] just finds nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxKey(u64);

impl fmt::Display for TxKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tx{}", self.0)
    }
}

/// The RFC 3261 / RFC 6026 state of a live transaction ("Terminated" ones are gone).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// INVITE client: no response yet.
    Calling,
    /// Non-INVITE client or server: no response yet.
    Trying,
    Proceeding,
    Completed,
    /// INVITE server: the ACK for a non-2xx arrived.
    Confirmed,
    /// INVITE client or server after a 2xx (RFC 6026).
    Accepted,
}

/// Bytes to send and where; `key` names the transaction, so a failed send can be
/// reported with [`TransactionLayer::handle_transport_error`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub dest: Peer,
    pub bytes: Bytes,
    pub key: Option<TxKey>,
}

/// What the TU is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A new request and the server transaction that will carry its responses.
    Request {
        key: TxKey,
        source: Peer,
        request: Request,
    },
    /// An ACK outside any INVITE transaction's own handling: the ACK for a 2xx. It
    /// names the INVITE server transaction when it matched one in "Accepted".
    Ack {
        invite: Option<TxKey>,
        source: Peer,
        request: Request,
    },
    /// A response to a request we sent: every provisional, every final, and each 2xx
    /// of an INVITE (retransmissions and forks) until Timer M.
    Response { key: TxKey, response: Response },
    /// Timer B or F (no final response) or H (no ACK for a non-2xx) fired.
    Timeout { key: TxKey, timer: Timer },
    /// The transport couldn't deliver this transaction's message.
    TransportError { key: TxKey },
    /// The transaction has ended and been removed; sent once for every transaction.
    Terminated { key: TxKey },
}

/// One thing for the shell to do.
#[derive(Clone, Debug, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "outputs are drained as they are made; copying one beats a heap allocation"
)]
pub enum Output {
    Transmit(Transmit),
    Event(Event),
}

/// What became of a received message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// It started this server transaction; [`Event::Request`] is queued.
    New(TxKey),
    /// Queued for the TU as [`Event::Response`] or [`Event::Ack`], with the
    /// transaction it matched, if any.
    Delivered(Option<TxKey>),
    /// Handled inside the layer: a retransmission, or the ACK for a non-2xx.
    Absorbed,
    /// Matched nothing that wants it (a stray response), or lacks what matching needs.
    Dropped,
}

/// Why the layer refused something the TU asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    /// No such transaction (it has ended, or the key names the other role).
    NoSuchTransaction,
    /// Not allowed in this state: a second final response, a CANCEL before any
    /// provisional response (RFC 3261 §9.1), ...
    WrongState(State),
    /// The message lacks what a transaction needs.
    Malformed(&'static str),
    /// The ACK for a 2xx is not a transaction (RFC 3261 §17.1.1.3); send it with
    /// [`TransactionLayer::send_stateless`].
    AckIsNotATransaction,
    /// A client transaction with this branch and method already exists.
    DuplicateBranch,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::NoSuchTransaction => f.write_str("no such transaction"),
            SendError::WrongState(s) => write!(f, "not allowed in state {s:?}"),
            SendError::Malformed(why) => write!(f, "malformed message: {why}"),
            SendError::AckIsNotATransaction => f.write_str("an ACK for a 2xx is sent statelessly"),
            SendError::DuplicateBranch => f.write_str("branch already in use"),
        }
    }
}

impl std::error::Error for SendError {}

/// A fresh RFC 3261 branch for the top Via of a request we originate.
pub fn new_branch() -> String {
    format!(
        "{}{:016x}",
        crate::sip::via::MAGIC_COOKIE,
        rand::random::<u64>()
    )
}

/// Every transaction of one endpoint, and the outputs they have produced.
pub struct TransactionLayer {
    config: TimerConfig,
    transactions: HashMap<TxKey, Transaction>,
    server_index: HashMap<ServerMatch, TxKey>,
    /// INVITE server transactions by Call-ID, From tag and CSeq number: finds the
    /// transaction of an ACK for a non-2xx that carries a new branch, as SIPp's
    /// scenarios send it (see [`TransactionLayer::match_server`]).
    invites_by_dialog: HashMap<(SipStr, Option<String>, u32), TxKey>,
    client_index: HashMap<ClientMatch, TxKey>,
    deadlines: BinaryHeap<Reverse<Deadline>>,
    out: VecDeque<Output>,
    next_key: u64,
}

impl TransactionLayer {
    pub fn new(config: TimerConfig) -> TransactionLayer {
        TransactionLayer {
            config,
            transactions: HashMap::new(),
            server_index: HashMap::new(),
            invites_by_dialog: HashMap::new(),
            client_index: HashMap::new(),
            deadlines: BinaryHeap::new(),
            out: VecDeque::new(),
            next_key: 0,
        }
    }

    pub fn config(&self) -> &TimerConfig {
        &self.config
    }

    /// A request from the network, from `source` (with the transport's received/rport
    /// already applied to its Via, if the shell does that).
    pub fn handle_request(&mut self, now: Instant, source: Peer, request: Request) -> Disposition {
        let Ok(via) = request.top_via() else {
            return Disposition::Dropped;
        };
        let method = match request.method {
            Method::Ack => Method::Invite,
            ref m => m.clone(),
        };
        let Ok(index) = ServerMatch::new(&request, &via, method) else {
            return Disposition::Dropped;
        };
        if let Some(key) = self.match_server(&request, &index) {
            return self
                .with_tx(now, key, |tx, ctx| tx.on_request(ctx, source, request))
                .unwrap_or(Disposition::Dropped);
        }
        if request.method == Method::Ack {
            self.event(Event::Ack {
                invite: None,
                source,
                request,
            });
            return Disposition::Delivered(None);
        }
        let key = self.next_key();
        let tx = Transaction::new_server(source.reply_target(&via), request.clone(), index.clone());
        self.server_index.insert(index, key);
        if request.method == Method::Invite
            && let Some(id) = dialog_key(&request)
        {
            self.invites_by_dialog.insert(id, key);
        }
        self.transactions.insert(key, tx);
        if request.method == Method::Invite {
            self.with_tx(now, key, |tx, ctx| {
                tx.arm_trying(ctx);
                ((), Flow::Continue)
            });
        }
        self.event(Event::Request {
            key,
            source,
            request,
        });
        Disposition::New(key)
    }

    /// A response from the network.
    pub fn handle_response(&mut self, now: Instant, response: Response) -> Disposition {
        let (Ok(via), Ok(cseq)) = (response.top_via(), response.cseq()) else {
            return Disposition::Dropped;
        };
        let Some(key) =
            ClientMatch::new(&via, cseq.method).and_then(|m| self.client_index.get(&m).copied())
        else {
            return Disposition::Dropped;
        };
        self.with_tx(now, key, |tx, ctx| tx.on_response(ctx, response))
            .unwrap_or(Disposition::Dropped)
    }

    /// Starts a client transaction for `request` and sends it to `dest`. The request
    /// must carry a top Via with an RFC 3261 branch (see [`new_branch`]) and a CSeq.
    pub fn send_request(
        &mut self,
        now: Instant,
        dest: Peer,
        request: Request,
    ) -> Result<TxKey, SendError> {
        if request.method == Method::Ack {
            return Err(SendError::AckIsNotATransaction);
        }
        let via = request.top_via().map_err(|e| SendError::Malformed(e.0))?;
        if !via.has_rfc3261_branch() {
            return Err(SendError::Malformed("top Via needs an RFC 3261 branch"));
        }
        if request
            .cseq()
            .map_err(|e| SendError::Malformed(e.0))?
            .method
            != request.method
        {
            return Err(SendError::Malformed(
                "CSeq method differs from the request's",
            ));
        }
        let index = ClientMatch::new(&via, request.method.clone())
            .ok_or(SendError::Malformed("no branch"))?;
        if self.client_index.contains_key(&index) {
            return Err(SendError::DuplicateBranch);
        }
        let key = self.next_key();
        let mut ctx = Ctx {
            now,
            config: &self.config,
            key,
            out: &mut self.out,
            deadlines: &mut self.deadlines,
        };
        let tx = Transaction::new_client(&mut ctx, dest, request, Index::Client(index.clone()));
        self.client_index.insert(index, key);
        self.transactions.insert(key, tx);
        Ok(key)
    }

    /// CANCELs the INVITE client transaction `invite` (RFC 3261 §9.1): a new client
    /// transaction to the same destination, and Timer B restarted on the INVITE so it
    /// ends even if no final response ever comes. Allowed only in "Proceeding": before
    /// a provisional response, call again when the first one arrives.
    pub fn send_cancel(&mut self, now: Instant, invite: TxKey) -> Result<TxKey, SendError> {
        let tx = self
            .transactions
            .get(&invite)
            .filter(|tx| tx.is_client() && tx.invite)
            .ok_or(SendError::NoSuchTransaction)?;
        if tx.state != State::Proceeding {
            return Err(SendError::WrongState(tx.state));
        }
        let (dest, cancel) = (tx.peer, cancel_for(&tx.request));
        let key = self.send_request(now, dest, cancel)?;
        // §9.1: without a final response 64*T1 after the CANCEL, the INVITE is dead.
        self.with_tx(now, invite, |tx, ctx| {
            tx.set_lifetime(ctx, Timer::B);
            ((), Flow::Continue)
        });
        Ok(key)
    }

    /// Sends the TU's response on server transaction `key`: any number of
    /// provisional responses, then one final response; after a 2xx to an INVITE,
    /// the TU's retransmissions of that 2xx.
    pub fn send_response(
        &mut self,
        now: Instant,
        key: TxKey,
        response: Response,
    ) -> Result<(), SendError> {
        self.with_tx(now, key, |tx, ctx| {
            if tx.is_client() {
                return (Err(SendError::NoSuchTransaction), Flow::Continue);
            }
            match tx.send_response(ctx, response) {
                Ok(flow) => (Ok(()), flow),
                Err(e) => (Err(e), Flow::Continue),
            }
        })
        .unwrap_or(Err(SendError::NoSuchTransaction))
    }

    /// Sends 100 Trying on server transaction `key` now (RFC 3261 §8.2.6: the request's
    /// Via, From, To, Call-ID, CSeq and Timestamp; no To tag). An INVITE transaction
    /// sends one by itself after 200 ms without a response.
    pub fn send_trying(&mut self, now: Instant, key: TxKey) -> Result<(), SendError> {
        let request = self.request(key).ok_or(SendError::NoSuchTransaction)?;
        let trying = Response::to_request(request, 100, "Trying");
        self.send_response(now, key, trying)
    }

    /// Queues bytes outside any transaction: the ACK for a 2xx, a stateless reply.
    pub fn send_stateless(&mut self, dest: Peer, bytes: Bytes) {
        self.out.push_back(Output::Transmit(Transmit {
            dest,
            bytes,
            key: None,
        }));
    }

    /// The transport failed to send a message of transaction `key` (RFC 3261 §17.1.4,
    /// §17.2.4): the TU is told and the transaction ends.
    pub fn handle_transport_error(&mut self, now: Instant, key: TxKey) {
        self.with_tx(now, key, |_, ctx| {
            ctx.event(Event::TransportError { key });
            ((), Flow::Terminate)
        });
    }

    /// The INVITE server transaction a received CANCEL refers to (RFC 3261 §9.2).
    pub fn cancel_target(&self, cancel: &Request) -> Option<TxKey> {
        let via = cancel.top_via().ok()?;
        let index = ServerMatch::new(cancel, &via, Method::Invite).ok()?;
        self.server_index.get(&index).copied()
    }

    /// When [`TransactionLayer::handle_timeout`] next has work; `None` when idle.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        while let Some(Reverse(d)) = self.deadlines.peek() {
            if self.transactions.get(&d.key).is_some_and(|tx| tx.is_due(d)) {
                return Some(d.at);
            }
            self.deadlines.pop();
        }
        None
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&Reverse(d)) = self.deadlines.peek() {
            if d.at > now {
                break;
            }
            self.deadlines.pop();
            if self
                .transactions
                .get(&d.key)
                .is_some_and(|tx| tx.is_due(&d))
            {
                self.with_tx(now, d.key, |tx, ctx| ((), tx.on_timer(ctx, d.slot)));
            }
        }
    }

    /// The next thing to send or tell the TU, in the order it happened.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    pub fn state(&self, key: TxKey) -> Option<State> {
        self.transactions.get(&key).map(|tx| tx.state)
    }

    /// The request that started transaction `key`.
    pub fn request(&self, key: TxKey) -> Option<&Request> {
        self.transactions.get(&key).map(|tx| &tx.request)
    }

    /// How many transactions are alive.
    pub fn len(&self) -> usize {
        self.transactions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.transactions.is_empty()
    }

    fn next_key(&mut self) -> TxKey {
        self.next_key += 1;
        TxKey(self.next_key)
    }

    fn event(&mut self, event: Event) {
        self.out.push_back(Output::Event(event));
    }

    /// The server transaction `request` belongs to (RFC 3261 §17.2.3). An RFC 2543
    /// ACK for a final response to an initial INVITE carries the To tag our response
    /// added, so it is looked up without one and must carry that response's tag.
    fn match_server(&self, request: &Request, index: &ServerMatch) -> Option<TxKey> {
        if let Some(&key) = self.server_index.get(index) {
            return Some(key);
        }
        let ServerMatch::Legacy(legacy) = index else {
            return self.match_stray_ack(request);
        };
        if request.method != Method::Ack {
            return None;
        }
        let ack_tag = legacy.to_tag.as_deref()?;
        let mut initial = legacy.clone();
        initial.to_tag = None;
        let key = *self.server_index.get(&ServerMatch::Legacy(initial))?;
        let tx = self.transactions.get(&key)?;
        (tx.response_to_tag.as_deref() == Some(ack_tag)).then_some(key)
    }

    /// An ACK whose branch matched nothing may still acknowledge a non-2xx final
    /// response: RFC 3261 §17.1.1.3 says it reuses the INVITE's branch, but SIPp's
    /// scenarios send it with a new one. It is taken as that INVITE's ACK only while
    /// the transaction is Completed (a non-2xx was sent) and the ACK carries the To tag
    /// of that response, so the ACK of a 2xx (a new transaction of its own) is never
    /// swallowed.
    fn match_stray_ack(&self, request: &Request) -> Option<TxKey> {
        if request.method != Method::Ack {
            return None;
        }
        let key = *self.invites_by_dialog.get(&dialog_key(request)?)?;
        let tx = self.transactions.get(&key)?;
        let to_tag = request.to().ok()?.tag().map(str::to_owned);
        (tx.state == State::Completed
            && tx.response_to_tag.is_some()
            && tx.response_to_tag == to_tag)
            .then_some(key)
    }

    /// Runs `f` on transaction `key`, then removes the transaction if it ended.
    fn with_tx<R>(
        &mut self,
        now: Instant,
        key: TxKey,
        f: impl FnOnce(&mut Transaction, &mut Ctx) -> (R, Flow),
    ) -> Option<R> {
        let tx = self.transactions.get_mut(&key)?;
        let mut ctx = Ctx {
            now,
            config: &self.config,
            key,
            out: &mut self.out,
            deadlines: &mut self.deadlines,
        };
        let (result, flow) = f(tx, &mut ctx);
        if flow == Flow::Terminate {
            self.remove(key);
        }
        Some(result)
    }

    fn remove(&mut self, key: TxKey) {
        let Some(tx) = self.transactions.remove(&key) else {
            return;
        };
        if tx.invite
            && let Some(id) = dialog_key(&tx.request)
            && self.invites_by_dialog.get(&id) == Some(&key)
        {
            self.invites_by_dialog.remove(&id);
        }
        match tx.index {
            Index::Client(m) => self.client_index.remove(&m),
            Index::Server(m) => self.server_index.remove(&m),
        };
        self.event(Event::Terminated { key });
    }
}

/// Call-ID, From tag and CSeq number: what an INVITE and its ACK share.
fn dialog_key(req: &Request) -> Option<(SipStr, Option<String>, u32)> {
    Some((
        req.call_id()?.clone(),
        req.from().ok()?.tag().map(str::to_owned),
        req.cseq().ok()?.seq,
    ))
}
