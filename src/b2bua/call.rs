//! What one call holds: the caller's leg (A), the branches ringing for it, the bridged
//! callee's leg (B), and the media bridge between them.

use super::control::Op;
use super::timers::MediaActivity;
use crate::dialplan::call::{DialRequest, DialResult, DialStatus, DialTarget};
use crate::media::music::Music;
use crate::media::plan::{DirectionPlan, LegFormats};
use crate::media::{Relay, RtpPortPair, Side};
use crate::sdp::{Codec, OriginState, Sdp};
use crate::sip::dialog::{Dialog, Forks, SessionTimer};
use crate::sip::transaction::{Peer, TxKey};
use crate::sip::{Request, Response, SipStr};
use crate::store::{Disposition, HangupBy};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tokio::sync::oneshot;

/// The caller's leg: switchboard is its UAS.
pub struct ALeg {
    pub dialog: Dialog,
    pub invite: Request,
    pub invite_tx: TxKey,
    pub peer: Peer,
    /// The caller's latest description: the offer of its INVITE or re-INVITE, or the
    /// answer in its ACK after a late offer (RFC 3261 §13.2.1). `None` while an
    /// offerless INVITE has had no answer from it yet.
    pub sdp: Option<Sdp>,
    /// Our address as this leg's phone reaches it (SDP, Contact).
    pub our_ip: IpAddr,
    pub origin: OriginState,
    /// A final response has been sent to the INVITE.
    pub final_sent: bool,
    /// Our 2xx, resent until the ACK arrives (RFC 6026 leaves that to the TU).
    pub unacked_ok: Option<Response>,
    /// The session timer agreed with the caller (RFC 4028), if any.
    pub timer: Option<SessionTimer>,
    /// Whether session refreshes may go by UPDATE (see `timers::takes_update`).
    pub takes_update: bool,
    /// The codecs this leg may use (the caller's extension's own list, or the default).
    pub codecs: Vec<Codec>,
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
    /// The o= state of the offer in the INVITE, kept by the leg if this branch wins
    /// (its session id must not change in the dialog, RFC 3264 §8).
    pub origin: OriginState,
    /// The codecs offered to this target.
    pub codecs: Vec<Codec>,
}

/// The answered callee's leg: switchboard is its UAC.
pub struct BLeg {
    pub dialog: Dialog,
    pub peer: Peer,
    /// The ACK of its 2xx, resent for each retransmission of that 2xx. `None` while
    /// the 2xx carried an offer whose answer the caller has not sent yet: no ACK may
    /// go without it (RFC 3261 §13.2.2.4), so retransmissions are absorbed meanwhile.
    pub ack: Option<Request>,
    pub our_ip: IpAddr,
    pub origin: OriginState,
    /// The session timer the callee's 2xx agreed to, if any.
    pub timer: Option<SessionTimer>,
    /// Whether session refreshes may go by UPDATE (see `timers::takes_update`).
    pub takes_update: bool,
    pub codecs: Vec<Codec>,
}

/// An offer switchboard sent in a 2xx, whose answer is due in the ACK: the INVITE or
/// re-INVITE it answers came without SDP (a late offer, RFC 3264 §4, RFC 3261
/// §13.2.1). The offer is the other leg's from its own 2xx, or switchboard's own.
pub struct LateOffer {
    /// The leg the offer went to; its ACK for CSeq `cseq` carries the answer.
    pub answerer: Side,
    pub cseq: u32,
    /// The other leg's 2xx that made the offer, still unacknowledged: its ACK must
    /// carry the answer. `None` when the offer was switchboard's own.
    pub held: Option<HeldAck>,
    /// Our 2xx to a re-INVITE and its server transaction, resent until the ACK on
    /// unreliable transports (the initial INVITE's is `ALeg::unacked_ok`).
    pub resend: Option<(TxKey, Response)>,
    /// When to give up waiting for the ACK (64*T1, as Timer H would); also tells this
    /// late offer's timers from an earlier one's.
    pub give_up: Instant,
}

/// The 2xx of our INVITE on the other leg whose offer was passed on: what its ACK needs.
pub struct HeldAck {
    /// CSeq of our INVITE the 2xx answered.
    pub cseq: u32,
    /// The offer as that leg sent it, answered by switchboard itself if the call ends
    /// before the real answer came.
    pub offer: Sdp,
    /// Our re-INVITE the 2xx answered; `None` for the initial INVITE, whose ACK is kept
    /// in [`BLeg::ack`].
    pub reinvite: Option<TxKey>,
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
    /// The callee's latest description (its offer or answer).
    pub b_sdp: Option<Sdp>,
    /// The path each direction (from A, from B) was last set to.
    pub plans: [Option<DirectionPlan>; 2],
    /// The formats each leg is listened to with, and whether in-band keys are.
    pub heard: [Option<(LegFormats, bool)>; 2],
    /// Hold music is playing to the leg (its peer holds it).
    pub music_on: [bool; 2],
}

/// An in-dialog request relayed from one leg to the other, waiting for its answer.
pub struct Relayed {
    /// Our client transaction on the other leg, and its CSeq number.
    pub client_tx: TxKey,
    pub cseq: u32,
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
    /// A late offer waiting for its answer in an ACK.
    pub late_offer: Option<LateOffer>,
    /// The caller's key presses, for the script.
    pub digits: tokio::sync::mpsc::Sender<char>,
    /// Keys pressed on either phone, for the call record.
    pub pressed: String,
    /// What a held party hears (`[media] moh_dir`'s default class unless the script
    /// chose another, or none).
    pub hold_music: Option<Arc<Music>>,
}

impl Call {
    /// The leg on the given side, as a dialog and the peer to send to.
    pub fn leg_mut(&mut self, side: Side) -> Option<(&mut Dialog, Peer)> {
        match side {
            Side::A => Some((&mut self.a.dialog, self.a.peer)),
            Side::B => self.b.as_mut().map(|b| (&mut b.dialog, b.peer)),
        }
    }

    /// What writing a description for the leg on `side` takes: its dialog and peer,
    /// our address and RTP port on it, and its o= state.
    pub fn leg_sdp(&mut self, side: Side) -> Option<LegSdp<'_>> {
        match side {
            Side::A => Some(LegSdp {
                dialog: &mut self.a.dialog,
                peer: self.a.peer,
                our_ip: self.a.our_ip,
                port: self.media.a_port,
                origin: &mut self.a.origin,
                codecs: &self.a.codecs,
            }),
            Side::B => self.b.as_mut().map(|b| LegSdp {
                dialog: &mut b.dialog,
                peer: b.peer,
                our_ip: b.our_ip,
                port: self.media.b_port,
                origin: &mut b.origin,
                codecs: &b.codecs,
            }),
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

/// One leg as [`Call::leg_sdp`] lends it.
pub struct LegSdp<'a> {
    pub dialog: &'a mut Dialog,
    pub peer: Peer,
    pub our_ip: IpAddr,
    pub port: u16,
    pub origin: &'a mut OriginState,
    pub codecs: &'a [Codec],
}

impl LegSdp<'_> {
    /// `offer`, received on the other leg, as the offer to make on this one: its
    /// codecs first, then the rest of this leg's. `None` without an audio stream.
    pub fn offer_across(&mut self, offer: &Sdp) -> Option<Sdp> {
        let offer = crate::sdp::offer_across(offer, self.codecs)?;
        Some(crate::sdp::rewrite_for_leg(
            &offer,
            self.our_ip,
            &[self.port],
            self.origin,
        ))
    }

    /// The answer to this leg's `offer`, once the other leg answered ours with
    /// `other_answer`: the same codec where this leg has it (relayed), else its own.
    pub fn answer_across(&mut self, offer: &Sdp, other_answer: &Sdp) -> Sdp {
        crate::sdp::answer_across(
            offer,
            other_answer,
            self.codecs,
            self.our_ip,
            &[self.port],
            self.origin,
        )
    }

    /// Switchboard's own answer to this leg's `offer`.
    pub fn answer(&mut self, offer: &Sdp) -> Sdp {
        crate::sdp::answer(offer, self.codecs, self.our_ip, &[self.port], self.origin)
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
        Op::Answer(tx)
        | Op::Reject(_, _, tx)
        | Op::Redirect(_, tx)
        | Op::Hangup(tx)
        | Op::RecordCall(_, tx)
        | Op::Music(_, tx) => {
            let _ = tx.send(Err(CallError::Ended));
        }
        // Dropping the reply channel tells the script the call is over.
        Op::Play(..)
        | Op::Record(..)
        | Op::StopPlaying
        | Op::StopRecording
        | Op::Digit(..)
        | Op::RouteDone(_) => {}
    }
}
