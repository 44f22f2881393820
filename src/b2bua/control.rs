//! The dialplan's side of a call: a [`CallHandle`] sends the script's operations to the
//! shard that owns the call and waits for the outcome, so a script waiting in `dial`
//! holds no lock and blocks nothing.

use crate::dialplan::call::{
    CallControl, CallError, CallInfo, DialRequest, DialResult, DialStatus, DigitsRequest,
    PlayRequest, PlayResult, RecordRequest, RecordResult, RecordStop, Sound,
};
use crate::media::music::Music;
use crate::media::prompts::Prompts;
use crate::media::recorder::Recorder;
use crate::media::recording::{Limits, Outcome, Stopped};
use crate::media::speaker::Item;
use crate::media::tone::Tone;
use crate::media::{Side, listener::TAP_RATE};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Key presses buffered for the script (type-ahead); more are dropped.
pub const DIGIT_BUFFER: usize = 64;

/// One operation a script asked for, with where to send its outcome.
#[derive(Debug)]
pub enum Op {
    Dial(DialRequest, oneshot::Sender<DialResult>),
    Answer(oneshot::Sender<Result<(), CallError>>),
    Reject(u16, Option<String>, oneshot::Sender<Result<(), CallError>>),
    Redirect(String, oneshot::Sender<Result<(), CallError>>),
    Hangup(oneshot::Sender<Result<(), CallError>>),
    /// Say these to the caller; the sender hears true at the end, false if stopped,
    /// and is dropped when the call cannot play.
    Play(Vec<Item>, oneshot::Sender<bool>),
    StopPlaying,
    /// Record the caller into the recorder's file.
    Record(Recorder, Limits, oneshot::Sender<std::io::Result<Outcome>>),
    StopRecording,
    /// Record both parties until the call ends.
    RecordCall(Recorder, oneshot::Sender<Result<(), CallError>>),
    /// The music a held party of this call hears (`None`: silence).
    Music(Option<Arc<Music>>, oneshot::Sender<Result<(), CallError>>),
    /// A key pressed on a leg's phone (from the media task, or a SIP INFO).
    Digit(Side, char),
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
    /// Keys the caller pressed, in order.
    pub(super) digits: mpsc::Receiver<char>,
    pub(super) prompts: Arc<Prompts>,
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

    /// The prompts, tones and silences as items to play; files are read off the
    /// async threads.
    async fn items(&self, sounds: Vec<Sound>) -> Result<Vec<Item>, CallError> {
        let prompts = self.prompts.clone();
        let load = move || {
            sounds
                .into_iter()
                .map(|sound| match sound {
                    Sound::Prompt(name) => prompts
                        .load(&name)
                        .map(Item::Clip)
                        .map_err(|e| CallError::Failed(e.to_string())),
                    Sound::Tone(name, length) => name
                        .parse::<Tone>()
                        .map(|tone| Item::Tone(tone, length))
                        .map_err(CallError::Failed),
                    Sound::Silence(length) => Ok(Item::Silence(length)),
                })
                .collect::<Result<Vec<_>, _>>()
        };
        tokio::task::spawn_blocking(load)
            .await
            .map_err(|e| CallError::Failed(e.to_string()))?
    }

    /// Plays `items`; with `interruptible`, the first key press stops it and is
    /// returned.
    async fn play_items(
        &mut self,
        items: Vec<Item>,
        interruptible: bool,
    ) -> Result<PlayResult, CallError> {
        if interruptible && let Ok(digit) = self.digits.try_recv() {
            return Ok(PlayResult {
                completed: false,
                digit: Some(digit),
            });
        }
        let (tx, mut done) = oneshot::channel();
        if !self.send(Op::Play(items, tx)) {
            return Err(CallError::Ended);
        }
        tokio::select! {
            finished = &mut done => match finished {
                Ok(completed) => Ok(PlayResult { completed, digit: None }),
                Err(_) => Err(CallError::Ended),
            },
            Some(digit) = self.digits.recv(), if interruptible => {
                self.send(Op::StopPlaying);
                Ok(PlayResult { completed: false, digit: Some(digit) })
            }
        }
    }

    /// Opens a WAV file for a recording, creating its folder (blocking work).
    async fn recorder(file: PathBuf, channels: u16) -> Result<Recorder, CallError> {
        tokio::task::spawn_blocking(move || {
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir)?;
            }
            Recorder::start(&file, TAP_RATE, channels)
        })
        .await
        .map_err(|e| CallError::Failed(e.to_string()))?
        .map_err(|e| CallError::Failed(format!("cannot record: {e}")))
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

    async fn play(&mut self, request: PlayRequest) -> Result<PlayResult, CallError> {
        let items = self.items(request.sounds).await?;
        self.play_items(items, request.interruptible).await
    }

    async fn read_digits(&mut self, request: DigitsRequest) -> Result<String, CallError> {
        let mut collected = String::new();
        let mut next = None;
        if !request.prompt.is_empty() {
            let items = self.items(request.prompt).await?;
            next = self.play_items(items, true).await?.digit;
        }
        while collected.chars().count() < request.max {
            let digit = match next.take() {
                Some(d) => d,
                None => match tokio::time::timeout(request.timeout, self.digits.recv()).await {
                    Ok(Some(d)) => d,
                    Ok(None) => return Err(CallError::Ended),
                    Err(_) => break,
                },
            };
            if request.terminators.contains(digit) {
                break;
            }
            collected.push(digit);
        }
        Ok(collected)
    }

    async fn record(&mut self, request: RecordRequest) -> Result<RecordResult, CallError> {
        if request.beep {
            self.play_items(
                vec![Item::Tone(Tone::Beep, Duration::from_millis(300))],
                false,
            )
            .await?;
        }
        // Keys pressed before the recording started do not stop it.
        while self.digits.try_recv().is_ok() {}
        let recorder = Self::recorder(request.file.clone(), 1).await?;
        let limits = Limits {
            max: request.max,
            silence: request.silence,
        };
        let (tx, mut done) = oneshot::channel();
        if !self.send(Op::Record(recorder, limits, tx)) {
            return Err(CallError::Ended);
        }
        let mut terminator = None;
        let outcome = loop {
            tokio::select! {
                outcome = &mut done => break outcome,
                Some(digit) = self.digits.recv(), if terminator.is_none() => {
                    if request.terminators.contains(digit) {
                        terminator = Some(digit);
                        self.send(Op::StopRecording);
                    }
                }
            }
        };
        let outcome = outcome
            .map_err(|_| CallError::Ended)?
            .map_err(|e| CallError::Failed(format!("recording failed: {e}")))?;
        let reason = match (outcome.stopped, terminator) {
            (Stopped::Asked, Some(digit)) => RecordStop::Terminator(digit),
            (Stopped::Silence, _) => RecordStop::Silence,
            (Stopped::MaxDuration, _) => RecordStop::MaxDuration,
            _ => RecordStop::Hangup,
        };
        Ok(RecordResult {
            file: request.file,
            duration: outcome.duration,
            reason,
        })
    }

    async fn set_music(&mut self, class: Option<String>) -> Result<(), CallError> {
        let music = match class {
            Some(class) => {
                let prompts = self.prompts.clone();
                let load = move || {
                    let music = prompts.music(&class)?;
                    // Encoded now, while the script waits, not in the media task.
                    music.prepare();
                    Ok::<_, crate::media::prompts::PromptError>(music)
                };
                let music = tokio::task::spawn_blocking(load)
                    .await
                    .map_err(|e| CallError::Failed(e.to_string()))?;
                Some(music.map_err(|e| CallError::Failed(format!("call:music: {e}")))?)
            }
            None => None,
        };
        self.simple(|tx| Op::Music(music, tx)).await
    }

    async fn record_call(&mut self, file: PathBuf) -> Result<(), CallError> {
        let recorder = Self::recorder(file, 2).await?;
        self.simple(|tx| Op::RecordCall(recorder, tx)).await
    }
}
