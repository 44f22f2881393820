//! Dialing: B-leg INVITEs to every registered contact of the targets (in parallel, or
//! one target after another), provisional responses relayed to the caller, the first
//! 2xx bridged and the other branches cancelled. When the caller's INVITE had no SDP,
//! neither have the B-leg INVITEs, and the winner's 2xx offer is handled as a late
//! offer (see `late_offer`).

use super::call::{BLeg, Branch, DialState, HeldAck};
use super::{B2bua, CallTimer};
use crate::dialplan::call::{DialRequest, DialResult, DialStatus, DialTarget, Strategy};
use crate::media::Side;
use crate::sdp::{OriginState, Sdp};
use crate::sip::dialog::{Body, Forks, InviteParams, new_call_id, new_uac_invite, sip_address};
use crate::sip::transaction::{Peer, SendError, TransactionLayer, TransportKind};
use crate::sip::{HeaderName, Host, Method, NameAddr, SipStr, SipUri, Uri};
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};
use tokio::sync::oneshot;

/// CANCELs a branch that has no final response; before any provisional the CANCEL
/// waits for one (RFC 3261 §9.1).
pub fn cancel_branch(txl: &mut TransactionLayer, branch: &mut Branch, now: Instant) {
    if branch.done.is_some() {
        return;
    }
    branch.done = Some(487);
    if branch.provisional {
        let _ = txl.send_cancel(now, branch.tx);
    } else {
        branch.cancel_pending = true;
    }
}

impl B2bua {
    pub(super) fn start_dial(
        &mut self,
        txl: &mut TransactionLayer,
        id: u64,
        request: DialRequest,
        reply: oneshot::Sender<DialResult>,
    ) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call.b.is_some() || call.dial.is_some() {
            let _ = reply.send(DialResult {
                status: DialStatus::Failed,
                sip_code: None,
                answered_by: None,
                duration: Default::default(),
            });
            return;
        }
        let (first, remaining) = match request.strategy {
            Strategy::Parallel => (request.targets.clone(), Vec::new()),
            Strategy::Sequential => {
                let mut rest = request.targets.clone();
                let first = if rest.is_empty() {
                    Vec::new()
                } else {
                    vec![rest.remove(0)]
                };
                (first, rest)
            }
        };
        call.dial = Some(DialState {
            request,
            reply: Some(reply),
            remaining,
            best: None,
            generation: 0,
        });
        self.start_attempt(txl, id, first);
    }

    /// Rings `targets` together; records a status for each that can't ring at all.
    fn start_attempt(&mut self, txl: &mut TransactionLayer, id: u64, targets: Vec<DialTarget>) {
        let now = Instant::now();
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        call.branches.retain(|b| b.done.is_none());
        let Some(dial) = call.dial.as_mut() else {
            return;
        };
        dial.generation += 1;
        let generation = dial.generation;
        let timeout = dial.request.timeout;
        let mut started = 0;
        for target in targets {
            let contacts: Vec<(Uri, Peer)> = match &target {
                DialTarget::Extension(ext) => {
                    if !self.ctx.registrar.is_extension(ext) {
                        self.note_status(id, DialStatus::NotFound, Some(404));
                        continue;
                    }
                    self.ctx
                        .registrar
                        .lookup(SystemTime::now(), ext)
                        .into_iter()
                        .map(|t| (t.contact, t.peer))
                        .collect()
                }
                DialTarget::Uri(text) => match uri_destination(text) {
                    Some(d) => vec![d],
                    None => {
                        self.note_status(id, DialStatus::Failed, Some(416));
                        continue;
                    }
                },
            };
            if contacts.is_empty() {
                self.note_status(id, DialStatus::Unavailable, Some(480));
                continue;
            }
            for (contact, peer) in contacts {
                if self.send_branch(txl, id, &target, contact, peer, now) {
                    started += 1;
                }
            }
        }
        if started == 0 {
            self.attempt_finished(txl, id);
        } else {
            self.schedule(now + timeout, id, CallTimer::DialDeadline { generation });
        }
    }

    /// Sends one B-leg INVITE; false when it could not be sent.
    fn send_branch(
        &mut self,
        txl: &mut TransactionLayer,
        id: u64,
        target: &DialTarget,
        contact: Uri,
        peer: Peer,
        now: Instant,
    ) -> bool {
        let our_ip = self.media_ip_for(&peer);
        let sent_by = self.sent_by(&peer);
        let our_contact = self.contact(&peer);
        let shard = self.shard;
        let extension = match target {
            DialTarget::Extension(e) => Some(e.as_str()),
            DialTarget::Uri(_) => None,
        };
        let codecs = self.ctx.codecs.for_leg(extension).to_vec();
        let Some(call) = self.calls.get_mut(&id) else {
            return false;
        };
        if call.media.b_ports.is_none() && call.media.relay.is_none() {
            match self.ctx.ports.allocate() {
                Ok(p) => {
                    call.media.b_port = p.rtp_port();
                    call.media.b_ports = Some(p);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "no RTP ports for the B leg");
                    return false;
                }
            }
        }
        let Some(dial) = call.dial.as_ref() else {
            return false;
        };
        let mut origin = OriginState::new(rand::random::<u32>() as u64);
        // No offer from the caller: none to the callee either; its 2xx will make one.
        // Otherwise the caller's codecs first, so the callee can pick one of them and
        // the media is relayed, then the rest of the callee's, so it never has to refuse.
        let offer = match &call.a.sdp {
            Some(sdp) => match crate::sdp::offer_across(sdp, &codecs) {
                Some(offer) => Some(crate::sdp::rewrite_for_leg(
                    &offer,
                    our_ip,
                    &[call.media.b_port],
                    &mut origin,
                )),
                None => return false,
            },
            None => None,
        };
        let caller = call.a.dialog.remote().clone();
        let number = dial
            .request
            .caller_id
            .number
            .clone()
            .or_else(|| caller.uri.user().map(str::to_string))
            .unwrap_or_else(|| "anonymous".into());
        let name = dial
            .request
            .caller_id
            .name
            .clone()
            .or_else(|| caller.display_name());
        let from = sip_address(name.as_deref(), &number, Host::Ip(our_ip));
        let to_user = match target {
            DialTarget::Extension(e) => e.clone(),
            DialTarget::Uri(_) => contact.user().unwrap_or("").to_string(),
        };
        let to = NameAddr::new(Uri::Sip(SipUri::new(
            Some(&to_user),
            Host::Ip(our_ip),
            None,
        )));
        let mut params = InviteParams::new(contact, from, to, our_contact, sent_by);
        params.call_id = new_call_id(&format!("sb{shard}-"));
        params.body = offer.map(|o| Body::sdp(o.to_bytes()));
        params.extra_headers = dial
            .request
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    HeaderName::new(SipStr::from(n.as_str())),
                    SipStr::from(v.as_str()),
                )
            })
            .collect();
        let (mut invite, seed) = new_uac_invite(params);
        self.ctx.timer_policy.add_to_request(&mut invite);
        let key = match txl.send_request(now, peer, invite.clone()) {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(error = %e, "B-leg INVITE not sent");
                return false;
            }
        };
        tracing::info!(target = %target, dest = %peer.addr, "ringing");
        let dialog_key = (seed.call_id().clone(), seed.local_tag().clone());
        call.branches.push(Branch {
            tx: key,
            invite,
            forks: Forks::new(seed),
            peer,
            target: target.clone(),
            done: None,
            provisional: false,
            cancel_pending: false,
            origin,
            codecs,
        });
        self.by_client_tx.insert(key, id);
        self.by_dialog.insert(dialog_key.clone(), (id, Side::B));
        call.dialog_keys.push(dialog_key);
        true
    }

    fn note_status(&mut self, id: u64, status: DialStatus, code: Option<u16>) {
        if let Some(dial) = self.calls.get_mut(&id).and_then(|c| c.dial.as_mut()) {
            let better = dial
                .best
                .is_none_or(|(s, _)| s.most_informative(status) == status && s != status);
            if better {
                dial.best = Some((status, code));
            }
        }
    }

    /// Every branch of the attempt has failed: ring the next target, or tell the script.
    fn attempt_finished(&mut self, txl: &mut TransactionLayer, id: u64) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call.branches.iter().any(|b| b.done.is_none()) {
            return;
        }
        let Some(dial) = call.dial.as_mut() else {
            return;
        };
        if !dial.remaining.is_empty() {
            let next = dial.remaining.remove(0);
            self.start_attempt(txl, id, vec![next]);
            return;
        }
        if let Some(dial) = call.dial.take() {
            let (status, code) = dial.best.unwrap_or((DialStatus::Unavailable, Some(480)));
            tracing::info!(status = status.as_str(), ?code, "nobody answered");
            if let Some(reply) = dial.reply {
                let _ = reply.send(DialResult {
                    status,
                    sip_code: code,
                    answered_by: None,
                    duration: Default::default(),
                });
            }
        }
    }

    pub(super) fn on_dial_deadline(
        &mut self,
        txl: &mut TransactionLayer,
        id: u64,
        generation: u64,
    ) {
        let now = Instant::now();
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call
            .dial
            .as_ref()
            .is_none_or(|d| d.generation != generation)
            || call.b.is_some()
        {
            return;
        }
        tracing::info!("no answer in time; cancelling");
        for b in call.branches.iter_mut() {
            cancel_branch(txl, b, now);
        }
        self.note_status(id, DialStatus::NoAnswer, Some(480));
        self.attempt_finished(txl, id);
    }

    pub(super) fn on_branch_response(
        &mut self,
        txl: &mut TransactionLayer,
        id: u64,
        index: usize,
        resp: crate::sip::Response,
    ) {
        let now = Instant::now();
        let status = resp.status;
        if status == 100 {
            return;
        }
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let branch = &mut call.branches[index];
        let offerless = branch.invite.body.is_empty();
        let remote_tag = resp.to().ok().and_then(|t| t.tag().map(str::to_string));
        if (101..200).contains(&status) || (200..300).contains(&status) {
            branch.forks.on_response(&resp);
        }
        if status < 200 {
            branch.provisional = true;
            if branch.cancel_pending {
                branch.cancel_pending = false;
                if let Err(e) = txl.send_cancel(now, branch.tx)
                    && e != SendError::NoSuchTransaction
                {
                    tracing::debug!(error = %e, "CANCEL not sent");
                }
                return;
            }
            if branch.done.is_some() || call.a.final_sent || call.b.is_some() {
                return;
            }
            let mut relay_resp = call.a.dialog.respond(
                &call.a.invite,
                if status == 181 || status == 182 {
                    180
                } else {
                    status
                },
            );
            // SDP in a provisional to an offerless INVITE would be an offer, which only a
            // reliable provisional may carry (RFC 3262, not supported): relay the 18x
            // without it.
            let early = sdp_of(&resp).filter(|_| !offerless);
            if let (Some(early), Some(offer)) = (early, call.a.sdp.clone()) {
                let Some(mut leg) = call.leg_sdp(Side::A) else {
                    return;
                };
                let body = leg.answer_across(&offer, &early);
                relay_resp.set_body("application/sdp", body.to_bytes());
                let _ = txl.send_response(now, call.a.invite_tx, relay_resp);
                self.update_relay(id, Side::B, &early);
            } else {
                let _ = txl.send_response(now, call.a.invite_tx, relay_resp);
            }
            return;
        }
        if (200..300).contains(&status) {
            self.on_branch_answered(txl, id, index, resp, remote_tag, now);
            return;
        }
        if branch.done.is_none() {
            branch.done = Some(status);
            tracing::info!(target = %branch.target, status, "branch failed");
            self.note_status(id, DialStatus::of_final_response(status), Some(status));
        }
        self.attempt_finished(txl, id);
    }

    fn on_branch_answered(
        &mut self,
        txl: &mut TransactionLayer,
        id: u64,
        index: usize,
        resp: crate::sip::Response,
        remote_tag: Option<String>,
        now: Instant,
    ) {
        let Some(peer) = self.calls.get(&id).map(|c| c.branches[index].peer) else {
            return;
        };
        let our_ip = self.media_ip_for(&peer);
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let cseq = call.branches[index].forks.seed().cseq();
        let Some(dialog) = remote_tag
            .as_deref()
            .and_then(|t| call.branches[index].forks.get_mut(t))
            .cloned()
        else {
            tracing::warn!("2xx without a usable To tag; ignoring");
            return;
        };
        // A retransmitted 2xx of the bridged leg: resend its ACK, or absorb it while
        // the ACK waits for the caller's answer to the 2xx's offer.
        if let Some(b) = call.b.as_ref()
            && b.dialog.id() == dialog.id()
        {
            if let Some(ack) = &b.ack {
                txl.send_stateless(b.peer, bytes::Bytes::from(ack.to_bytes()));
            }
            return;
        }
        let offerless = call.branches[index].invite.body.is_empty();
        let sdp = sdp_of(&resp);
        // The 2xx answers our offer, or (to an offerless INVITE) makes the offer, which
        // goes on to the caller cut down to what the bridge carries.
        let session = match (&sdp, offerless) {
            (Some(answer), false) => Some(Session::Answer(answer.clone())),
            (Some(offer), true) => call
                .leg_sdp(Side::A)
                .and_then(|mut leg| leg.offer_across(offer))
                .map(|relayable| Session::Offer {
                    offer: offer.clone(),
                    relayable: Box::new(relayable),
                }),
            (None, _) => None,
        };
        let won = call.b.is_none()
            && call.dial.is_some()
            && call.ended.is_none()
            && call.branches[index].done.is_none();
        let Some(session) = session.filter(|_| won) else {
            // A second branch answered, or the dial is over, or the 2xx has no usable
            // SDP: RFC 3261 §13.2.2.4 says ACK it (answering an offer it made, with
            // whatever we can accept), then end it.
            let our_answer = sdp.filter(|_| offerless).map(|offer| {
                let ours = crate::sdp::answer(
                    &offer,
                    &call.branches[index].codecs,
                    our_ip,
                    &[call.media.b_port],
                    &mut OriginState::new(rand::random::<u32>() as u64),
                );
                Body::sdp(ours.to_bytes())
            });
            let ack = dialog.ack_for_2xx(cseq, our_answer);
            txl.send_stateless(peer, bytes::Bytes::from(ack.to_bytes()));
            let mut loser = dialog;
            let bye = loser.new_request(Method::Bye, None);
            let _ = txl.send_request(now, peer, bye);
            if won {
                tracing::warn!(offerless, "2xx without usable SDP; ending that leg");
                call.branches[index].done = Some(488);
                self.note_status(id, DialStatus::Failed, Some(488));
                self.attempt_finished(txl, id);
            }
            return;
        };
        let target = call.branches[index].target.clone();
        call.branches[index].done = Some(200);
        for (i, b) in call.branches.iter_mut().enumerate() {
            if i != index {
                cancel_branch(txl, b, now);
            }
        }
        tracing::info!(target = %target, "answered; bridging");
        let timer = self.ctx.timer_policy.from_response(&resp);
        call.b = Some(BLeg {
            dialog,
            peer,
            ack: None,
            our_ip,
            origin: call.branches[index].origin.clone(),
            timer,
            takes_update: super::timers::takes_update(&resp.headers),
            codecs: call.branches[index].codecs.clone(),
        });
        call.answered_by = Some(target);
        if let Some(dial) = call.dial.take() {
            call.bridged_reply = dial.reply;
        }
        let a_answered = call.a.final_sent;
        match session {
            Session::Answer(answer) => {
                self.ack_bridged(txl, id, cseq, None);
                if !a_answered {
                    self.answer_caller_from(txl, id, &answer, now);
                }
                self.update_relay(id, Side::B, &answer);
            }
            Session::Offer { offer, relayable } if !a_answered => {
                // The caller answers in its ACK; the callee's ACK waits for that.
                let cseq_a = call.a.invite.cseq().map_or(0, |c| c.seq);
                self.answer_caller_from(txl, id, &relayable, now);
                self.update_relay(id, Side::B, &offer);
                let held = HeldAck {
                    cseq,
                    offer,
                    reinvite: None,
                };
                self.await_answer(id, Side::A, cseq_a, Some(held), None, now);
            }
            Session::Offer { offer, .. } => {
                // The dialplan answered the caller already: the callee gets our answer.
                let call = self.calls.get_mut(&id);
                let ours = call
                    .and_then(|c| c.leg_sdp(Side::B))
                    .map(|mut leg| leg.answer(&offer));
                self.ack_bridged(txl, id, cseq, ours.map(|o| Body::sdp(o.to_bytes())));
                self.update_relay(id, Side::B, &offer);
            }
        }
        self.start_media_check(id, now);
        self.arm_session_timer(id, Side::B, now);
    }
}

impl B2bua {
    /// ACKs the bridged callee's 2xx to our INVITE `cseq`, keeping the ACK for the
    /// 2xx's retransmissions.
    fn ack_bridged(&mut self, txl: &mut TransactionLayer, id: u64, cseq: u32, body: Option<Body>) {
        let Some(b) = self.calls.get_mut(&id).and_then(|c| c.b.as_mut()) else {
            return;
        };
        let ack = b.dialog.ack_for_2xx(cseq, body);
        txl.send_stateless(b.peer, bytes::Bytes::from(ack.to_bytes()));
        b.ack = Some(ack);
    }

    /// Answers the caller's INVITE with 200 and an SDP made from the callee's `sdp`:
    /// the answer to the caller's offer, or (an offerless INVITE) the offer to it.
    fn answer_caller_from(&mut self, txl: &mut TransactionLayer, id: u64, sdp: &Sdp, now: Instant) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let offer = call.a.sdp.clone();
        let Some(mut leg) = call.leg_sdp(Side::A) else {
            return;
        };
        let body = match &offer {
            Some(offer) => leg.answer_across(offer, sdp),
            None => crate::sdp::rewrite_for_leg(sdp, leg.our_ip, &[leg.port], leg.origin),
        };
        self.send_2xx_to_caller(txl, id, Body::sdp(body.to_bytes()), now);
    }
}

/// What a winning branch's 2xx brought.
enum Session {
    /// The answer to our offer.
    Answer(Sdp),
    /// An offer (our INVITE had none), and that offer cut down to the relayable codecs.
    Offer { offer: Sdp, relayable: Box<Sdp> },
}

/// The SDP body of a message, when it has one that parses.
pub(super) fn sdp_of(resp: &crate::sip::Response) -> Option<Sdp> {
    if resp.body.is_empty() {
        return None;
    }
    Sdp::parse(&resp.body).ok()
}

/// A SIP URI with an IP host: where to send an INVITE for it (no DNS yet).
fn uri_destination(text: &str) -> Option<(Uri, Peer)> {
    let uri = Uri::parse_str(text).ok()?;
    let sip = uri.as_sip()?;
    let ip = sip.host.ip()?;
    let transport = match sip.transport_param() {
        Some(t) if t.eq_ignore_ascii_case("tcp") => TransportKind::Tcp,
        _ => TransportKind::Udp,
    };
    let port = sip.port.unwrap_or(5060);
    Some((uri.clone(), Peer::new(transport, SocketAddr::new(ip, port))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_codes_map_to_dial_statuses() {
        assert_eq!(DialStatus::of_final_response(486), DialStatus::Busy);
        assert_eq!(DialStatus::of_final_response(600), DialStatus::Busy);
        assert_eq!(DialStatus::of_final_response(408), DialStatus::NoAnswer);
        assert_eq!(DialStatus::of_final_response(404), DialStatus::NotFound);
        assert_eq!(DialStatus::of_final_response(503), DialStatus::Unavailable);
        assert_eq!(DialStatus::of_final_response(403), DialStatus::Failed);
    }

    #[test]
    fn uri_targets_need_an_ip_host() {
        let (uri, peer) = uri_destination("sip:bob@192.0.2.5:5070;transport=tcp").unwrap();
        assert_eq!(uri.user(), Some("bob"));
        assert_eq!(peer.addr, "192.0.2.5:5070".parse().unwrap());
        assert_eq!(peer.transport, TransportKind::Tcp);
        assert!(uri_destination("sip:bob@example.com").is_none());
        assert!(uri_destination("tel:+15551234").is_none());
    }

    #[test]
    fn codec_lists_carry_telephone_events_at_each_audio_clock() {
        use crate::media::codec::CodecKind;
        let names = |kinds: &[CodecKind]| -> Vec<String> {
            super::super::sdp_codecs(kinds)
                .iter()
                .map(|c| format!("{}/{}", c.name, c.clock_rate))
                .collect()
        };
        assert_eq!(
            names(&[CodecKind::Pcma, CodecKind::Opus]),
            [
                "PCMA/8000",
                "opus/48000",
                "telephone-event/8000",
                "telephone-event/48000"
            ]
        );
        assert_eq!(
            names(&[CodecKind::G722]),
            ["G722/8000", "telephone-event/8000"]
        );
    }
}
