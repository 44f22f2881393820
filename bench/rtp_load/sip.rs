//! Just enough of a SIP user agent to put N calls through switchboard and take them
//! down again: REGISTER the callee extension (digest), INVITE from the caller extension
//! (answering the 407), answer the B-leg INVITEs switchboard sends to the callee's
//! contact, ACK, BYE, and answer whatever switchboard asks meanwhile (OPTIONS pings,
//! session refreshes). Both phones share one UDP socket and one thread; retransmission
//! follows RFC 3261's T1 doubling. Parsing uses switchboard's own message parser.
//!
//! The callee answers each B-leg offer with one codec, PCMU unless told otherwise
//! (`--callee-codec`), using the payload type switchboard's offer gave it; a callee
//! that answers with another codec than the caller's PCMU makes switchboard transcode.
//!
//! Writing this rather than driving SIPp (with `-rtp_echo`) keeps the RTP under the
//! generator's control: SIPp would echo, so only round trips could be measured, and it
//! would run a thread per call.

use bytes::Bytes;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use switchboard::media::codec::CodecKind;
use switchboard::sip::auth::{Challenge, DigestAlgorithm};
use switchboard::sip::{Known, Message, Method, Request, Response, parse_datagram};

const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);
/// A request is given up after this many sends (RFC 3261's 64*T1 is seven doublings).
const MAX_SENDS: u32 = 7;
/// The longest the agent blocks in a receive before looking at its timers.
const POLL: Duration = Duration::from_millis(5);

#[derive(Clone, Debug)]
pub struct Account {
    pub user: String,
    pub password: String,
}

/// Where the two phones' RTP lives (the generator's two media sockets).
#[derive(Clone, Copy, Debug)]
pub struct MediaPorts {
    pub ip: IpAddr,
    pub caller_port: u16,
    pub callee_port: u16,
}

/// One established call, as far as media is concerned: where switchboard wants each
/// phone's RTP.
#[derive(Clone, Copy, Debug)]
pub struct Bridged {
    pub caller_relay: SocketAddr,
    pub callee_relay: SocketAddr,
    /// The payload type the callee answered its codec with.
    pub callee_payload_type: u8,
}

/// A request we sent and retransmit until a response comes.
struct Outgoing {
    bytes: Vec<u8>,
    sends: u32,
    next_send: Instant,
    interval: Duration,
    /// A provisional response stops INVITE retransmission.
    answered: bool,
}

impl Outgoing {
    fn new(bytes: Vec<u8>, now: Instant) -> Outgoing {
        Outgoing {
            bytes,
            sends: 1,
            next_send: now + T1,
            interval: T1,
            answered: false,
        }
    }

    /// Whether the request should be sent again now; false once it is given up.
    fn due(&mut self, now: Instant) -> Result<bool, ()> {
        if self.answered || now < self.next_send {
            return Ok(false);
        }
        if self.sends >= MAX_SENDS {
            return Err(());
        }
        self.sends += 1;
        self.interval = (self.interval * 2).min(T2);
        self.next_send = now + self.interval;
        Ok(true)
    }
}

/// The caller's side of one call (the A leg, seen from the phone).
struct CallerLeg {
    call_id: String,
    from_tag: String,
    cseq: u32,
    branch: String,
    pending: Option<Outgoing>,
    state: CallerState,
}

enum CallerState {
    Inviting { authorized: bool },
    Established(Dialog),
    Hanging(Dialog),
    Ended,
    Failed(String),
}

/// What an in-dialog request from the caller needs.
#[derive(Clone)]
struct Dialog {
    to: String,
    target: String,
    routes: Vec<String>,
    relay: SocketAddr,
    ack: Vec<u8>,
}

/// The callee's side of one call (the B leg switchboard created).
struct CalleeLeg {
    relay: SocketAddr,
    /// The payload type of the codec we answered with.
    payload_type: u8,
    /// Our 200 to the INVITE, retransmitted until the ACK comes.
    ok: Vec<u8>,
    unacked: Option<Outgoing>,
    ended: bool,
}

pub struct Agent {
    sock: UdpSocket,
    local: SocketAddr,
    server: SocketAddr,
    caller: Account,
    callee: Account,
    media: MediaPorts,
    /// The codec the callee answers with.
    callee_codec: CodecKind,
    ids: u64,
    callers: Vec<CallerLeg>,
    /// Client transaction branch -> index into `callers`.
    branches: HashMap<String, usize>,
    callees: HashMap<String, CalleeLeg>,
    /// B legs in arrival order.
    callee_order: Vec<String>,
    buf: Vec<u8>,
}

impl Agent {
    pub fn new(
        server: SocketAddr,
        caller: Account,
        callee: Account,
        media: MediaPorts,
        callee_codec: CodecKind,
    ) -> io::Result<Agent> {
        let sock = UdpSocket::bind(SocketAddr::new(media.ip, 0))?;
        sock.set_read_timeout(Some(POLL))?;
        Ok(Agent {
            local: sock.local_addr()?,
            sock,
            server,
            caller,
            callee,
            media,
            callee_codec,
            ids: 0,
            callers: Vec::new(),
            branches: HashMap::new(),
            callees: HashMap::new(),
            callee_order: Vec::new(),
            buf: vec![0; 65_536],
        })
    }

    fn next_id(&mut self) -> u64 {
        self.ids += 1;
        self.ids
    }

    fn new_branch(&mut self) -> String {
        format!("z9hG4bK-rtpload-{}-{}", std::process::id(), self.next_id())
    }

    fn send(&self, bytes: &[u8]) {
        // A lost datagram is what retransmission is for.
        let _ = self.sock.send_to(bytes, self.server);
    }

    /// Registers the callee's contact (this agent's address), answering the challenge.
    pub fn register(&mut self, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        let call_id = format!("reg-{}-{}@rtp_load", std::process::id(), self.next_id());
        let mut authorization = String::new();
        for cseq in 1..=2 {
            let branch = self.new_branch();
            let server = self.server;
            let user = self.callee.user.clone();
            let request = format!(
                "REGISTER sip:{server} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch}\r\nMax-Forwards: 70\r\nFrom: <sip:{user}@{server}>;tag=reg{cseq}\r\nTo: <sip:{user}@{server}>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{user}@{local}>\r\nExpires: 3600\r\n{authorization}Content-Length: 0\r\n\r\n",
                local = self.local,
            );
            let response = self.transact(request.into_bytes(), &branch, deadline)?;
            match response.status {
                200..=299 => return Ok(()),
                401 if cseq == 1 => {
                    let challenge = pick_challenge(&response, Known::WwwAuthenticate)?;
                    let uri = format!("sip:{server}");
                    let cnonce = format!("{:016x}", self.next_id());
                    let credentials = challenge.answer(
                        &self.callee.user,
                        &self.callee.password,
                        "REGISTER",
                        &uri,
                        &cnonce,
                        1,
                    );
                    authorization = format!("Authorization: {credentials}\r\n");
                }
                status => {
                    return Err(io::Error::other(format!("REGISTER answered {status}")));
                }
            }
        }
        Err(io::Error::other("REGISTER rejected after authenticating"))
    }

    /// Sends a non-INVITE request and waits for its final response, answering other
    /// traffic meanwhile.
    fn transact(
        &mut self,
        request: Vec<u8>,
        branch: &str,
        deadline: Instant,
    ) -> io::Result<Response> {
        let mut out = Outgoing::new(request, Instant::now());
        self.send(&out.bytes);
        loop {
            let now = Instant::now();
            if now > deadline {
                return Err(io::Error::other("no final response in time"));
            }
            match out.due(now) {
                Ok(true) => self.send(&out.bytes),
                Ok(false) => {}
                Err(()) => return Err(io::Error::other("request timed out")),
            }
            if let Some(Message::Response(r)) = self.receive()?
                && top_branch(&r).as_deref() == Some(branch)
                && r.status >= 200
            {
                return Ok(r);
            }
        }
    }

    /// Receives one message (or nothing within the poll time). Requests are answered
    /// here; responses to INVITEs and BYEs update their calls; any other response is
    /// handed to the caller.
    fn receive(&mut self) -> io::Result<Option<Message>> {
        let n = match self.sock.recv_from(&mut self.buf) {
            Ok((n, _)) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None);
            }
            // An ICMP error from an earlier send; the socket is fine.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Ok(None),
            Err(e) => return Err(e),
        };
        let Ok(message) = parse_datagram(Bytes::copy_from_slice(&self.buf[..n])) else {
            return Ok(None);
        };
        match message {
            Message::Request(req) => {
                self.on_request(req);
                Ok(None)
            }
            Message::Response(resp) => {
                let cseq = resp.cseq().ok();
                let call = top_branch(&resp).and_then(|b| self.branches.get(&b).copied());
                match (call, cseq) {
                    (Some(i), Some(c)) if c.method == Method::Invite => {
                        self.on_invite_response(i, &resp);
                        Ok(None)
                    }
                    (Some(i), Some(c)) if c.method == Method::Bye => {
                        self.on_bye_response(i, &resp);
                        Ok(None)
                    }
                    _ => Ok(Some(Message::Response(resp))),
                }
            }
        }
    }

    /// Places `n` calls from the caller to the callee extension, at most `rate` new
    /// INVITEs a second and `window` unanswered at once; returns each call's relay
    /// addresses once every call is established on both legs.
    pub fn place_calls(
        &mut self,
        n: usize,
        rate: f64,
        window: usize,
        timeout: Duration,
    ) -> io::Result<Vec<Bridged>> {
        let start = Instant::now();
        let deadline = start + timeout;
        let first = self.callers.len();
        while self.callers.len() - first < n || !self.all_established(first) {
            let now = Instant::now();
            if now > deadline {
                return Err(io::Error::other(self.progress(first, n)));
            }
            let placed = self.callers.len() - first;
            let in_flight = self.callers[first..]
                .iter()
                .filter(|c| matches!(c.state, CallerState::Inviting { .. }))
                .count();
            let allowed = ((now - start).as_secs_f64() * rate) as usize + 1;
            if placed < n && placed < allowed && in_flight < window {
                self.invite();
            }
            if let Some(failure) = self.callers[first..].iter().find_map(|c| match &c.state {
                CallerState::Failed(why) => Some(why.clone()),
                _ => None,
            }) {
                return Err(io::Error::other(format!("a call failed: {failure}")));
            }
            self.retransmit(now)?;
            if placed >= n || placed >= allowed || in_flight >= window {
                self.receive()?;
            }
        }
        let callers = self.callers[first..].iter().map(|c| match &c.state {
            CallerState::Established(d) => Some(d.relay),
            _ => None,
        });
        let callees = self
            .callee_order
            .iter()
            .map(|id| (self.callees[id].relay, self.callees[id].payload_type));
        Ok(callers
            .zip(callees)
            .filter_map(|(a, (b, pt))| {
                a.map(|caller_relay| Bridged {
                    caller_relay,
                    callee_relay: b,
                    callee_payload_type: pt,
                })
            })
            .collect())
    }

    fn all_established(&self, first: usize) -> bool {
        let callers = self.callers[first..]
            .iter()
            .all(|c| matches!(c.state, CallerState::Established(_)));
        let callees = self.callees.values().filter(|l| !l.ended).count();
        let acked = self.callees.values().all(|l| l.unacked.is_none());
        callers && callees >= self.callers.len() - first && acked
    }

    fn progress(&self, first: usize, n: usize) -> String {
        let mut counts = [0usize; 5];
        for c in &self.callers[first..] {
            let i = match c.state {
                CallerState::Inviting { .. } => 0,
                CallerState::Established(_) => 1,
                CallerState::Hanging(_) => 2,
                CallerState::Ended => 3,
                CallerState::Failed(_) => 4,
            };
            counts[i] += 1;
        }
        format!(
            "calls not established in time: {n} wanted, {} placed, {} inviting, {} established, {} B legs answered",
            self.callers.len() - first,
            counts[0],
            counts[1],
            self.callees.len()
        )
    }

    fn invite(&mut self) {
        let id = self.next_id();
        let leg = CallerLeg {
            call_id: format!("rtpload-{}-{id}@{}", std::process::id(), self.local.ip()),
            from_tag: format!("rl{id}"),
            cseq: 1,
            branch: String::new(),
            pending: None,
            state: CallerState::Inviting { authorized: false },
        };
        self.callers.push(leg);
        self.send_invite(self.callers.len() - 1, None);
    }

    fn callee_uri(&self) -> String {
        format!("sip:{}@{}", self.callee.user, self.server)
    }

    fn send_invite(&mut self, i: usize, authorization: Option<String>) {
        let branch = self.new_branch();
        let sdp = sdp_offer(self.media.ip, self.media.caller_port);
        let leg = &self.callers[i];
        let request = format!(
            "INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch}\r\nMax-Forwards: 70\r\nFrom: \"rtp_load {i}\" <sip:{user}@{server}>;tag={tag}\r\nTo: <{uri}>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} INVITE\r\nContact: <sip:{user}@{local}>\r\n{auth}Content-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{sdp}",
            uri = self.callee_uri(),
            local = self.local,
            user = self.caller.user,
            server = self.server,
            tag = leg.from_tag,
            call_id = leg.call_id,
            cseq = leg.cseq,
            auth = authorization.map_or(String::new(), |a| format!("Proxy-Authorization: {a}\r\n")),
            len = sdp.len(),
        );
        let out = Outgoing::new(request.into_bytes(), Instant::now());
        self.send(&out.bytes);
        let leg = &mut self.callers[i];
        self.branches.remove(&leg.branch);
        leg.branch = branch.clone();
        leg.pending = Some(out);
        self.branches.insert(branch, i);
    }

    fn on_invite_response(&mut self, i: usize, resp: &Response) {
        let uri = self.callee_uri();
        let leg = &mut self.callers[i];
        if resp.status < 200 {
            if let Some(p) = leg.pending.as_mut() {
                p.answered = true;
            }
            return;
        }
        leg.pending = None;
        if resp.status >= 300 {
            // ACK for a non-2xx final response: same branch, the response's To.
            let ack = format!(
                "ACK {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch}\r\nMax-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} ACK\r\nContent-Length: 0\r\n\r\n",
                local = self.local,
                branch = leg.branch,
                from = header(resp, Known::From),
                to = header(resp, Known::To),
                call_id = leg.call_id,
                cseq = leg.cseq,
            );
            self.send(ack.as_bytes());
            let leg = &mut self.callers[i];
            match (&leg.state, resp.status) {
                (CallerState::Inviting { authorized: false }, 401 | 407) => {
                    let k = if resp.status == 401 {
                        Known::WwwAuthenticate
                    } else {
                        Known::ProxyAuthenticate
                    };
                    match pick_challenge(resp, k) {
                        Ok(challenge) => {
                            leg.cseq += 1;
                            leg.state = CallerState::Inviting { authorized: true };
                            let credentials = challenge.answer(
                                &self.caller.user,
                                &self.caller.password,
                                "INVITE",
                                &uri,
                                &format!("{:016x}", i + 1),
                                1,
                            );
                            self.send_invite(i, Some(credentials.to_string()));
                        }
                        Err(e) => leg.state = CallerState::Failed(e.to_string()),
                    }
                }
                (CallerState::Inviting { .. }, status) => {
                    leg.state = CallerState::Failed(format!("INVITE answered {status}"));
                }
                _ => {}
            }
            return;
        }
        // 2xx: the first one establishes the call; retransmissions get the same ACK.
        if let CallerState::Established(d) | CallerState::Hanging(d) = &leg.state {
            let ack = d.ack.clone();
            self.send(&ack);
            return;
        }
        let relay = match sdp_address(&resp.body) {
            Some(a) => a,
            None => {
                leg.state = CallerState::Failed("200 without a usable SDP answer".into());
                return;
            }
        };
        let target = first_contact(resp).unwrap_or_else(|| self.callee_uri());
        let mut routes: Vec<String> = resp
            .headers
            .list(Known::RecordRoute)
            .map(|r| r.to_string())
            .collect();
        routes.reverse();
        let to = header(resp, Known::To);
        let branch = self.new_branch();
        let leg = &self.callers[i];
        let ack = format!(
            "ACK {target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch}\r\nMax-Forwards: 70\r\n{route}From: \"rtp_load {i}\" <sip:{user}@{server}>;tag={tag}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} ACK\r\nContent-Length: 0\r\n\r\n",
            local = self.local,
            route = route_headers(&routes),
            user = self.caller.user,
            server = self.server,
            tag = leg.from_tag,
            call_id = leg.call_id,
            cseq = leg.cseq,
        )
        .into_bytes();
        self.send(&ack);
        self.callers[i].state = CallerState::Established(Dialog {
            to,
            target,
            routes,
            relay,
            ack,
        });
    }

    fn on_bye_response(&mut self, i: usize, resp: &Response) {
        let leg = &mut self.callers[i];
        if resp.status >= 200 {
            leg.pending = None;
            leg.state = CallerState::Ended;
        }
    }

    /// Sends what is due again; fails when a request has been given up.
    fn retransmit(&mut self, now: Instant) -> io::Result<()> {
        let mut resend = Vec::new();
        for leg in &mut self.callers {
            if let Some(p) = leg.pending.as_mut() {
                match p.due(now) {
                    Ok(true) => resend.push(p.bytes.clone()),
                    Ok(false) => {}
                    Err(()) => {
                        leg.pending = None;
                        leg.state = CallerState::Failed(format!("no answer to {}", leg.call_id));
                    }
                }
            }
        }
        for leg in self.callees.values_mut() {
            if let Some(p) = leg.unacked.as_mut() {
                match p.due(now) {
                    Ok(true) => resend.push(leg.ok.clone()),
                    Ok(false) => {}
                    Err(()) => leg.unacked = None, // never ACKed; switchboard will end it
                }
            }
        }
        for bytes in resend {
            self.send(&bytes);
        }
        Ok(())
    }

    fn on_request(&mut self, req: Request) {
        let call_id = req.call_id().map(|c| c.to_string()).unwrap_or_default();
        match req.method {
            Method::Ack => {
                if let Some(leg) = self.callees.get_mut(&call_id) {
                    leg.unacked = None;
                }
            }
            Method::Invite => self.on_invite(req, call_id),
            Method::Bye => {
                if let Some(leg) = self.callees.get_mut(&call_id) {
                    leg.ended = true;
                    leg.unacked = None;
                }
                if let Some(leg) = self.callers.iter_mut().find(|c| c.call_id == call_id) {
                    leg.state = CallerState::Ended;
                    leg.pending = None;
                }
                self.reply(&req, 200, None);
            }
            // OPTIONS pings, INFO, UPDATE without SDP, NOTIFY, CANCEL of nothing pending.
            _ => {
                self.reply(&req, 200, None);
            }
        }
    }

    fn on_invite(&mut self, req: Request, call_id: String) {
        if let Some(leg) = self.callees.get(&call_id) {
            // The INVITE again, without our To tag: our 200 was late or lost. It gets
            // the same 200 (a new tag would be a second dialog, which switchboard ends).
            let retransmitted = req.to().is_ok_and(|to| to.tag().is_none());
            if retransmitted {
                let ok = leg.ok.clone();
                self.send(&ok);
                return;
            }
            // A re-INVITE (a session refresh, a hold) is answered with the same media.
            if !leg.ended {
                let sdp = sdp_answer(
                    self.media.ip,
                    self.media.callee_port,
                    self.callee_codec,
                    leg.payload_type,
                );
                self.reply(&req, 200, Some(sdp));
            }
            return;
        }
        if self.callers.iter().any(|c| c.call_id == call_id) {
            let sdp = sdp_offer(self.media.ip, self.media.caller_port);
            self.reply(&req, 200, Some(sdp));
            return;
        }
        let (Some(relay), Some(payload_type)) = (
            sdp_address(&req.body),
            offered_payload_type(&req.body, self.callee_codec),
        ) else {
            // No address, or not our codec: the call fails, and says why.
            self.reply(&req, 488, None);
            return;
        };
        let sdp = sdp_answer(
            self.media.ip,
            self.media.callee_port,
            self.callee_codec,
            payload_type,
        );
        let ok = self.reply(&req, 200, Some(sdp));
        self.callees.insert(
            call_id.clone(),
            CalleeLeg {
                relay,
                payload_type,
                unacked: Some(Outgoing::new(ok.clone(), Instant::now())),
                ok,
                ended: false,
            },
        );
        self.callee_order.push(call_id);
    }

    /// Answers a request; returns the bytes sent.
    fn reply(&mut self, req: &Request, status: u16, sdp: Option<String>) -> Vec<u8> {
        let mut resp = Response::to_request(req, status, switchboard::sip::reason_phrase(status));
        resp.set_to_tag(&format!("rlb{}", self.next_id()));
        if req.method == Method::Invite && status < 300 {
            resp.headers.push(
                Known::Contact,
                format!("<sip:{}@{}>", self.callee.user, self.local),
            );
        }
        if let Some(sdp) = sdp {
            resp.set_body("application/sdp", sdp);
        }
        let bytes = resp.to_bytes();
        self.send(&bytes);
        bytes
    }

    /// Answers whatever comes until `stop` is set (keeps calls alive during the media
    /// run: OPTIONS pings, session refreshes, retransmissions).
    pub fn serve(&mut self, stop: &AtomicBool) -> io::Result<()> {
        while !stop.load(Ordering::Relaxed) {
            self.retransmit(Instant::now())?;
            self.receive()?;
        }
        Ok(())
    }

    /// Hangs up every established call from the caller's side and waits for the BYEs to
    /// be answered and for switchboard's BYEs to the callee. Returns how many calls did
    /// not end cleanly.
    pub fn hang_up_all(&mut self, rate: f64, timeout: Duration) -> io::Result<usize> {
        let start = Instant::now();
        let deadline = start + timeout;
        let mut to_hang: Vec<usize> = self
            .callers
            .iter()
            .enumerate()
            .filter(|(_, c)| matches!(c.state, CallerState::Established(_)))
            .map(|(i, _)| i)
            .collect();
        to_hang.reverse();
        let mut sent = 0usize;
        loop {
            let now = Instant::now();
            let allowed = ((now - start).as_secs_f64() * rate) as usize + 1;
            while sent < allowed {
                let Some(i) = to_hang.pop() else { break };
                self.send_bye(i);
                sent += 1;
            }
            let callers_done = self
                .callers
                .iter()
                .all(|c| matches!(c.state, CallerState::Ended | CallerState::Failed(_)));
            let callees_done = self.callees.values().all(|l| l.ended);
            if to_hang.is_empty() && callers_done && callees_done {
                break;
            }
            if now > deadline {
                break;
            }
            self.retransmit(now)?;
            self.receive()?;
        }
        let unclean = self
            .callers
            .iter()
            .filter(|c| !matches!(c.state, CallerState::Ended))
            .count()
            + self.callees.values().filter(|l| !l.ended).count();
        self.callers.clear();
        self.branches.clear();
        self.callees.clear();
        self.callee_order.clear();
        Ok(unclean)
    }

    fn send_bye(&mut self, i: usize) {
        let CallerState::Established(dialog) = &self.callers[i].state else {
            return;
        };
        let dialog = dialog.clone();
        let branch = self.new_branch();
        let leg = &mut self.callers[i];
        leg.cseq += 1;
        let request = format!(
            "BYE {target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch}\r\nMax-Forwards: 70\r\n{route}From: \"rtp_load {i}\" <sip:{user}@{server}>;tag={tag}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} BYE\r\nContent-Length: 0\r\n\r\n",
            target = dialog.target,
            local = self.local,
            route = route_headers(&dialog.routes),
            user = self.caller.user,
            server = self.server,
            tag = leg.from_tag,
            to = dialog.to,
            call_id = leg.call_id,
            cseq = leg.cseq,
        );
        let out = Outgoing::new(request.into_bytes(), Instant::now());
        let _ = self.sock.send_to(&out.bytes, self.server);
        let leg = &mut self.callers[i];
        self.branches.remove(&leg.branch);
        leg.branch = branch.clone();
        leg.pending = Some(out);
        leg.state = CallerState::Hanging(dialog);
        self.branches.insert(branch, i);
    }
}

fn top_branch(resp: &Response) -> Option<String> {
    resp.top_via().ok()?.branch().map(str::to_owned)
}

fn header(resp: &Response, k: Known) -> String {
    resp.headers
        .get(k)
        .map(|v| v.to_string())
        .unwrap_or_default()
}

fn first_contact(resp: &Response) -> Option<String> {
    let contacts = resp.contacts().ok()??;
    match contacts {
        switchboard::sip::Contacts::List(list) => list.first().map(|c| c.uri.to_string()),
        switchboard::sip::Contacts::Star => None,
    }
}

fn route_headers(routes: &[String]) -> String {
    routes.iter().map(|r| format!("Route: {r}\r\n")).collect()
}

/// The MD5 challenge if one is offered (what this agent is configured for), else the
/// first one.
fn pick_challenge(resp: &Response, k: Known) -> io::Result<Challenge> {
    let challenges: Vec<Challenge> = resp
        .headers
        .get_all(k)
        .filter_map(|v| Challenge::parse(v).ok())
        .collect();
    challenges
        .iter()
        .find(|c| c.algorithm == DigestAlgorithm::Md5)
        .or(challenges.first())
        .cloned()
        .ok_or_else(|| io::Error::other(format!("{} without a usable challenge", resp.status)))
}

/// A PCMU-only audio offer or answer at `ip:port`.
fn sdp_offer(ip: IpAddr, port: u16) -> String {
    let family = if ip.is_ipv6() { "IP6" } else { "IP4" };
    format!(
        "v=0\r\no=rtp_load 1 1 IN {family} {ip}\r\ns=rtp_load\r\nc=IN {family} {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n"
    )
}

/// The callee's answer: one codec at `ip:port`. PCMU is the offer above, byte for byte,
/// so relayed runs stay what they were.
fn sdp_answer(ip: IpAddr, port: u16, codec: CodecKind, payload_type: u8) -> String {
    let rtpmap = match codec {
        CodecKind::Pcmu => return sdp_offer(ip, port),
        CodecKind::Opus => format!(
            "a=rtpmap:{payload_type} opus/48000/2\r\na=fmtp:{payload_type} useinbandfec=1\r\n"
        ),
        other => format!("a=rtpmap:{payload_type} {}/8000\r\n", other.name()),
    };
    let family = if ip.is_ipv6() { "IP6" } else { "IP4" };
    format!(
        "v=0\r\no=rtp_load 1 1 IN {family} {ip}\r\ns=rtp_load\r\nc=IN {family} {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP {payload_type}\r\n{rtpmap}a=ptime:20\r\na=sendrecv\r\n"
    )
}

/// The payload type an SDP offer gives `codec` in its audio stream: the one its
/// `a=rtpmap` names, or the static one (RFC 3551) listed without an rtpmap.
fn offered_payload_type(body: &[u8], codec: CodecKind) -> Option<u8> {
    let text = std::str::from_utf8(body).ok()?;
    let mut formats: Vec<u8> = Vec::new();
    let mut in_audio = false;
    let mut mapped = None;
    for line in text.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            if !formats.is_empty() {
                break; // only the first audio stream is relayed
            }
            in_audio = m.starts_with("audio ");
            if in_audio {
                formats = m
                    .split_whitespace()
                    .skip(3)
                    .filter_map(|f| f.parse().ok())
                    .collect();
            }
        } else if let Some(map) = line.strip_prefix("a=rtpmap:")
            && in_audio
            && let Some((pt, kind)) = rtpmap(map)
            && kind == codec
        {
            mapped = Some(pt);
        }
    }
    let listed = |pt: u8| formats.contains(&pt).then_some(pt);
    mapped
        .and_then(listed)
        .or_else(|| codec.static_payload_type().and_then(listed))
}

/// An `a=rtpmap:` value (`96 opus/48000/2`) of a codec we know.
fn rtpmap(value: &str) -> Option<(u8, CodecKind)> {
    let (pt, encoding) = value.split_once(' ')?;
    let mut parts = encoding.trim().split('/');
    let name = parts.next()?;
    let clock: u32 = parts.next()?.parse().ok()?;
    let channels: u16 = parts.next().map_or(Some(0), |c| c.parse().ok())?;
    Some((
        pt.parse().ok()?,
        CodecKind::from_sdp(name, clock, channels)?,
    ))
}

/// Where an SDP body wants audio sent: the audio stream's port and its connection
/// address (media-level `c=` over session-level).
fn sdp_address(body: &[u8]) -> Option<SocketAddr> {
    let text = std::str::from_utf8(body).ok()?;
    let mut session_ip = None;
    let mut media_ip = None;
    let mut port = None;
    let mut in_audio = false;
    for line in text.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            in_audio = m.starts_with("audio ") && port.is_none();
            if in_audio {
                port = m.split_whitespace().nth(1)?.parse::<u16>().ok();
            }
        } else if let Some(c) = line.strip_prefix("c=") {
            let ip: IpAddr = c.split_whitespace().nth(2)?.parse().ok()?;
            if in_audio {
                media_ip = Some(ip);
            } else if port.is_none() {
                session_ip = Some(ip);
            }
        }
    }
    Some(SocketAddr::new(media_ip.or(session_ip)?, port?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdp_address_prefers_the_audio_stream_connection() {
        let session_only = b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\n";
        assert_eq!(
            sdp_address(session_only),
            Some("10.0.0.1:30000".parse().unwrap())
        );
        let media_level = b"v=0\r\nc=IN IP4 10.0.0.1\r\nm=video 4000 RTP/AVP 96\r\nc=IN IP4 10.0.0.9\r\nm=audio 30002 RTP/AVP 0\r\nc=IN IP4 10.0.0.2\r\n";
        assert_eq!(
            sdp_address(media_level),
            Some("10.0.0.2:30002".parse().unwrap())
        );
        assert_eq!(sdp_address(b"v=0\r\nm=audio 1 RTP/AVP 0\r\n"), None);
        assert_eq!(sdp_address(b"\xff\xfe"), None);
    }

    #[test]
    fn our_offer_reads_back_as_our_address() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            sdp_address(sdp_offer(ip, 41000).as_bytes()),
            Some(SocketAddr::new(ip, 41000))
        );
    }

    #[test]
    fn the_callee_answers_with_the_offered_payload_type_of_its_codec() {
        let offer = b"v=0\r\no=sb 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0 8 9 96 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:9 G722/8000\r\na=rtpmap:96 OPUS/48000/2\r\na=rtpmap:101 telephone-event/8000\r\n";
        assert_eq!(offered_payload_type(offer, CodecKind::Pcmu), Some(0));
        assert_eq!(offered_payload_type(offer, CodecKind::Pcma), Some(8));
        assert_eq!(offered_payload_type(offer, CodecKind::G722), Some(9));
        assert_eq!(offered_payload_type(offer, CodecKind::Opus), Some(96));
        let pcmu_only = b"v=0\r\nm=audio 20000 RTP/AVP 0\r\n";
        assert_eq!(offered_payload_type(pcmu_only, CodecKind::Pcmu), Some(0));
        assert_eq!(offered_payload_type(pcmu_only, CodecKind::Opus), None);
        assert_eq!(offered_payload_type(pcmu_only, CodecKind::G722), None);

        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            sdp_answer(ip, 4000, CodecKind::Pcmu, 0),
            sdp_offer(ip, 4000)
        );
        let opus = sdp_answer(ip, 4000, CodecKind::Opus, 96);
        assert!(opus.contains("m=audio 4000 RTP/AVP 96\r\na=rtpmap:96 opus/48000/2\r\n"));
        assert_eq!(
            offered_payload_type(opus.as_bytes(), CodecKind::Opus),
            Some(96)
        );
        let g722 = sdp_answer(ip, 4000, CodecKind::G722, 9);
        assert!(g722.contains("m=audio 4000 RTP/AVP 9\r\na=rtpmap:9 G722/8000\r\n"));
        assert_eq!(
            sdp_address(g722.as_bytes()),
            Some(SocketAddr::new(ip, 4000))
        );
    }

    #[test]
    fn retransmission_doubles_to_t2_and_gives_up_after_seven_sends() {
        let t0 = Instant::now();
        let mut out = Outgoing::new(Vec::new(), t0);
        assert_eq!(out.due(t0), Ok(false));
        let mut at = t0;
        let mut gaps = Vec::new();
        loop {
            let next = out.next_send;
            gaps.push(next - at);
            at = next;
            match out.due(at) {
                Ok(true) => {}
                Ok(false) => panic!("not due at its own deadline"),
                Err(()) => break,
            }
        }
        let ms: Vec<u128> = gaps.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, [500, 1000, 2000, 4000, 4000, 4000, 4000]);
        out.answered = true;
        assert_eq!(out.due(at + T2), Ok(false));
    }
}
