//! A simulated call: targets behave as the test case says, the caller presses keys
//! at the times it says, time passes on a manual clock (ringing, talking, prompts and
//! recordings take no real time), and everything the dialplan asked for is recorded.
//!
//! Media in the simulation: a prompt lasts as long as its WAV file in the sounds folder
//! when the harness was given one, else one second; tones and silences as long as
//! asked. A key counts for the operation running when it is pressed and is lost
//! otherwise (during a dial, or a prompt nobody may interrupt). The caller never falls
//! silent, so a recording ends at a terminator key, its maximum length, or the hangup.

use super::cases::{Behaviour, Case};
use crate::dialplan::ManualClock;
use crate::dialplan::call::{
    CallControl, CallError, CallInfo, DialRequest, DialResult, DialStatus, DialTarget,
    DigitsRequest, PlayRequest, PlayResult, RecordRequest, RecordResult, RecordStop, Sound,
    Strategy,
};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Where the simulated recordings go: a name only, nothing is written.
pub const RECORDINGS: &str = "/recordings";
/// A prompt's length when the harness has no sounds folder.
pub const PROMPT_LENGTH: Duration = Duration::from_secs(1);

/// How the call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// Still undecided (only seen if the engine misbehaves).
    Open,
    Bridged(String),
    Rejected(u16, Option<String>),
    Redirected(String),
    /// Answered by the script, then hung up.
    HungUp,
    /// The caller gave up while targets rang.
    CallerLeft,
}

impl std::fmt::Display for Ending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ending::Open => f.write_str("still open"),
            Ending::Bridged(t) => write!(f, "bridged to {t}"),
            Ending::Rejected(code, Some(reason)) => write!(f, "rejected {code} {reason}"),
            Ending::Rejected(code, None) => write!(f, "rejected {code}"),
            Ending::Redirected(uri) => write!(f, "redirected to {uri}"),
            Ending::HungUp => f.write_str("answered and hung up"),
            Ending::CallerLeft => f.write_str("the caller hung up"),
        }
    }
}

pub struct SimCall<'c> {
    case: &'c Case,
    clock: Arc<ManualClock>,
    /// The folder prompts are read from for their lengths.
    sounds: Option<&'c Path>,
    /// Time since the call arrived.
    elapsed: Duration,
    /// Keys not yet heard or lost, by time.
    presses: VecDeque<(Duration, char)>,
    pub dials: Vec<DialRequest>,
    /// Every target offered the call, in order.
    pub dialed: Vec<String>,
    /// Every sound started, in order: prompts by name, tones as `tone:<name>`,
    /// silences as `silence`, and `beep` before a recording that asked for one.
    pub played: Vec<String>,
    /// Every recording, as a path under the recordings folder.
    pub recorded: Vec<String>,
    /// What each `read_digits` returned.
    pub digits_read: Vec<String>,
    /// Prompts played that the sounds folder does not have.
    pub missing_prompts: Vec<String>,
    pub answered: bool,
    pub ending: Ending,
}

/// What happened to one target within one attempt.
struct Ring {
    status: DialStatus,
    sip_code: Option<u16>,
    /// When it answered or gave up, from the start of ringing.
    after: Duration,
    talk: Duration,
}

impl<'c> SimCall<'c> {
    /// `sounds`: the folder with the prompts (`sounds/en`), for their lengths.
    pub fn new(case: &'c Case, clock: Arc<ManualClock>, sounds: Option<&'c Path>) -> SimCall<'c> {
        SimCall {
            case,
            clock,
            sounds,
            elapsed: Duration::ZERO,
            presses: case.presses.iter().copied().collect(),
            dials: Vec::new(),
            dialed: Vec::new(),
            played: Vec::new(),
            recorded: Vec::new(),
            digits_read: Vec::new(),
            missing_prompts: Vec::new(),
            answered: false,
            ending: Ending::Open,
        }
    }

    fn pass(&mut self, time: Duration) {
        self.elapsed += time;
        self.clock.advance(time);
    }

    fn ring(&self, target: &DialTarget, timeout: Duration) -> Ring {
        let behaviour = self
            .case
            .targets
            .get(&target.to_string())
            .copied()
            .unwrap_or(Behaviour::Unregistered);
        let failed = |status, sip_code| Ring {
            status,
            sip_code,
            after: Duration::ZERO,
            talk: Duration::ZERO,
        };
        match behaviour {
            Behaviour::Answer { after, talk } if after < timeout => Ring {
                status: DialStatus::Answered,
                sip_code: Some(200),
                after,
                talk,
            },
            // The B2BUA cancels at the timeout and reports 480, as for an unregistered
            // extension; a missing one is 404.
            Behaviour::Answer { .. } | Behaviour::NoAnswer => Ring {
                status: DialStatus::NoAnswer,
                sip_code: Some(480),
                after: timeout,
                talk: Duration::ZERO,
            },
            Behaviour::Busy => failed(DialStatus::Busy, Some(486)),
            Behaviour::Unregistered => failed(DialStatus::Unavailable, Some(480)),
            Behaviour::NotFound => failed(DialStatus::NotFound, Some(404)),
            Behaviour::Reject(code) => failed(DialStatus::of_final_response(code), Some(code)),
        }
    }

    /// When the caller gives up during `ringing` more time, the result that leaves.
    fn caller_leaves_within(&mut self, ringing: Duration) -> Option<DialResult> {
        let patience = self.case.hangup_after?;
        if self.elapsed + ringing < patience {
            return None;
        }
        let waited = patience.saturating_sub(self.elapsed);
        self.pass(waited);
        self.ending = Ending::CallerLeft;
        Some(result(DialStatus::Cancelled, None, None, Duration::ZERO))
    }

    fn bridge(&mut self, target: &DialTarget, ring: &Ring) -> DialResult {
        self.pass(ring.after + ring.talk);
        self.answered = true;
        self.ending = Ending::Bridged(target.to_string());
        result(
            DialStatus::Answered,
            Some(200),
            Some(target.clone()),
            ring.talk,
        )
    }

    fn dial_parallel(&mut self, request: &DialRequest) -> DialResult {
        let rings: Vec<Ring> = request
            .targets
            .iter()
            .map(|t| self.ring(t, request.timeout))
            .collect();
        self.dialed
            .extend(request.targets.iter().map(|t| t.to_string()));
        let winner = rings
            .iter()
            .enumerate()
            .filter(|(_, r)| r.status == DialStatus::Answered)
            .min_by_key(|(_, r)| r.after);
        if let Some((i, ring)) = winner {
            if let Some(left) = self.caller_leaves_within(ring.after) {
                return left;
            }
            return self.bridge(&request.targets[i], ring);
        }
        let ringing = rings.iter().map(|r| r.after).max().unwrap_or_default();
        if let Some(left) = self.caller_leaves_within(ringing) {
            return left;
        }
        self.pass(ringing);
        failure(&rings)
    }

    fn dial_sequential(&mut self, request: &DialRequest) -> DialResult {
        let mut rings = Vec::new();
        for target in &request.targets {
            self.dialed.push(target.to_string());
            let ring = self.ring(target, request.timeout);
            if let Some(left) = self.caller_leaves_within(ring.after) {
                return left;
            }
            if ring.status == DialStatus::Answered {
                return self.bridge(target, &ring);
            }
            self.pass(ring.after);
            rings.push(ring);
        }
        failure(&rings)
    }
}

/// Media.
impl SimCall<'_> {
    fn length(&mut self, sound: &Sound) -> Duration {
        match sound {
            Sound::Tone(_, length) | Sound::Silence(length) => *length,
            Sound::Prompt(name) => {
                let Some(dir) = self.sounds else {
                    return PROMPT_LENGTH;
                };
                let file = if name.ends_with(".wav") {
                    dir.join(name)
                } else {
                    dir.join(format!("{name}.wav"))
                };
                match crate::media::wav::read(&file) {
                    Ok(wav) => wav.duration(),
                    Err(_) => {
                        self.missing_prompts.push(name.clone());
                        PROMPT_LENGTH
                    }
                }
            }
        }
    }

    /// Keys pressed before now went unheard.
    fn lose_presses_before(&mut self, time: Duration) {
        while self.presses.front().is_some_and(|&(at, _)| at < time) {
            self.presses.pop_front();
        }
    }

    /// The next key pressed before `end`, taken.
    fn press_before(&mut self, end: Duration) -> Option<(Duration, char)> {
        if self.presses.front().is_some_and(|&(at, _)| at < end) {
            self.presses.pop_front()
        } else {
            None
        }
    }

    /// When the caller hangs up, if that is before `end`.
    fn hangup_before(&self, end: Duration) -> Option<Duration> {
        let at = self.case.hangup_after?.max(self.elapsed);
        (at < end).then_some(at)
    }

    /// The caller hung up at `at`.
    fn caller_leaves(&mut self, at: Duration) -> CallError {
        self.pass(at.saturating_sub(self.elapsed));
        self.ending = Ending::CallerLeft;
        CallError::Ended
    }

    /// Plays `sounds` in turn; with `interruptible`, the first key stops them and is
    /// returned.
    fn play_sounds(
        &mut self,
        sounds: &[Sound],
        interruptible: bool,
    ) -> Result<Option<char>, CallError> {
        self.lose_presses_before(self.elapsed);
        for sound in sounds {
            let end = self.elapsed + self.length(sound);
            self.played.push(match sound {
                Sound::Prompt(name) => name.clone(),
                Sound::Tone(name, _) => format!("tone:{name}"),
                Sound::Silence(_) => "silence".into(),
            });
            let hangup = self.hangup_before(end);
            let key = if interruptible {
                self.press_before(hangup.unwrap_or(end))
            } else {
                None
            };
            if let Some((at, key)) = key {
                self.pass(at.saturating_sub(self.elapsed));
                return Ok(Some(key));
            }
            if let Some(at) = hangup {
                return Err(self.caller_leaves(at));
            }
            self.pass(end.saturating_sub(self.elapsed));
            self.lose_presses_before(end);
        }
        Ok(None)
    }

    fn read_keys(&mut self, request: &DigitsRequest) -> Result<String, CallError> {
        let mut digits = String::new();
        let mut key = self.play_sounds(&request.prompt, true)?;
        loop {
            if let Some(key) = key {
                if request.terminators.contains(key) {
                    return Ok(digits);
                }
                digits.push(key);
                if digits.len() >= request.max {
                    return Ok(digits);
                }
            }
            let deadline = self.elapsed + request.timeout;
            let hangup = self.hangup_before(deadline);
            match self.press_before(hangup.unwrap_or(deadline)) {
                Some((at, pressed)) => {
                    self.pass(at.saturating_sub(self.elapsed));
                    key = Some(pressed);
                }
                None => {
                    if let Some(at) = hangup {
                        return Err(self.caller_leaves(at));
                    }
                    self.pass(deadline.saturating_sub(self.elapsed));
                    return Ok(digits);
                }
            }
        }
    }

    fn record_caller(&mut self, request: &RecordRequest) -> Result<RecordResult, CallError> {
        if request.beep {
            self.play_sounds(&[Sound::Prompt("beep".into())], false)?;
        }
        self.lose_presses_before(self.elapsed);
        let start = self.elapsed;
        let mut end = start + request.max;
        let mut reason = RecordStop::MaxDuration;
        // Other keys are only sound in the recording.
        while let Some((at, key)) = self.press_before(end) {
            if request.terminators.contains(key) {
                (end, reason) = (at, RecordStop::Terminator(key));
                break;
            }
        }
        if let Some(at) = self.hangup_before(end) {
            self.caller_leaves(at);
            (end, reason) = (at, RecordStop::Hangup);
        }
        self.pass(end.saturating_sub(self.elapsed));
        self.recorded.push(recording_name(&request.file));
        Ok(RecordResult {
            file: request.file.clone(),
            duration: end - start,
            reason,
        })
    }
}

/// A recording's path as a test names it: under the recordings folder.
fn recording_name(file: &Path) -> String {
    file.strip_prefix(RECORDINGS)
        .unwrap_or(file)
        .to_string_lossy()
        .into_owned()
}

/// The most informative failure of the targets (as the B2BUA reports it).
fn failure(rings: &[Ring]) -> DialResult {
    let worst = rings.iter().reduce(|a, b| {
        if a.status.most_informative(b.status) == a.status {
            a
        } else {
            b
        }
    });
    match worst {
        Some(r) => result(r.status, r.sip_code, None, Duration::ZERO),
        None => result(DialStatus::Unavailable, Some(480), None, Duration::ZERO),
    }
}

fn result(
    status: DialStatus,
    sip_code: Option<u16>,
    answered_by: Option<DialTarget>,
    duration: Duration,
) -> DialResult {
    DialResult {
        status,
        sip_code,
        answered_by,
        duration,
    }
}

impl CallControl for SimCall<'_> {
    fn info(&self) -> &CallInfo {
        &self.case.info
    }

    async fn dial(&mut self, request: DialRequest) -> DialResult {
        let result = match request.strategy {
            Strategy::Parallel => self.dial_parallel(&request),
            Strategy::Sequential => self.dial_sequential(&request),
        };
        self.dials.push(request);
        result
    }

    async fn answer(&mut self) -> Result<(), CallError> {
        self.answered = true;
        Ok(())
    }

    async fn reject(&mut self, code: u16, reason: Option<String>) -> Result<(), CallError> {
        self.ending = Ending::Rejected(code, reason);
        Ok(())
    }

    async fn redirect(&mut self, uri: String) -> Result<(), CallError> {
        self.ending = Ending::Redirected(uri);
        Ok(())
    }

    async fn hangup(&mut self) -> Result<(), CallError> {
        self.ending = Ending::HungUp;
        Ok(())
    }

    async fn play(&mut self, request: PlayRequest) -> Result<PlayResult, CallError> {
        let digit = self.play_sounds(&request.sounds, request.interruptible)?;
        Ok(PlayResult {
            completed: digit.is_none(),
            digit,
        })
    }

    async fn read_digits(&mut self, request: DigitsRequest) -> Result<String, CallError> {
        let digits = self.read_keys(&request)?;
        self.digits_read.push(digits.clone());
        Ok(digits)
    }

    async fn record(&mut self, request: RecordRequest) -> Result<RecordResult, CallError> {
        self.record_caller(&request)
    }

    async fn record_call(&mut self, file: PathBuf) -> Result<(), CallError> {
        self.recorded.push(recording_name(&file));
        Ok(())
    }

    /// Nobody holds a simulated call: the choice changes nothing here.
    async fn set_music(&mut self, _: Option<String>) -> Result<(), CallError> {
        Ok(())
    }
}
