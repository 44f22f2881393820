//! What one call holds: the caller's leg (A), the branches ringing for it, the bridged
//! callee's leg (B), and the media bridge between them.

use super::control::Op;
use super::timers::MediaActivity;
use crate::dialplan::call::{DialRequest, DialResult, DialStatus, DialTarget};
use crate::media::{Relay, RtpPortPair, Side};
use crate::sdp::{OriginState, Sdp};
use crate::sip::dialog::{Dialog, Forks, SessionTimer};
use crate::sip::transaction::{Peer, TxKey};
use crate::sip::{Request, Response, SipStr};
use crate::store::{Disposition, HangupBy};
use std::net::IpAddr;
use std::time::{Instant, SystemTime};
use tokio::sync::oneshot;

/// The caller's leg: switchboard is its UAS.
pub struct ALeg {
    pub dialog: Dialog,
    pub invite: Request,
    pub invite_tx: TxKey,
    pub peer: Peer,
    /// The caller's SDP offer.
    pub offer: Sdp,
    /// Our address as this leg's phone reaches it (SDP, Contact).
    pub our_ip: IpAddr,
    pub origin: OriginState,
    /// A final response has been sent to the INVITE.
    pub final_sent: bool,
    /// Our 2xx, resent until the ACK arrives (RFC 6026 leaves that to the TU).
    pub unacked_ok: Option<Response>,
    /// The session timer agreed with the caller (RFC 4028), if any.
    pub timer: Option<SessionTimer>,
}

/// One INVITE we sent for a dial, with the early dialogs its responses created.
pub struct Branch {
    pub tx: TxKey,
    pub invite: Request,
    pub forks: Forks,
    pub peer: Peer,
    pub target: DialTarget,
    /// The final status once one has arrived.
    pub done: Option<u16>,
    /// A provisional response has arrived, so a CANCEL may be sent (RFC 3261 §9.1).
    pub provisional: bool,
    /// The branch lost or the dial ended before any provisional: CANCEL on the first.
    pub cancel_pending: bool,
}

/// The answered callee's leg: switchboard is its UAC.
pub struct BLeg {
    pub dialog: Dialog,
    pub peer: Peer,
    /// The ACK of its 2xx, resent for each retransmission of that 2xx.
    pub ack: Request,
    pub our_ip: IpAddr,
    pub origin: OriginState,
    /// The session timer the callee's 2xx agreed to, if any.
    pub timer: Option<SessionTimer>,
}

/// A dial in progress: what the script asked, and where the answer goes.
pub struct DialState {
    pub request: DialRequest,
    pub reply: Option<oneshot::Sender<DialResult>>,
    /// For sequential dials, the targets not tried yet.
    pub remaining: Vec<DialTarget>,
    /// The most telling outcome so far, for the result when nobody answers.
    pub best: Option<(DialStatus, Option<u16>)>,
    /// Bumped per attempt so a stale deadline timer is ignored.
    pub generation: u64,
}

/// Media for a call: one RTP/RTCP port pair per leg until the bridge starts.
pub struct Media {
    pub a_ports: Option<RtpPortPair>,
    pub b_ports: Option<RtpPortPair>,
    pub a_port: u16,
    pub b_port: u16,
    pub relay: Option<Relay>,
    /// Whether media should be flowing, for the media timeout.
    pub activity: MediaActivity,
}

/// An in-dialog request relayed from one leg to the other, waiting for its answer.
pub struct Relayed {
    /// Our client transaction on the other leg.
    pub client_tx: TxKey,
    /// The leg the request came from, its server transaction and the request.
    pub from: Side,
    pub server_tx: TxKey,
    pub request: Request,
}

pub struct Call {
    pub id: u64,
    pub span: tracing::Span,
    pub a: ALeg,
    pub branches: Vec<Branch>,
    pub dial: Option<DialState>,
    pub b: Option<BLeg>,
    pub media: Media,
    pub relayed: Vec<Relayed>,
    pub caller: String,
    pub callee: String,
    pub started: SystemTime,
    pub answered_at: Option<(SystemTime, Instant)>,
    /// Set once the call is over; it lingers only while transactions finish.
    pub ended: Option<(Disposition, HangupBy, String)>,
    /// Script operations that wait for the call to reach a state (a reply to a dial
    /// that bridged, until the bridge ends).
    pub bridged_reply: Option<oneshot::Sender<DialResult>>,
    pub answered_by: Option<DialTarget>,
    /// The dialplan task has finished.
    pub route_done: bool,
    /// Requests of our own in the dialogs (session refreshes, BYEs), by transaction.
    pub own_requests: Vec<(TxKey, Side)>,
    /// Every dialog id indexed for this call (the A leg's and each branch's), so
    /// forgetting the call removes exactly those.
    pub dialog_keys: Vec<(SipStr, SipStr)>,
    /// Bumped whenever a leg's session timer is re-armed, so stale timers are ignored.
    pub session_generation: [u64; 2],
}

impl Call {
    /// The leg on the given side, as a dialog and the peer to send to.
    pub fn leg_mut(&mut self, side: Side) -> Option<(&mut Dialog, Peer)> {
        match side {
            Side::A => Some((&mut self.a.dialog, self.a.peer)),
            Side::B => self.b.as_mut().map(|b| (&mut b.dialog, b.peer)),
        }
    }

    /// The session timer agreed on the given leg, if any.
    pub fn session_timer(&self, side: Side) -> Option<SessionTimer> {
        match side {
            Side::A => self.a.timer,
            Side::B => self.b.as_ref().and_then(|b| b.timer),
        }
    }

    pub fn is_answered(&self) -> bool {
        self.answered_at.is_some()
    }
}

/// Drops an operation's reply channel with the "call ended" answer.
pub fn refuse(op: Op) {
    use crate::dialplan::call::CallError;
    match op {
        Op::Dial(_, tx) => {
            let _ = tx.send(DialResult {
                status: DialStatus::Cancelled,
                sip_code: None,
                answered_by: None,
                duration: std::time::Duration::ZERO,
            });
        }
        Op::Answer(tx) | Op::Reject(_, _, tx) | Op::Redirect(_, tx) | Op::Hangup(tx) => {
            let _ = tx.send(Err(CallError::Ended));
        }
        Op::RouteDone(_) => {}
    }
}
