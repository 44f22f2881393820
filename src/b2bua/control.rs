//! The dialplan's side of a call: a [`CallHandle`] sends the script's operations to the
//! shard that owns the call and waits for the outcome, so a script waiting in `dial`
//! holds no lock and blocks nothing.

use crate::dialplan::call::{
    CallControl, CallError, CallInfo, DialRequest, DialResult, DialStatus,
};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// One operation a script asked for, with where to send its outcome.
#[derive(Debug)]
pub enum Op {
    Dial(DialRequest, oneshot::Sender<DialResult>),
    Answer(oneshot::Sender<Result<(), CallError>>),
    Reject(u16, Option<String>, oneshot::Sender<Result<(), CallError>>),
    Redirect(String, oneshot::Sender<Result<(), CallError>>),
    Hangup(oneshot::Sender<Result<(), CallError>>),
    /// `route()` returned (or failed, with the message to log): whatever the script
    /// left unfinished is finished by the B2BUA.
    RouteDone(Result<(), String>),
}

#[derive(Debug)]
pub struct CallCommand {
    pub call: u64,
    pub op: Op,
}

/// Given to the dialplan engine for one call.
pub struct CallHandle {
    pub(super) call: u64,
    pub(super) info: CallInfo,
    pub(super) commands: mpsc::UnboundedSender<CallCommand>,
}

impl CallHandle {
    fn send(&self, op: Op) -> bool {
        self.commands
            .send(CallCommand {
                call: self.call,
                op,
            })
            .is_ok()
    }

    /// Tells the shard the script is over.
    pub fn finish(&self, outcome: Result<(), String>) {
        self.send(Op::RouteDone(outcome));
    }

    async fn simple(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<(), CallError>>) -> Op,
    ) -> Result<(), CallError> {
        let (tx, rx) = oneshot::channel();
        if !self.send(make(tx)) {
            return Err(CallError::Ended);
        }
        rx.await.unwrap_or(Err(CallError::Ended))
    }
}

impl CallControl for CallHandle {
    fn info(&self) -> &CallInfo {
        &self.info
    }

    async fn dial(&mut self, request: DialRequest) -> DialResult {
        let (tx, rx) = oneshot::channel();
        let ended = DialResult {
            status: DialStatus::Cancelled,
            sip_code: None,
            answered_by: None,
            duration: Duration::ZERO,
        };
        if !self.send(Op::Dial(request, tx)) {
            return ended;
        }
        rx.await.unwrap_or(ended)
    }

    async fn answer(&mut self) -> Result<(), CallError> {
        self.simple(Op::Answer).await
    }

    async fn reject(&mut self, code: u16, reason: Option<String>) -> Result<(), CallError> {
        self.simple(|tx| Op::Reject(code, reason, tx)).await
    }

    async fn redirect(&mut self, uri: String) -> Result<(), CallError> {
        self.simple(|tx| Op::Redirect(uri, tx)).await
    }

    async fn hangup(&mut self) -> Result<(), CallError> {
        self.simple(Op::Hangup).await
    }
}
