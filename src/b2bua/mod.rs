//! The B2BUA: every call is two dialogs, the caller's (A, switchboard as UAS) and the
//! callee's (B, switchboard as UAC), with a media bridge between them.
//!
//! One [`B2bua`] lives in each SIP core shard and owns the calls whose Call-IDs route
//! there (B-leg Call-IDs carry the shard's `sb<n>-` prefix so they come back to it). It
//! is driven by the transaction layer's events and by the dialplan's operations
//! ([`control::CallCommand`]), and acts through the transaction layer it is handed; the
//! only IO of its own is starting and stopping media relays. Which call a message belongs
//! to is found through three indexes: the A leg's INVITE server transaction (CANCEL,
//! ACK), client transactions we sent (responses), and dialog ids (in-dialog requests).

mod call;
mod cdr;
pub mod control;
mod dial;
mod in_dialog;
mod keys;
mod late_offer;
mod timers;

pub use cdr::CdrSink;

use crate::dialplan::call::CallError;
use crate::dialplan::call::{CallInfo, DialResult, DialStatus, Party};
use crate::media::codec::CodecKind;
use crate::media::listener::Listener;
use crate::media::music::{Music, MusicPlayer};
use crate::media::plan::{DirectionPlan, LegFormats};
use crate::media::prompts::Prompts;
use crate::media::recording::Recording;
use crate::media::speaker::Speaker;
use crate::media::{MediaEvent, MediaEvents};
use crate::media::{PortAllocator, Relay, RelayConfig, Side};
use crate::registrar::Registrar;
use crate::sdp::{Codec, Direction, OriginState, Sdp};
use crate::sip::dialog::{Body, Dialog, SentBy, TimerPolicy, new_tag};
use crate::sip::transaction::{Peer, TransactionLayer, TransportKind, TxKey};
use crate::sip::{Known, Method, Request, Response, SipStr, SipUri, Uri, reason_phrase};
use crate::store::{CallMedia, Cdr, Disposition, HangupBy};
use call::{ALeg, Call, Media, refuse};
use control::{CallCommand, CallHandle, Op};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};

/// Starts the dialplan for a new call (the server wires the Lua engine here).
pub type RouteStarter = Arc<dyn Fn(CallHandle) + Send + Sync>;

/// What every shard's B2BUA shares.
pub struct B2buaContext {
    pub registrar: Arc<Registrar>,
    pub ports: Arc<PortAllocator>,
    pub cdrs: CdrSink,
    pub route: RouteStarter,
    /// `[media] public_address`: written into SDP instead of the local address.
    pub public_address: Option<IpAddr>,
    /// Our listeners, for Via and Contact addresses.
    pub hub: Arc<crate::transport::Hub>,
    pub user_agent: String,
    pub t1: Duration,
    pub t2: Duration,
    /// `[media] timeout_secs`: end a bridged call when a leg that should be sending
    /// sent no RTP or RTCP for this long; `None` never.
    pub media_timeout: Option<Duration>,
    /// `[sip] session_expires_secs` and `min_se_secs`, for every leg.
    pub timer_policy: TimerPolicy,
    /// `[media] codecs` and the extensions' own lists.
    pub codecs: CodecPolicy,
    /// The prompts scripts play.
    pub prompts: Arc<Prompts>,
    /// `[media] moh_dir`'s default class, played to a party on hold; `None` when it
    /// could not be read (the party then hears silence, as before).
    pub music: Option<Arc<Music>>,
}

/// Which codecs each leg is offered and may answer with: `[media] codecs`, or an
/// extension's own `codecs` on the legs to and from that extension.
pub struct CodecPolicy {
    default: Vec<Codec>,
    extensions: HashMap<String, Vec<Codec>>,
}

impl CodecPolicy {
    pub fn new(
        default: &[CodecKind],
        extensions: &BTreeMap<String, crate::config::Extension>,
    ) -> CodecPolicy {
        CodecPolicy {
            default: sdp_codecs(default),
            extensions: extensions
                .iter()
                .filter_map(|(name, ext)| Some((name.clone(), sdp_codecs(ext.codecs.as_ref()?))))
                .collect(),
        }
    }

    /// The list for a leg to or from `extension` (any leg when `None`).
    pub fn for_leg(&self, extension: Option<&str>) -> &[Codec] {
        extension
            .and_then(|e| self.extensions.get(e))
            .unwrap_or(&self.default)
    }
}

/// The SDP codecs for `kinds` in that order, then telephone-event (RFC 4733) at
/// 8 kHz, and at 48 kHz too when Opus is in the list (events share their audio
/// codec's clock).
pub fn sdp_codecs(kinds: &[CodecKind]) -> Vec<Codec> {
    let mut codecs: Vec<Codec> = kinds
        .iter()
        .map(|kind| match kind {
            CodecKind::Opus => Codec::new("opus", 48000, 2).with_fmtp("useinbandfec=1"),
            other => Codec::new(other.name(), other.rtp_clock(), 1),
        })
        .collect();
    codecs.push(Codec::new("telephone-event", 8000, 1).with_fmtp("0-16"));
    if kinds.contains(&CodecKind::Opus) {
        codecs.push(Codec::new("telephone-event", 48000, 1).with_fmtp("0-16"));
    }
    codecs
}

/// Timers the B2BUA keeps per call (the transaction layer keeps its own).
#[derive(Clone, Copy, Debug)]
enum CallTimer {
    /// The current dial attempt's time to answer is up.
    DialDeadline { generation: u64 },
    /// Resend our 2xx to the caller until the ACK comes (RFC 3261 §13.3.1.4).
    Resend2xx {
        interval: Duration,
        give_up: Instant,
    },
    /// Look at the relay's counters for a leg that stopped sending.
    MediaCheck,
    /// Send a session refresh on this leg (RFC 4028: we are its refresher).
    SessionRefresh { side: Side, generation: u64 },
    /// This leg's session expired without a refresh from the peer.
    SessionExpired { side: Side, generation: u64 },
    /// Resend our 2xx carrying a late offer, or give up on its ACK (`give_up` names
    /// the late offer, see [`call::LateOffer`]).
    LateAnswer {
        give_up: Instant,
        interval: Duration,
    },
}

/// The ACK of a 2xx to one of our re-INVITEs, and where it goes.
struct KeptAck {
    peer: Peer,
    /// `None` while the ACK waits for the answer to a late offer (see `late_offer`).
    ack: Option<bytes::Bytes>,
}

/// A live call as `switchboard calls` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct CallSummary {
    pub call_id: String,
    pub caller: String,
    pub callee: String,
    pub state: &'static str,
    pub started_unix: u64,
    pub answered_unix: Option<u64>,
    pub a_leg: LegSummary,
    pub b_leg: Option<LegSummary>,
    pub ringing: Vec<String>,
    /// Keys pressed on either phone so far.
    pub keys: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct LegSummary {
    pub call_id: String,
    pub signaling: String,
    pub dialog: &'static str,
    pub our_rtp_port: u16,
    pub remote_media: Option<SocketAddr>,
    pub packets_in: Option<u64>,
    /// The codec switchboard sends this leg, once negotiated.
    pub codec: Option<&'static str>,
    /// How audio from this leg's phone reaches the other: `relay` or `transcode`.
    pub path: Option<&'static str>,
    pub lost_packets: Option<u64>,
    pub jitter_ms: Option<u64>,
}

pub struct B2bua {
    shard: usize,
    ctx: Arc<B2buaContext>,
    calls: HashMap<u64, Call>,
    by_server_tx: HashMap<TxKey, u64>,
    by_client_tx: HashMap<TxKey, u64>,
    by_dialog: HashMap<(SipStr, SipStr), (u64, Side)>,
    /// The ACK for the 2xx of each re-INVITE we sent in a call's dialogs (relayed or a
    /// session refresh), sent again for every retransmission of that 2xx (RFC 3261
    /// §13.2.2.4) until the transaction ends, even after the call itself is gone.
    reinvite_acks: HashMap<TxKey, KeptAck>,
    timers: BTreeMap<(Instant, u64), (u64, CallTimer)>,
    timer_seq: u64,
    next_call: u64,
    commands: mpsc::UnboundedSender<CallCommand>,
}

pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl B2bua {
    pub fn new(
        shard: usize,
        ctx: Arc<B2buaContext>,
        commands: mpsc::UnboundedSender<CallCommand>,
    ) -> B2bua {
        B2bua {
            shard,
            ctx,
            calls: HashMap::new(),
            by_server_tx: HashMap::new(),
            by_client_tx: HashMap::new(),
            by_dialog: HashMap::new(),
            reinvite_acks: HashMap::new(),
            timers: BTreeMap::new(),
            timer_seq: 0,
            next_call: 1,
            commands,
        }
    }

    /// Live calls (for leak checks and the admin API).
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// The address written into SDP for a leg whose phone is at `peer`: the configured
    /// public address, else the one the phone reaches our SIP listener on.
    fn media_ip_for(&self, peer: &Peer) -> IpAddr {
        self.ctx
            .public_address
            .unwrap_or_else(|| self.ctx.hub.local_addr_for(peer).ip())
    }

    fn sent_by(&self, peer: &Peer) -> SentBy {
        self.ctx.hub.sent_by(peer)
    }

    fn contact(&self, peer: &Peer) -> Uri {
        let sent_by = self.sent_by(peer);
        let mut uri = SipUri::new(Some("switchboard"), sent_by.host, sent_by.port);
        if peer.transport == TransportKind::Tcp {
            uri.params
                .set("transport", Some(SipStr::from_static("tcp")));
        }
        Uri::Sip(uri)
    }

    fn schedule(&mut self, at: Instant, call: u64, timer: CallTimer) {
        self.timer_seq += 1;
        self.timers.insert((at, self.timer_seq), (call, timer));
    }

    /// When the next call timer is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.keys().next().map(|(at, _)| *at)
    }

    /// A new INVITE outside any dialog, already authenticated as `auth_user`.
    pub fn on_invite(
        &mut self,
        txl: &mut TransactionLayer,
        key: TxKey,
        source: Peer,
        req: Request,
        auth_user: Option<String>,
    ) {
        let now = Instant::now();
        let reject = |txl: &mut TransactionLayer, status: u16, reason: &str| {
            let mut resp = Response::to_request(&req, status, reason);
            resp.set_to_tag(&new_tag());
            let _ = txl.send_response(now, key, resp);
        };
        // Without a body the offer comes later, from the callee (see `late_offer`).
        let offer = match Sdp::parse(&req.body) {
            _ if req.body.is_empty() => None,
            Ok(o) => Some(o),
            Err(_) => return reject(txl, 400, "Bad Request (malformed SDP)"),
        };
        if let Some(offer) = &offer {
            let Some(audio) = offer.media.iter().find(|m| m.is_rtp() && !m.is_rejected()) else {
                return reject(txl, 488, "Not Acceptable Here (no RTP stream)");
            };
            let codecs = self.ctx.codecs.for_leg(auth_user.as_deref());
            if crate::sdp::negotiate(audio, codecs).is_empty() {
                return reject(txl, 488, "Not Acceptable Here (no common codec)");
            }
        }
        let a_ports = match self.ctx.ports.allocate() {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "no RTP ports left");
                return reject(txl, 503, "Service Unavailable (no media ports)");
            }
        };
        let our_ip = self.media_ip_for(&source);
        let local_tag = crate::sip::checks::stateless_tag(&req.headers);
        let contact = self.contact(&source);
        let dialog = match Dialog::from_invite_uas(&req, &local_tag, contact, self.sent_by(&source))
        {
            Ok(d) => d,
            Err(e) => return reject(txl, 400, &format!("Bad Request ({e})")),
        };
        let timer = match self.ctx.timer_policy.answer(&req) {
            Ok(t) => t,
            Err(rejection) => {
                let _ = txl.send_response(
                    now,
                    key,
                    crate::sip::checks::rejection_response(&req, &rejection),
                );
                return;
            }
        };
        let _ = txl.send_trying(now, key);
        let id = self.next_call;
        self.next_call += 1;
        let call_id = req.call_id().map(|c| c.to_string()).unwrap_or_default();
        let from = req.from().ok();
        let to = req.to().ok();
        let party = |a: Option<&crate::sip::NameAddr>| Party {
            user: a.and_then(|a| a.uri.user()).unwrap_or("").to_string(),
            display: a.and_then(|a| a.display_name()),
            uri: a.map(|a| a.uri.to_string()).unwrap_or_default(),
            host: a
                .and_then(|a| a.uri.as_sip())
                .map(|u| u.host.to_string())
                .unwrap_or_default(),
        };
        let info = CallInfo {
            id: call_id.clone(),
            from: party(from.as_ref()),
            to: party(to.as_ref()),
            request_uri: req.uri.to_string(),
            headers: req
                .headers
                .iter()
                .map(|h| (h.name.as_str().to_string(), h.value.to_string()))
                .collect(),
            source: source.addr,
            transport: match source.transport {
                TransportKind::Tcp => crate::config::Transport::Tcp,
                _ => crate::config::Transport::Udp,
            },
            auth_user,
        };
        let span = tracing::info_span!("call", call_id = %call_id, caller = %info.from.user, callee = %info.to.user);
        span.in_scope(|| tracing::info!(source = %source.addr, "new call"));
        self.by_server_tx.insert(key, id);
        let a_dialog_key = (dialog.id().call_id.clone(), dialog.id().local_tag.clone());
        self.by_dialog.insert(a_dialog_key.clone(), (id, Side::A));
        let a_port = a_ports.rtp_port();
        let (digits_tx, digits) = mpsc::channel(control::DIGIT_BUFFER);
        let takes_update = timers::takes_update(&req.headers);
        self.calls.insert(
            id,
            Call {
                id,
                span,
                caller: info.from.user.clone(),
                callee: info.to.user.clone(),
                a: ALeg {
                    dialog,
                    invite: req,
                    invite_tx: key,
                    peer: source,
                    sdp: offer,
                    our_ip,
                    origin: OriginState::new(rand::random::<u32>() as u64),
                    final_sent: false,
                    unacked_ok: None,
                    timer,
                    takes_update,
                    codecs: self.ctx.codecs.for_leg(info.auth_user.as_deref()).to_vec(),
                },
                branches: Vec::new(),
                dial: None,
                b: None,
                media: Media {
                    a_ports: Some(a_ports),
                    b_ports: None,
                    a_port,
                    b_port: 0,
                    relay: None,
                    activity: Default::default(),
                    b_sdp: None,
                    plans: [None, None],
                    heard: [None, None],
                    music_on: [false, false],
                },
                relayed: Vec::new(),
                started: SystemTime::now(),
                answered_at: None,
                ended: None,
                bridged_reply: None,
                answered_by: None,
                route_done: false,
                own_requests: Vec::new(),
                dialog_keys: vec![a_dialog_key],
                session_generation: [0; 2],
                late_offer: None,
                digits: digits_tx,
                pressed: String::new(),
                hold_music: self.ctx.music.clone(),
            },
        );
        (self.ctx.route)(CallHandle {
            call: id,
            info,
            commands: self.commands.clone(),
            digits,
            prompts: self.ctx.prompts.clone(),
        });
    }

    /// A CANCEL (RFC 3261 §9.2): 200 for the CANCEL, 487 for the INVITE, and the B
    /// legs cancelled in turn.
    pub fn on_cancel(&mut self, txl: &mut TransactionLayer, key: TxKey, req: Request) {
        let now = Instant::now();
        let invite = txl.cancel_target(&req);
        let call_id = invite.and_then(|k| self.by_server_tx.get(&k).copied());
        let mut resp = Response::to_request(&req, if invite.is_some() { 200 } else { 481 }, "");
        resp.reason = reason_phrase(resp.status).into();
        resp.set_to_tag(&crate::sip::checks::stateless_tag(&req.headers));
        let _ = txl.send_response(now, key, resp);
        let Some(id) = call_id else { return };
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call.a.final_sent {
            return;
        }
        let resp = call.a.dialog.respond(&call.a.invite, 487);
        call.a.final_sent = true;
        let _ = txl.send_response(now, call.a.invite_tx, resp);
        call.span.in_scope(|| tracing::info!("caller cancelled"));
        self.end_call(
            txl,
            id,
            Disposition::Cancelled,
            HangupBy::Caller,
            "caller cancelled",
        );
    }

    /// An ACK for a 2xx: from the caller it stops our 2xx retransmissions; it may
    /// carry the answer to a late offer.
    pub fn on_ack(&mut self, txl: &mut TransactionLayer, invite: Option<TxKey>, req: &Request) {
        let Some((id, side)) = invite
            .and_then(|k| self.by_server_tx.get(&k).map(|&id| (id, Side::A)))
            .or_else(|| self.dialog_of(req))
        else {
            return;
        };
        if let Some(call) = self.calls.get_mut(&id)
            && side == Side::A
        {
            call.a.unacked_ok = None;
        }
        self.on_late_answer(txl, id, side, req);
    }

    fn dialog_of(&self, req: &Request) -> Option<(u64, Side)> {
        let call_id = req.call_id()?.clone();
        let to = req.to().ok()?;
        let tag = SipStr::from(to.tag()?);
        self.by_dialog.get(&(call_id, tag)).copied()
    }

    /// A response to one of our client transactions. Returns false when it is not ours.
    pub fn on_response(&mut self, txl: &mut TransactionLayer, key: TxKey, resp: Response) -> bool {
        if resp.is_success()
            && let Some(kept) = self.reinvite_acks.get(&key)
        {
            // A 2xx to a re-INVITE already ACKed (or whose ACK awaits a late answer).
            if let Some(ack) = &kept.ack {
                txl.send_stateless(kept.peer, ack.clone());
            }
            return true;
        }
        let Some(&id) = self.by_client_tx.get(&key) else {
            return false;
        };
        let Some(call) = self.calls.get_mut(&id) else {
            return true;
        };
        let _enter = call.span.clone().entered();
        if let Some(i) = call.branches.iter().position(|b| b.tx == key) {
            self.on_branch_response(txl, id, i, resp);
        } else if let Some(i) = call.relayed.iter().position(|r| r.client_tx == key) {
            let (to, status) = (in_dialog::other(call.relayed[i].from), resp.status);
            self.on_relayed_response(txl, id, i, resp);
            if matches!(status, 408 | 481) {
                self.on_leg_lost(txl, id, to, Some(status));
            }
        } else if let Some(i) = call.own_requests.iter().position(|(k, _)| *k == key) {
            let side = call.own_requests[i].1;
            if resp.status >= 200 {
                call.own_requests.remove(i);
            }
            if let Some((dialog, _)) = call.leg_mut(side) {
                dialog.on_response(&resp);
            }
            self.on_own_request_answer(txl, id, side, key, &resp);
        }
        true
    }

    /// A transaction of ours got no answer (Timer B/F) or could not be sent.
    pub fn on_tx_failure(&mut self, txl: &mut TransactionLayer, key: TxKey) {
        let Some(&id) = self.by_client_tx.get(&key) else {
            return;
        };
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        if let Some(i) = call.branches.iter().position(|b| b.tx == key) {
            let invite = call.branches[i].invite.clone();
            let timeout = Response::to_request(&invite, 408, reason_phrase(408));
            self.on_branch_response(txl, id, i, timeout);
        } else if let Some(i) = call.relayed.iter().position(|r| r.client_tx == key) {
            let (to, request) = (
                in_dialog::other(call.relayed[i].from),
                call.relayed[i].request.clone(),
            );
            let timeout = Response::to_request(&request, 408, reason_phrase(408));
            self.on_relayed_response(txl, id, i, timeout);
            self.on_leg_lost(txl, id, to, None);
        } else if let Some(&(_, side)) = call.own_requests.iter().find(|(k, _)| *k == key) {
            self.on_leg_lost(txl, id, side, None);
        }
    }

    /// A transaction ended: forget it.
    pub fn on_terminated(&mut self, key: TxKey) {
        self.by_client_tx.remove(&key);
        self.by_server_tx.remove(&key);
        self.reinvite_acks.remove(&key);
    }

    /// Sends the ACK for the 2xx to our re-INVITE `tx` and keeps it for the 2xx's
    /// retransmissions. `None` absorbs them while the ACK waits for a late answer.
    fn ack_reinvite(
        &mut self,
        txl: &mut TransactionLayer,
        tx: TxKey,
        peer: Peer,
        ack: Option<&Request>,
    ) {
        let ack = ack.map(|ack| bytes::Bytes::from(ack.to_bytes()));
        if let Some(bytes) = &ack {
            txl.send_stateless(peer, bytes.clone());
        }
        self.reinvite_acks.insert(tx, KeptAck { peer, ack });
    }

    /// Fires due call timers.
    pub fn on_timers(&mut self, txl: &mut TransactionLayer, now: Instant) {
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (id, timer) = entry.remove();
            if !self.calls.contains_key(&id) {
                continue;
            }
            match timer {
                CallTimer::DialDeadline { generation } => {
                    self.on_dial_deadline(txl, id, generation)
                }
                CallTimer::Resend2xx { interval, give_up } => {
                    self.resend_2xx(txl, id, interval, give_up, now)
                }
                CallTimer::MediaCheck => self.check_media(txl, id, now),
                CallTimer::SessionRefresh { side, generation } => {
                    self.refresh_session(txl, id, side, generation, now)
                }
                CallTimer::SessionExpired { side, generation } => {
                    self.on_session_expired(txl, id, side, generation)
                }
                CallTimer::LateAnswer { give_up, interval } => {
                    self.on_late_answer_timer(txl, id, give_up, interval, now)
                }
            }
        }
    }

    fn resend_2xx(
        &mut self,
        txl: &mut TransactionLayer,
        id: u64,
        interval: Duration,
        give_up: Instant,
        now: Instant,
    ) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(ok) = call.a.unacked_ok.clone() else {
            return;
        };
        if now >= give_up {
            call.span
                .in_scope(|| tracing::warn!("no ACK for our 2xx; ending the call"));
            self.end_call(
                txl,
                id,
                Disposition::Answered,
                HangupBy::System,
                "no ACK from caller",
            );
            return;
        }
        let _ = txl.send_response(now, call.a.invite_tx, ok);
        let next = (interval * 2).min(self.ctx.t2);
        self.schedule(
            now + interval,
            id,
            CallTimer::Resend2xx {
                interval: next,
                give_up,
            },
        );
    }

    /// An operation from the call's dialplan task.
    pub fn on_command(&mut self, txl: &mut TransactionLayer, cmd: CallCommand) {
        let Some(call) = self.calls.get_mut(&cmd.call) else {
            refuse(cmd.op);
            return;
        };
        let id = call.id;
        let _enter = call.span.clone().entered();
        if call.ended.is_some() {
            if let Op::RouteDone(_) = cmd.op {
                self.forget(id);
            } else {
                refuse(cmd.op);
            }
            return;
        }
        let now = Instant::now();
        match cmd.op {
            Op::Dial(request, reply) => self.start_dial(txl, id, request, reply),
            Op::Answer(reply) => {
                let result = self.answer_caller(txl, id, now);
                let _ = reply.send(result);
            }
            Op::Reject(code, reason, reply) => {
                let result = self.final_to_caller(txl, id, code, reason.as_deref(), None);
                let _ = reply.send(result);
            }
            Op::Redirect(uri, reply) => {
                let result = self.final_to_caller(txl, id, 302, None, Some(uri));
                let _ = reply.send(result);
            }
            Op::Hangup(reply) => {
                if call.is_answered() {
                    self.end_call(
                        txl,
                        id,
                        Disposition::Answered,
                        HangupBy::System,
                        "dialplan hung up",
                    );
                    let _ = reply.send(Ok(()));
                } else {
                    let result = self.final_to_caller(txl, id, 480, None, None);
                    let _ = reply.send(result);
                }
            }
            Op::Play(items, done) => self.play(id, items, done),
            Op::StopPlaying => {
                if let Some(relay) = call.media.relay.as_ref() {
                    relay.stop_speaking(Side::A);
                }
            }
            Op::Record(recorder, limits, done) => match call.media.relay.as_ref() {
                Some(relay) => relay.record(Recording::message(recorder, limits), done),
                None => drop(done),
            },
            Op::StopRecording => {
                if let Some(relay) = call.media.relay.as_ref() {
                    relay.stop_recording();
                }
            }
            Op::RecordCall(recorder, reply) => {
                let result = match call.media.relay.as_ref() {
                    Some(relay) => {
                        // Nobody waits for its end: it ends with the call.
                        relay.record(Recording::call(recorder), oneshot::channel().0);
                        Ok(())
                    }
                    None => Err(CallError::Failed("the call has no media yet".into())),
                };
                let _ = reply.send(result);
            }
            Op::Digit(side, digit) => self.on_key(txl, id, side, digit, false),
            Op::Music(music, reply) => {
                call.hold_music = music;
                let _ = reply.send(Ok(()));
            }
            Op::RouteDone(outcome) => {
                call.route_done = true;
                let status = match &outcome {
                    Ok(()) => 480,
                    Err(e) => {
                        tracing::error!(error = %e, "dialplan failed; rejecting the call");
                        500
                    }
                };
                if !call.a.final_sent {
                    let _ = self.final_to_caller(txl, id, status, None, None);
                } else if call.b.is_none() {
                    self.end_call(
                        txl,
                        id,
                        Disposition::Answered,
                        HangupBy::System,
                        "dialplan finished",
                    );
                }
                self.forget_if_done(id);
            }
        }
    }

    /// Answers the caller's INVITE with 200 and our SDP answer, without a bridge yet;
    /// or with our own offer when the INVITE had none.
    fn answer_caller(
        &mut self,
        txl: &mut TransactionLayer,
        id: u64,
        now: Instant,
    ) -> Result<(), crate::dialplan::call::CallError> {
        let Some(call) = self.calls.get_mut(&id) else {
            return Err(crate::dialplan::call::CallError::Ended);
        };
        if call.a.final_sent {
            return Ok(());
        }
        let codecs = &call.a.codecs;
        let (ip, port, origin) = (call.a.our_ip, call.media.a_port, &mut call.a.origin);
        let Some(offer) = &call.a.sdp else {
            let ours = crate::sdp::own_offer(codecs, ip, port, origin);
            let cseq = call.a.invite.cseq().map_or(0, |c| c.seq);
            self.send_2xx_to_caller(txl, id, Body::sdp(ours.to_bytes()), now);
            self.await_answer(id, Side::A, cseq, None, None, now);
            return Ok(());
        };
        let sdp = crate::sdp::answer(offer, codecs, ip, &[port], origin);
        let offer = offer.clone();
        self.send_2xx_to_caller(txl, id, Body::sdp(sdp.to_bytes()), now);
        // Media comes up with the answer, for prompts and key presses.
        self.update_relay(id, Side::A, &offer);
        Ok(())
    }

    /// Plays `items` to the caller (answered, with media); `done` is dropped when it
    /// cannot be.
    fn play(
        &mut self,
        id: u64,
        items: Vec<crate::media::speaker::Item>,
        done: oneshot::Sender<bool>,
    ) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        let (Some(relay), Some(format)) = (call.media.relay.as_ref(), leg_formats(call)[0].send())
        else {
            tracing::warn!("nothing to play to: the caller's media is not up");
            return;
        };
        match Speaker::new(items, format, rand::random()) {
            Ok(speaker) => relay.speak(Side::A, speaker, Some(done)),
            Err(e) => tracing::warn!(error = %e, "cannot play"),
        }
    }

    /// Sends the 2xx of the caller's INVITE and keeps resending it until the ACK.
    fn send_2xx_to_caller(
        &mut self,
        txl: &mut TransactionLayer,
        id: u64,
        body: Body,
        now: Instant,
    ) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let mut ok = call.a.dialog.respond(&call.a.invite, 200);
        ok.headers.push(
            Known::Allow,
            crate::sip::checks::Capabilities::pbx().allow_header(),
        );
        ok.headers.push(Known::Server, self.ctx.user_agent.as_str());
        ok.set_body(&body.content_type, body.bytes);
        if let Some(timer) = call.a.timer {
            timer.add_to_response(&mut ok);
        }
        call.a.final_sent = true;
        call.answered_at = Some((SystemTime::now(), now));
        let reliable = call.a.peer.is_reliable();
        call.a.unacked_ok = (!reliable).then(|| ok.clone());
        let _ = txl.send_response(now, call.a.invite_tx, ok);
        let give_up = now + self.ctx.t1 * 64;
        if !reliable {
            self.schedule(
                now + self.ctx.t1,
                id,
                CallTimer::Resend2xx {
                    interval: (self.ctx.t1 * 2).min(self.ctx.t2),
                    give_up,
                },
            );
        }
        self.arm_session_timer(id, Side::A, now);
    }

    /// A final non-2xx (or 3xx with a Contact) to the unanswered caller, ending the call.
    fn final_to_caller(
        &mut self,
        txl: &mut TransactionLayer,
        id: u64,
        status: u16,
        reason: Option<&str>,
        contact: Option<String>,
    ) -> Result<(), crate::dialplan::call::CallError> {
        use crate::dialplan::call::CallError;
        let Some(call) = self.calls.get_mut(&id) else {
            return Err(CallError::Ended);
        };
        if call.a.final_sent {
            return Err(CallError::Failed("the call is already answered".into()));
        }
        if !(300..700).contains(&status) {
            return Err(CallError::Failed(format!(
                "{status} is not a final failure status"
            )));
        }
        let mut resp = call.a.dialog.respond(&call.a.invite, status);
        if let Some(r) = reason {
            resp.reason = r.into();
        }
        if let Some(c) = contact {
            resp.headers.push(Known::Contact, format!("<{c}>"));
        }
        resp.headers
            .push(Known::Server, self.ctx.user_agent.as_str());
        call.a.final_sent = true;
        let _ = txl.send_response(Instant::now(), call.a.invite_tx, resp);
        let disposition = match status {
            486 | 600 => Disposition::Busy,
            480 | 408 => Disposition::NoAnswer,
            _ => Disposition::Failed,
        };
        self.end_call(
            txl,
            id,
            disposition,
            HangupBy::System,
            &format!("rejected with {status}"),
        );
        Ok(())
    }

    /// Ends the call: BYE to answered legs that did not hang up themselves, CANCEL to
    /// ringing branches, the relay stopped, the CDR written, the dialplan told.
    pub(crate) fn end_call(
        &mut self,
        txl: &mut TransactionLayer,
        id: u64,
        disposition: Disposition,
        by: HangupBy,
        cause: &str,
    ) {
        let now = Instant::now();
        self.settle_late_offer(txl, id);
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call.ended.is_some() {
            return;
        }
        call.ended = Some((disposition, by, cause.to_string()));
        call.span
            .in_scope(|| tracing::info!(cause, ?by, "call ended"));
        // Requests still being relayed (a re-INVITE crossing the BYE): the phone that
        // sent each gets 487 (RFC 3261 §15.1.2), and a 2xx the other phone still sends
        // to our re-INVITE gets its ACK, before or after the BYE there.
        for relayed in call.relayed.drain(..) {
            let resp = Response::to_request(&relayed.request, 487, reason_phrase(487));
            let _ = txl.send_response(now, relayed.server_tx, resp);
            let to = match in_dialog::other(relayed.from) {
                Side::A => Some((&call.a.dialog, call.a.peer)),
                Side::B => call.b.as_ref().map(|b| (&b.dialog, b.peer)),
            };
            if let Some((dialog, peer)) = to
                && relayed.request.method == Method::Invite
            {
                let ack = dialog.ack_for_2xx(relayed.cseq, None).to_bytes();
                let ack = Some(bytes::Bytes::from(ack));
                self.reinvite_acks
                    .insert(relayed.client_tx, KeptAck { peer, ack });
            }
        }
        for i in 0..call.branches.len() {
            dial::cancel_branch(txl, &mut call.branches[i], now);
        }
        if let Some(b) = call.b.as_mut()
            && by != HangupBy::Callee
        {
            let bye = b.dialog.new_request(Method::Bye, None);
            if let Ok(key) = txl.send_request(now, b.peer, bye) {
                call.own_requests.push((key, Side::B));
            }
        }
        if call.a.final_sent && call.is_answered() && by != HangupBy::Caller {
            let bye = call.a.dialog.new_request(Method::Bye, None);
            if let Ok(key) = txl.send_request(now, call.a.peer, bye) {
                call.own_requests.push((key, Side::A));
            }
        } else if !call.a.final_sent {
            let resp = call.a.dialog.respond(&call.a.invite, 480);
            call.a.final_sent = true;
            let _ = txl.send_response(now, call.a.invite_tx, resp);
        }
        call.a.unacked_ok = None;
        let media = call_media(call);
        // Dropping the relay stops it; its ports come free as the runtime drops its task.
        call.media.relay = None;
        call.media.a_ports = None;
        call.media.b_ports = None;
        let duration = call
            .answered_at
            .map_or(Duration::ZERO, |(_, at)| now.saturating_duration_since(at));
        if let Some(reply) = call.bridged_reply.take() {
            let _ = reply.send(DialResult {
                status: DialStatus::Answered,
                sip_code: Some(200),
                answered_by: call.answered_by.clone(),
                duration,
            });
        }
        if let Some(dial) = call.dial.take()
            && let Some(reply) = dial.reply
        {
            let _ = reply.send(DialResult {
                status: DialStatus::Cancelled,
                sip_code: None,
                answered_by: None,
                duration: Duration::ZERO,
            });
        }
        let end = SystemTime::now();
        self.ctx.cdrs.write(Cdr {
            call_id: call
                .a
                .invite
                .call_id()
                .map(|c| c.to_string())
                .unwrap_or_default(),
            caller: call.caller.clone(),
            callee: call
                .answered_by
                .as_ref()
                .map_or(call.callee.clone(), |t| t.to_string()),
            start_unix: unix(call.started),
            answer_unix: call.answered_at.map(|(t, _)| unix(t)),
            end_unix: unix(end),
            duration_secs: duration.as_secs(),
            disposition,
            hangup_by: by,
            hangup_cause: cause.to_string(),
            media,
        });
        self.forget_if_done(id);
    }

    /// Drops an ended call once its dialplan task has finished too.
    fn forget_if_done(&mut self, id: u64) {
        if self
            .calls
            .get(&id)
            .is_some_and(|c| c.ended.is_some() && c.route_done)
        {
            self.forget(id);
        }
    }

    /// Drops a call and its dialog ids. Transaction keys clean themselves up: each
    /// transaction's `Terminated` event removes its entry.
    fn forget(&mut self, id: u64) {
        if let Some(call) = self.calls.remove(&id) {
            for key in &call.dialog_keys {
                self.by_dialog.remove(key);
            }
        }
    }

    /// Live calls, for `switchboard calls`.
    pub fn summaries(&self) -> Vec<CallSummary> {
        self.calls
            .values()
            .filter(|c| c.ended.is_none())
            .map(|c| {
                let relay = c.media.relay.as_ref();
                // Where the relay sends each leg's media; before it runs, the caller's SDP.
                let remote = |side| relay.and_then(|r| r.stats(side).rtp_remote);
                let a_media = remote(Side::A).or_else(|| c.a.sdp.as_ref()?.rtp_addr(0));
                let formats = leg_formats(c);
                let leg = |side: Side, call_id: String, peer: &Peer, dialog, port, remote_media| {
                    let i = side_index(side);
                    let stats = relay.map(|r| r.stats(side));
                    LegSummary {
                        call_id,
                        signaling: format!("{:?} {}", peer.transport, peer.addr),
                        dialog,
                        our_rtp_port: port,
                        remote_media,
                        packets_in: stats.map(|s| s.rtp_packets),
                        codec: formats[i].send().map(|f| f.kind.name()),
                        path: c.media.plans[i].as_ref().map(|p| {
                            if p.is_transcoding() {
                                "transcode"
                            } else {
                                "relay"
                            }
                        }),
                        lost_packets: stats.map(|s| s.lost_packets),
                        jitter_ms: stats.map(|s| s.jitter.as_millis() as u64),
                    }
                };
                CallSummary {
                    call_id: c
                        .a
                        .invite
                        .call_id()
                        .map(|s| s.to_string())
                        .unwrap_or_default(),
                    caller: c.caller.clone(),
                    callee: c.callee.clone(),
                    state: if c.b.is_some() {
                        "bridged"
                    } else if c.is_answered() {
                        "answered"
                    } else {
                        "ringing"
                    },
                    started_unix: unix(c.started),
                    answered_unix: c.answered_at.map(|(t, _)| unix(t)),
                    a_leg: leg(
                        Side::A,
                        c.a.dialog.id().call_id.to_string(),
                        &c.a.peer,
                        dialog_state(&c.a.dialog),
                        c.media.a_port,
                        a_media,
                    ),
                    b_leg: c.b.as_ref().map(|b| {
                        leg(
                            Side::B,
                            b.dialog.id().call_id.to_string(),
                            &b.peer,
                            dialog_state(&b.dialog),
                            c.media.b_port,
                            remote(Side::B),
                        )
                    }),
                    ringing: c
                        .branches
                        .iter()
                        .filter(|b| b.done.is_none())
                        .map(|b| b.target.to_string())
                        .collect(),
                    keys: c.pressed.clone(),
                }
            })
            .collect()
    }

    /// Starts the bridge once both legs' SDP is known, or points it at new addresses,
    /// and sets each direction's path for the codecs the legs now have.
    fn update_relay(&mut self, id: u64, side: Side, sdp: &Sdp) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if side == Side::B {
            call.media.b_sdp = Some(sdp.clone());
        }
        let (rtp, rtcp) = (sdp.rtp_addr(0), sdp.rtcp_addr(0));
        if let Some(relay) = call.media.relay.as_ref()
            && let Some(b) = call.media.b_ports.take()
        {
            relay.attach(b);
        }
        if call.media.relay.is_none() {
            let Some(a) = call.media.a_ports.take() else {
                return;
            };
            let commands = self.commands.clone();
            let events: MediaEvents = Arc::new(move |event: MediaEvent| {
                let _ = commands.send(CallCommand {
                    call: id,
                    op: Op::Digit(event.side, event.digit),
                });
            });
            let b = call.media.b_ports.take();
            let relay = Relay::start(a, b, RelayConfig::default(), Some(events));
            let a_sdp = call.a.sdp.as_ref();
            relay.set_remote(
                Side::A,
                a_sdp.and_then(|s| s.rtp_addr(0)),
                a_sdp.and_then(|s| s.rtcp_addr(0)),
            );
            let caller = a_sdp
                .and_then(|s| s.direction(0))
                .unwrap_or(Direction::SendRecv);
            call.media.relay = Some(relay);
            self.note_media_direction(id, Side::A, caller);
        }
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if let Some(relay) = call.media.relay.as_ref() {
            relay.set_remote(side, rtp, rtcp);
            let direction = sdp.direction(0).unwrap_or(Direction::SendRecv);
            // Each leg's formats, worked out once for the paths and the music.
            let legs = leg_formats(call);
            plan_paths(call, &legs);
            hold_music(call, &legs);
            self.note_media_direction(id, side, direction);
        }
    }
}

/// What each leg negotiated: from our last description to it and its last to us.
fn leg_formats(call: &Call) -> [LegFormats; 2] {
    let negotiated = |ours: Option<&Sdp>, theirs: Option<&Sdp>| match (ours, theirs) {
        (Some(ours), Some(theirs)) => LegFormats::negotiated(ours, theirs),
        _ => LegFormats::default(),
    };
    // Before a branch won, the offer the ringing branches got (early media).
    let ours_b = match &call.b {
        Some(b) => b.origin.last_sent(),
        None => call
            .branches
            .iter()
            .rev()
            .find_map(|b| b.origin.last_sent()),
    };
    [
        negotiated(call.a.origin.last_sent(), call.a.sdp.as_ref()),
        negotiated(ours_b, call.media.b_sdp.as_ref()),
    ]
}

/// The codec each leg used, and what the media of each leg did, for the CDR.
fn call_media(call: &Call) -> CallMedia {
    let Some(relay) = call.media.relay.as_ref() else {
        return CallMedia::default();
    };
    let legs = leg_formats(call);
    let codec = |i: usize| {
        legs[i]
            .send()
            .map_or(String::new(), |f| f.kind.name().to_string())
    };
    let (a, b) = (relay.stats(Side::A), relay.stats(Side::B));
    let media_path = match &call.media.plans {
        [None, None] => "",
        plans if plans.iter().flatten().any(DirectionPlan::is_transcoding) => "transcoded",
        _ => "relayed",
    };
    CallMedia {
        caller_codec: codec(0),
        callee_codec: codec(1),
        media_path: media_path.to_string(),
        caller_packets: a.rtp_packets,
        callee_packets: b.rtp_packets,
        caller_lost: a.lost_packets,
        callee_lost: b.lost_packets,
        caller_jitter_ms: a.jitter.as_millis() as u64,
        callee_jitter_ms: b.jitter.as_millis() as u64,
        dtmf: call.pressed.clone(),
    }
}

/// A party whose phone put the other on hold hears hold music from switchboard until
/// resumed: a leg whose latest description does not receive means its peer is held.
fn hold_music(call: &mut Call, legs: &[LegFormats; 2]) {
    let (Some(relay), Some(music)) = (call.media.relay.as_ref(), call.hold_music.clone()) else {
        return;
    };
    if !relay.has(Side::B) {
        return;
    }
    let receives = |sdp: Option<&Sdp>| {
        sdp.and_then(|s| s.direction(0))
            .is_none_or(Direction::receives)
    };
    let holding = [
        !receives(call.a.sdp.as_ref()),
        !receives(call.media.b_sdp.as_ref()),
    ];
    for (holder, held) in [(0, Side::B), (1, Side::A)] {
        let playing = call.media.music_on[side_index(held)];
        match (holding[holder], playing) {
            (true, false) => {
                let Some(format) = legs[side_index(held)].send() else {
                    continue;
                };
                // The frames encoded once for every held call of this codec; until
                // they are ready, this call encodes its own.
                if let Some(frames) = music.encoded(format.kind) {
                    let player = MusicPlayer::new(frames, format.payload_type, rand::random());
                    relay.speak(held, player, None);
                } else if let Ok(speaker) =
                    Speaker::looping(music.clip.clone(), format, rand::random())
                {
                    relay.speak(held, speaker, None);
                } else {
                    continue;
                }
                call.media.music_on[side_index(held)] = true;
            }
            (false, true) => {
                relay.stop_speaking(held);
                call.media.music_on[side_index(held)] = false;
            }
            _ => {}
        }
    }
}

/// Points each direction of the relay at the path the legs' codecs call for,
/// leaving a direction alone when its path has not changed.
fn plan_paths(call: &mut Call, legs: &[LegFormats; 2]) {
    let Some(relay) = call.media.relay.as_ref() else {
        return;
    };
    // Keys in the audio are listened for only on a caller alone with switchboard: in a
    // bridged call they reach the other phone in the audio itself.
    let alone = !relay.has(Side::B);
    for (i, side) in [(0, Side::A), (1, Side::B)] {
        let heard = Some((legs[i].clone(), alone));
        if legs[i].send().is_none() || call.media.heard[i] == heard {
            continue;
        }
        match Listener::new(&legs[i], alone) {
            Ok(listener) => relay.listen(side, listener),
            Err(e) => tracing::warn!(error = %e, "cannot listen to the leg"),
        }
        call.media.heard[i] = heard;
    }
    for (from, side) in [(0, Side::A), (1, Side::B)] {
        let Some(plan) = DirectionPlan::between(&legs[from], &legs[1 - from]) else {
            continue;
        };
        if call.media.plans[from].as_ref() == Some(&plan) {
            continue;
        }
        if plan.is_transcoding() {
            call.span
                .in_scope(|| tracing::info!(from = ?side, "codecs differ; transcoding"));
        }
        relay.set_plan(side, &plan);
        call.media.plans[from] = Some(plan);
    }
}

fn side_index(side: Side) -> usize {
    match side {
        Side::A => 0,
        Side::B => 1,
    }
}

fn dialog_state(d: &Dialog) -> &'static str {
    match d.state() {
        crate::sip::dialog::DialogState::Early => "early",
        crate::sip::dialog::DialogState::Confirmed => "confirmed",
        crate::sip::dialog::DialogState::Terminated => "terminated",
    }
}
