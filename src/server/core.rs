//! The SIP core: one task per shard, owning the transactions and calls of the Call-IDs
//! routed to it. It feeds received messages, timer expiries and dialplan operations
//! into the sans-IO transaction layer and the B2BUA, sends what they emit, and answers
//! what needs no call: OPTIONS, REGISTER, and requests the checks refuse.

use crate::b2bua::control::CallCommand;
use crate::b2bua::{B2bua, CallSummary};
use crate::registrar::{Admission, AuthVerdict, PingKey, Registrar};
use crate::sip::checks::{Capabilities, check_request, rejection_response, stateless_tag};
use crate::sip::dialog::new_call_id;
use crate::sip::transaction::{Event, Output, Peer, TransactionLayer, TxKey};
use crate::sip::{Known, Message, Method, Request, Response, SipUri, Uri, reason_phrase};
use crate::transport::{Hub, Inbound};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

/// What every shard shares: where to send, what the server is and supports.
pub struct CoreContext {
    pub hub: Arc<Hub>,
    pub caps: Capabilities,
    /// Server / User-Agent header value.
    pub user_agent: String,
    pub registrar: Arc<Registrar>,
}

/// Questions the admin API asks a shard.
pub enum ShardQuery {
    Calls(oneshot::Sender<Vec<CallSummary>>),
}

/// Messages handled per wake-up before the shard looks at its other inputs.
const INBOUND_BATCH: usize = 64;

/// How often a shard purges expired bindings and sends due keep-alive pings.
const HOUSEKEEPING: Duration = Duration::from_secs(5);

pub struct Shard {
    index: usize,
    ctx: Arc<CoreContext>,
    transactions: TransactionLayer,
    b2bua: B2bua,
    /// Keep-alive OPTIONS in flight: what they ping and when they left.
    pings: HashMap<TxKey, (PingKey, std::time::Instant)>,
}

/// The channels a shard reads besides its message queue.
pub struct ShardInputs {
    pub inbound: mpsc::Receiver<Inbound>,
    pub commands: mpsc::UnboundedReceiver<CallCommand>,
    pub queries: mpsc::UnboundedReceiver<ShardQuery>,
    pub shutdown: watch::Receiver<bool>,
}

impl Shard {
    pub fn new(
        index: usize,
        ctx: Arc<CoreContext>,
        transactions: TransactionLayer,
        b2bua: B2bua,
    ) -> Shard {
        Shard {
            index,
            ctx,
            transactions,
            b2bua,
            pings: HashMap::new(),
        }
    }

    /// Runs until shutdown, or until every receive task has gone.
    pub async fn run(mut self, mut inputs: ShardInputs) {
        tracing::debug!(shard = self.index, "SIP core shard started");
        // Only shard 0 does the registrar's housekeeping: it is shared by all shards.
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        loop {
            let deadline = [self.transactions.poll_timeout(), self.b2bua.next_deadline()]
                .into_iter()
                .flatten()
                .min()
                .map(Instant::from_std);
            tokio::select! {
                msg = inputs.inbound.recv() => match msg {
                    Some(m) => {
                        self.on_inbound(m);
                        // Take what else queued meanwhile in the same wake-up.
                        for _ in 1..INBOUND_BATCH {
                            let Ok(m) = inputs.inbound.try_recv() else { break };
                            self.on_inbound(m);
                        }
                    }
                    None => break,
                },
                Some(cmd) = inputs.commands.recv() => self.b2bua.on_command(&mut self.transactions, cmd),
                Some(q) = inputs.queries.recv() => match q {
                    ShardQuery::Calls(reply) => { let _ = reply.send(self.b2bua.summaries()); }
                },
                _ = sleep_until(deadline), if deadline.is_some() => {
                    let now = std::time::Instant::now();
                    self.transactions.handle_timeout(now);
                    self.b2bua.on_timers(&mut self.transactions, now);
                }
                _ = housekeeping.tick(), if self.index == 0 => self.housekeeping(),
                _ = inputs.shutdown.wait_for(|s| *s) => break,
            }
            self.flush();
        }
    }

    fn on_inbound(&mut self, inbound: Inbound) {
        let now = std::time::Instant::now();
        let user_agent = inbound
            .message
            .headers()
            .get(Known::UserAgent)
            .map(|u| u.as_str());
        if self.ctx.registrar.security().admit(
            SystemTime::now(),
            inbound.source.addr.ip(),
            user_agent,
        ) == Admission::Drop
        {
            self.ctx.hub.stats.dropped.inc();
            return;
        }
        match inbound.message {
            Message::Request(req) => {
                self.transactions.handle_request(now, inbound.source, req);
            }
            Message::Response(resp) => {
                self.transactions.handle_response(now, resp);
            }
        }
    }

    /// Sends what the transaction layer produced and handles its events, until both
    /// queues are empty (handling an event may produce more output).
    fn flush(&mut self) {
        while let Some(out) = self.transactions.poll_output() {
            match out {
                Output::Transmit(t) => self.ctx.hub.send(&t.dest, t.bytes),
                Output::Event(e) => self.on_event(e),
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Request {
                key,
                source,
                request,
            } => self.on_request(key, source, request),
            Event::Ack {
                invite, request, ..
            } => self.b2bua.on_ack(&mut self.transactions, invite, &request),
            Event::Response { key, response } => {
                if let Some((ping, sent)) = self.pings.remove(&key) {
                    self.ctx.registrar.ping_result(&ping, Some(sent.elapsed()));
                } else {
                    self.b2bua
                        .on_response(&mut self.transactions, key, response);
                }
            }
            Event::Timeout { key, .. } | Event::TransportError { key } => {
                if let Some((ping, _)) = self.pings.remove(&key) {
                    self.ctx.registrar.ping_result(&ping, None);
                } else {
                    self.b2bua.on_tx_failure(&mut self.transactions, key);
                }
            }
            Event::Terminated { key } => {
                self.pings.remove(&key);
                self.b2bua.on_terminated(key);
            }
        }
    }

    fn on_request(&mut self, key: TxKey, source: Peer, req: Request) {
        if let Err(rejection) = check_request(&req, &self.ctx.caps) {
            let resp = rejection_response(&req, &rejection);
            self.respond(key, resp);
            return;
        }
        let in_dialog = req.to().ok().is_some_and(|t| t.tag().is_some());
        match req.method {
            Method::Options if !in_dialog => {
                let mut resp = self.response(&req, 200);
                resp.headers
                    .push(Known::Allow, self.ctx.caps.allow_header());
                resp.headers.push(Known::Accept, crate::sip::checks::ACCEPT);
                resp.headers
                    .push(Known::Supported, self.ctx.caps.supported_header());
                resp.headers.push(Known::AcceptLanguage, "en");
                self.respond(key, resp);
            }
            Method::Register => {
                let resp = self
                    .ctx
                    .registrar
                    .handle_register(SystemTime::now(), &req, source);
                self.respond(key, resp);
            }
            Method::Cancel => self.b2bua.on_cancel(&mut self.transactions, key, req),
            _ if in_dialog => {
                // Requests inside a dialog were authenticated when it was made.
                if !self
                    .b2bua
                    .on_in_dialog(&mut self.transactions, key, source, req.clone())
                {
                    let resp = self.response(&req, 481);
                    self.respond(key, resp);
                }
            }
            Method::Invite => {
                match self
                    .ctx
                    .registrar
                    .authenticate_request(SystemTime::now(), &req, source)
                {
                    AuthVerdict::Reply(resp) => self.respond(key, resp),
                    AuthVerdict::Authenticated { extension } => {
                        self.b2bua.on_invite(
                            &mut self.transactions,
                            key,
                            source,
                            req,
                            Some(extension),
                        );
                    }
                }
            }
            // BYE, UPDATE, INFO and the like only make sense inside a dialog.
            _ => {
                let resp = self.response(&req, 481);
                self.respond(key, resp);
            }
        }
    }

    /// Purges expired bindings and bans, and sends due keep-alive pings.
    fn housekeeping(&mut self) {
        let now = SystemTime::now();
        let _ = self.ctx.registrar.purge(now);
        let _ = self.ctx.registrar.security().purge(now);
        for ping in self.ctx.registrar.due_pings(now) {
            let req = self.ping_request(&ping.request_uri, &ping.peer);
            match self
                .transactions
                .send_request(std::time::Instant::now(), ping.peer, req)
            {
                Ok(key) => {
                    self.pings
                        .insert(key, (ping.key, std::time::Instant::now()));
                }
                Err(e) => tracing::debug!(error = %e, "keep-alive ping not sent"),
            }
        }
    }

    /// A qualify OPTIONS (outside any dialog) for a registered contact.
    fn ping_request(&self, uri: &Uri, peer: &Peer) -> Request {
        let mut req = Request::new(Method::Options, uri.clone());
        let sent_by = self.ctx.hub.sent_by(peer);
        req.headers.push(Known::Via, sent_by.via());
        req.headers.push(Known::MaxForwards, "70");
        let mut from = crate::sip::NameAddr::new(Uri::Sip(SipUri::new(
            Some("switchboard"),
            sent_by.host,
            sent_by.port,
        )));
        from.set_tag(&crate::sip::dialog::new_tag());
        req.headers.push(Known::From, from.to_string());
        req.headers.push(Known::To, format!("<{uri}>"));
        req.headers
            .push(Known::CallId, new_call_id(&format!("sb{}-", self.index)));
        req.headers.push(Known::CSeq, "1 OPTIONS");
        req.headers
            .push(Known::UserAgent, self.ctx.user_agent.as_str());
        req
    }

    /// A response with the dialog headers copied, a To tag, and our Server header.
    fn response(&self, req: &Request, status: u16) -> Response {
        let mut resp = Response::to_request(req, status, reason_phrase(status));
        resp.set_to_tag(&stateless_tag(&req.headers));
        resp.headers
            .push(Known::Server, self.ctx.user_agent.as_str());
        resp
    }

    fn respond(&mut self, key: TxKey, resp: Response) {
        if let Err(e) = self
            .transactions
            .send_response(std::time::Instant::now(), key, resp)
        {
            tracing::debug!(%key, error = %e, "response not sent");
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
