//! The SIP core: one task per shard, owning the transactions (and, through the
//! registrar and the B2BUA, the dialogs) of the Call-IDs routed to it. It feeds
//! received messages and timer expiries into the sans-IO transaction layer, sends what
//! the layer emits, and answers the layer's events.

use crate::sip::checks::{Capabilities, check_request, rejection_response, stateless_tag};
use crate::sip::transaction::{Event, Output, TransactionLayer, TxKey};
use crate::sip::{Known, Message, Method, Request, Response, reason_phrase};
use crate::transport::{Hub, Inbound};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// What every shard shares: where to send, what the server is and supports.
pub struct CoreContext {
    pub hub: Arc<Hub>,
    pub caps: Capabilities,
    /// Server / User-Agent header value.
    pub user_agent: String,
}

pub struct Shard {
    index: usize,
    ctx: Arc<CoreContext>,
    transactions: TransactionLayer,
}

impl Shard {
    pub fn new(index: usize, ctx: Arc<CoreContext>, transactions: TransactionLayer) -> Shard {
        Shard {
            index,
            ctx,
            transactions,
        }
    }

    /// Runs until shutdown, or until every receive task has gone.
    pub async fn run(
        mut self,
        mut inbound: mpsc::Receiver<Inbound>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        tracing::debug!(shard = self.index, "SIP core shard started");
        loop {
            let deadline = self.transactions.poll_timeout().map(Instant::from_std);
            tokio::select! {
                msg = inbound.recv() => match msg {
                    Some(m) => self.on_inbound(m),
                    None => break,
                },
                _ = sleep_until(deadline), if deadline.is_some() => {
                    self.transactions.handle_timeout(std::time::Instant::now());
                }
                _ = shutdown.wait_for(|s| *s) => break,
            }
            self.flush();
        }
    }

    fn on_inbound(&mut self, inbound: Inbound) {
        let now = std::time::Instant::now();
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
            Event::Request { key, request, .. } => self.on_request(key, request),
            Event::Ack { .. } => {}
            Event::Response { .. } => {}
            Event::Timeout { key, timer } => tracing::debug!(%key, ?timer, "transaction timed out"),
            Event::TransportError { key } => tracing::debug!(%key, "transport error"),
            Event::Terminated { .. } => {}
        }
    }

    fn on_request(&mut self, key: TxKey, req: Request) {
        if let Err(rejection) = check_request(&req, &self.ctx.caps) {
            let resp = rejection_response(&req, &rejection);
            self.respond(key, resp);
            return;
        }
        match req.method {
            Method::Options => {
                let mut resp = self.response(&req, 200);
                resp.headers
                    .push(Known::Allow, self.ctx.caps.allow_header());
                resp.headers.push(Known::Accept, crate::sip::checks::ACCEPT);
                resp.headers
                    .push(Known::Supported, self.ctx.caps.supported_header());
                resp.headers.push(Known::AcceptLanguage, "en");
                self.respond(key, resp);
            }
            _ => {
                let resp = self.response(&req, 501);
                self.respond(key, resp);
            }
        }
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
