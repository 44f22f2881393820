//! Running `route(call)` for one call.
//!
//! The script runs as a Lua coroutine. A call operation (`call:dial{...}`) yields the
//! coroutine with the operation's name and arguments; the engine performs it on the
//! [`CallControl`] (awaiting it: a dial can take minutes), then resumes the coroutine
//! with the result. So the Lua state is only touched between awaits and a waiting
//! script costs no thread and burns no instructions.

use super::api::{self, Op};
use super::call::{CallControl, CallError, DialResult, DialStatus, RecordStop};
use super::load::{Dialplan, Instance};
use super::sandbox::unlimited;
use super::{DialplanError, LogLine, RouteOutcome, Services};
use mlua::thread::ThreadStatus;
use mlua::{IntoLuaMulti, Lua, MultiValue, Table};
use std::path::PathBuf;
use tracing::Instrument;

/// Where the call is, as far as the script's operations are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not answered: the caller hears ringing.
    Ringing,
    /// Answered by `call:answer()`, not bridged.
    Answered,
    /// Nothing more can happen: bridged and ended, rejected, redirected, hung up, or the
    /// caller left.
    Over,
}

/// What to do with the script after an operation.
enum Step {
    /// Resume the script with these values (`true, result` or `false, message`).
    Resume(MultiValue),
    /// The call is over and the script asked for something that needs it: stop quietly.
    Stop,
}

impl Dialplan {
    /// Runs the dialplan for one call. Every way it can end is handled here: when the
    /// script returns without deciding, the caller gets the failure of the last dial
    /// (486, 480, 404...) or 404 when nothing was dialed; when the script fails, 500
    /// (or a hangup if the call was answered) and the error is logged with file, line
    /// and traceback. Dropping the future (the caller hung up) is safe at any await.
    pub async fn run<C: CallControl>(&self, call: &mut C, services: &Services) -> RouteOutcome {
        let span = tracing::info_span!("dialplan", call = %call.info().id);
        self.drive(call, services).instrument(span).await
    }

    async fn drive<C: CallControl>(&self, call: &mut C, services: &Services) -> RouteOutcome {
        let mut run = Run {
            phase: Phase::Ringing,
            last_dial: None,
            recordings: services.recordings.clone(),
        };
        let instance = match self.instantiate(services) {
            Ok(instance) => instance,
            Err(error) => return run.fail(call, error, Vec::new()).await,
        };
        let mut call_object = None;
        let result = self
            .script(&mut run, call, &instance, &mut call_object)
            .await;
        let vars = call_object
            .as_ref()
            .map(|t| unlimited(&instance.warm.lua, || Ok(api::read_vars(t))).unwrap_or_default())
            .unwrap_or_default();
        match result {
            Ok(()) => {
                let logs = self.release(instance);
                run.finish(call).await;
                RouteOutcome {
                    vars,
                    logs,
                    error: None,
                }
            }
            Err(error) => {
                // A state that saw an error is not reused.
                let (logs, _) = instance.warm.finish();
                RouteOutcome {
                    vars,
                    ..run.fail(call, error, logs).await
                }
            }
        }
    }

    /// Runs `route(call)` to its end, performing its operations; `call_object` is the
    /// script's `call` once it exists, for its vars.
    async fn script<C: CallControl>(
        &self,
        run: &mut Run,
        call: &mut C,
        instance: &Instance,
        call_object: &mut Option<Table>,
    ) -> Result<(), DialplanError> {
        let lua = &instance.warm.lua;
        let err = |e: mlua::Error| self.code().error(&e);
        let object = instance.warm.bind(call.info()).map_err(err)?;
        *call_object = Some(object.clone());
        let thread = lua.create_thread(instance.route.clone()).map_err(err)?;
        let mut resume_with = MultiValue::from_vec(vec![mlua::Value::Table(object)]);
        loop {
            let yielded = thread.resume::<MultiValue>(resume_with).map_err(err)?;
            if thread.status() != ThreadStatus::Resumable {
                return Ok(());
            }
            // Reading the arguments runs no script code (raw reads, no metamethods).
            let op = unlimited(lua, || Ok(api::parse_op(lua, yielded))).map_err(err)?;
            let step = match op {
                Ok(op) => run.perform(call, lua, op).await,
                Err(message) => Step::Resume(refusal(lua, message)),
            };
            match step {
                Step::Resume(values) => resume_with = values,
                Step::Stop => {
                    tracing::debug!("the call is over; the script stops here");
                    return Ok(());
                }
            }
        }
    }
}

/// The engine's side of one call.
struct Run {
    phase: Phase,
    last_dial: Option<DialResult>,
    /// Where recordings go (see [`Services::recordings`]).
    recordings: Option<PathBuf>,
}

impl Run {
    async fn perform<C: CallControl>(&mut self, call: &mut C, lua: &Lua, op: Op) -> Step {
        if self.phase == Phase::Over {
            return match op {
                Op::Hangup => Step::Resume(success(lua, ())),
                _ => Step::Stop,
            };
        }
        match op {
            Op::Dial(request) => {
                let result = call.dial(request).await;
                if matches!(result.status, DialStatus::Answered | DialStatus::Cancelled) {
                    self.phase = Phase::Over;
                }
                let fields = api::dial_result_fields(&result);
                self.last_dial = Some(result);
                Step::Resume(success(lua, fields))
            }
            Op::Answer if self.phase == Phase::Answered => Step::Resume(success(lua, ())),
            Op::Answer => self.outcome(lua, call.answer().await, Phase::Answered),
            Op::Reject(..) | Op::Redirect(_) if self.phase == Phase::Answered => {
                Step::Resume(refusal(
                    lua,
                    "the call is already answered: end it with call:hangup()".into(),
                ))
            }
            Op::Reject(code, reason) => {
                self.outcome(lua, call.reject(code, reason).await, Phase::Over)
            }
            Op::Redirect(uri) => self.outcome(lua, call.redirect(uri).await, Phase::Over),
            // An unanswered call has no BYE to send; refusing it is how it ends.
            Op::Hangup if self.phase == Phase::Ringing => {
                self.outcome(lua, call.reject(480, None).await, Phase::Over)
            }
            Op::Hangup => self.outcome(lua, call.hangup().await, Phase::Over),
            Op::Play(request) => {
                if let Some(stop) = self.answer_for_media(call).await {
                    return stop;
                }
                match call.play(request).await {
                    Ok(result) => table(lua, api::play_result(lua, &result)),
                    Err(e) => self.ended(e),
                }
            }
            Op::ReadDigits(request) => {
                if let Some(stop) = self.answer_for_media(call).await {
                    return stop;
                }
                match call.read_digits(request).await {
                    Ok(digits) => Step::Resume(success(lua, digits)),
                    Err(e) => self.ended(e),
                }
            }
            Op::Record(mut request) => {
                let Some(dir) = &self.recordings else {
                    return Step::Resume(refusal(lua, no_recordings("call:record")));
                };
                let name = request.file.to_string_lossy().into_owned();
                request.file = dir.join(&request.file);
                if let Some(stop) = self.answer_for_media(call).await {
                    return stop;
                }
                match call.record(request).await {
                    Ok(result) => {
                        // The recording is kept: the script may still file it away.
                        if result.reason == RecordStop::Hangup {
                            self.phase = Phase::Over;
                        }
                        table(lua, api::record_result(lua, &name, &result))
                    }
                    Err(e) => self.ended(e),
                }
            }
            // Not answered for either: it applies to the dial that follows.
            Op::Music(class) => {
                let result = call.set_music(class).await;
                let next = self.phase;
                self.outcome(lua, result, next)
            }
            // Not answered for: recording a call is armed before the dial that bridges it.
            Op::RecordCall(file) => {
                let Some(dir) = &self.recordings else {
                    return Step::Resume(refusal(lua, no_recordings("call:record_call")));
                };
                let file = dir.join(file);
                let result = call.record_call(file).await;
                let next = self.phase;
                self.outcome(lua, result, next)
            }
        }
    }

    /// Media needs an answered call: a ringing one is answered first (as Asterisk's
    /// `Playback` does). `Some` when that failed and the script must stop.
    async fn answer_for_media<C: CallControl>(&mut self, call: &mut C) -> Option<Step> {
        if self.phase != Phase::Ringing {
            return None;
        }
        match call.answer().await {
            Ok(()) => {
                self.phase = Phase::Answered;
                None
            }
            Err(e) => Some(self.ended(e)),
        }
    }

    fn outcome(&mut self, lua: &Lua, result: Result<(), CallError>, next: Phase) -> Step {
        match result {
            Ok(()) => {
                self.phase = next;
                Step::Resume(success(lua, ()))
            }
            Err(e) => self.ended(e),
        }
    }

    /// An operation found the call gone (or could not be done): stop the script.
    fn ended(&mut self, e: CallError) -> Step {
        if let CallError::Failed(why) = &e {
            tracing::warn!(error = %why, "call operation failed");
        }
        self.phase = Phase::Over;
        Step::Stop
    }

    /// The script returned (or stopped): end the call if it has not ended.
    async fn finish<C: CallControl>(&mut self, call: &mut C) {
        let result = match self.phase {
            Phase::Over => return,
            Phase::Answered => call.hangup().await,
            Phase::Ringing => {
                let code = self
                    .last_dial
                    .as_ref()
                    .and_then(|r| r.status.fallback_response(r.sip_code))
                    .unwrap_or(404);
                tracing::debug!(code, "route() returned without ending the call");
                call.reject(code, None).await
            }
        };
        self.phase = Phase::Over;
        if let Err(CallError::Failed(why)) = result {
            tracing::warn!(error = %why, "ending the call failed");
        }
    }

    /// The script failed: log it where the call's logs are, then end the call with 500
    /// (or a hangup if it was answered).
    async fn fail<C: CallControl>(
        &mut self,
        call: &mut C,
        error: DialplanError,
        logs: Vec<LogLine>,
    ) -> RouteOutcome {
        tracing::error!(
            traceback = error.traceback.as_deref().unwrap_or(""),
            "dialplan error: {error}"
        );
        let result = match self.phase {
            Phase::Over => Ok(()),
            Phase::Answered => call.hangup().await,
            Phase::Ringing => call.reject(500, None).await,
        };
        self.phase = Phase::Over;
        if let Err(CallError::Failed(why)) = result {
            tracing::warn!(error = %why, "ending the call failed");
        }
        RouteOutcome {
            vars: Default::default(),
            logs,
            error: Some(error),
        }
    }
}

fn success(lua: &Lua, value: impl IntoLuaMulti) -> MultiValue {
    let mut values = value.into_lua_multi(lua).unwrap_or_default();
    values.push_front(mlua::Value::Boolean(true));
    values
}

/// An operation's result table, or the error that kept it from being built (out of
/// memory) raised at the script's line.
fn table(lua: &Lua, built: mlua::Result<Table>) -> Step {
    match built {
        Ok(t) => Step::Resume(success(lua, t)),
        Err(e) => Step::Resume(refusal(lua, e.to_string())),
    }
}

fn no_recordings(what: &str) -> String {
    format!("{what}: this server has no recordings folder configured")
}

/// `false, message`: the prelude raises the message at the script's line.
fn refusal(lua: &Lua, message: String) -> MultiValue {
    (false, message).into_lua_multi(lua).unwrap_or_default()
}
