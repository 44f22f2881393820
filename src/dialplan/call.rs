//! The boundary between the dialplan and the B2BUA: what a script sees of a call
//! ([`CallInfo`]) and the operations it can ask for ([`CallControl`]).
//!
//! The engine keeps track of the call's phase itself (ringing, answered, over) and only
//! asks for operations that make sense in that phase, so an implementation does not have
//! to defend against a script calling `reject` after `answer`.

use crate::config::Transport;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

/// What the dialplan sees of an incoming call; the B2BUA fills it from the INVITE.
#[derive(Debug, Clone, PartialEq)]
pub struct CallInfo {
    /// The B2BUA's name for the call (for example the A leg's Call-ID), for logs.
    pub id: String,
    /// From: the caller.
    pub from: Party,
    /// To: whom the caller asked for.
    pub to: Party,
    pub request_uri: String,
    /// Every header of the INVITE in message order, names as received.
    pub headers: Vec<(String, String)>,
    /// Where the INVITE came from.
    pub source: SocketAddr,
    pub transport: Transport,
    /// The extension whose digest credentials the INVITE carried; `None` when the call
    /// was not authenticated (a trunk or an unknown device).
    pub auth_user: Option<String>,
}

/// One end of the call as a From or To header names it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Party {
    /// The URI's user part; empty when the URI has none.
    pub user: String,
    /// The display name, unquoted.
    pub display: Option<String>,
    /// The whole URI.
    pub uri: String,
    /// The URI's host (without port).
    pub host: String,
}

/// Someone to ring.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DialTarget {
    /// A local extension: every contact registered for it rings.
    Extension(String),
    /// A SIP or SIPS URI, rung directly.
    Uri(String),
}

impl fmt::Display for DialTarget {
    /// The form a script wrote it in: `1001` or `sip:bob@example.com`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DialTarget::Extension(e) => f.write_str(e),
            DialTarget::Uri(u) => f.write_str(u),
        }
    }
}

/// How the targets of one dial ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// All at once; the first to answer wins and the others are cancelled.
    Parallel,
    /// One after the other, each for the dial's timeout, until one answers.
    Sequential,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Parallel => "parallel",
            Strategy::Sequential => "sequential",
        }
    }
}

/// The caller ID presented to the dialed targets; `None` fields keep the caller's own.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CallerId {
    pub number: Option<String>,
    pub name: Option<String>,
}

/// One `call:dial{...}`.
#[derive(Debug, Clone, PartialEq)]
pub struct DialRequest {
    /// Never empty.
    pub targets: Vec<DialTarget>,
    pub strategy: Strategy,
    /// How long targets ring: the whole group in parallel, each target in sequence.
    pub timeout: Duration,
    pub caller_id: CallerId,
    /// Extra headers for the B legs' INVITEs.
    pub headers: Vec<(String, String)>,
}

/// How a dial ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DialStatus {
    /// A target answered and was bridged; the dial returns when that call has ended.
    Answered,
    /// Every target that could be reached was busy (486/600).
    Busy,
    /// Something rang, but nobody answered before the timeout (or a target answered
    /// 408, 480 or 487).
    NoAnswer,
    /// The targets exist but none could be reached (an extension with no registered
    /// contact, 503, a transport failure).
    Unavailable,
    /// Declined or failed with another final response (603, 4xx–6xx).
    Failed,
    /// The caller hung up while the targets rang; the call is over.
    Cancelled,
    /// No such extension (404, 604).
    NotFound,
}

impl DialStatus {
    /// What a dialed target's final failure response says about it: the B2BUA's reading
    /// of a branch's 3xx–6xx, and the test simulator's.
    pub fn of_final_response(code: u16) -> DialStatus {
        match code {
            486 | 600 => DialStatus::Busy,
            408 | 480 | 487 => DialStatus::NoAnswer,
            404 | 604 => DialStatus::NotFound,
            503 => DialStatus::Unavailable,
            _ => DialStatus::Failed,
        }
    }

    /// The name scripts see in `result.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            DialStatus::Answered => "answered",
            DialStatus::Busy => "busy",
            DialStatus::NoAnswer => "no-answer",
            DialStatus::Unavailable => "unavailable",
            DialStatus::Failed => "failed",
            DialStatus::Cancelled => "cancelled",
            DialStatus::NotFound => "not-found",
        }
    }

    /// Ranks failures by how much they tell the caller, for reporting one status for a
    /// dial of several targets: someone rang (no-answer) beats someone busy, beats a
    /// decline, beats nobody reachable, beats nobody known. The B2BUA and the test
    /// harness both use this so a script sees the same status from either.
    fn rank(self) -> u8 {
        match self {
            DialStatus::Answered => 6,
            DialStatus::Cancelled => 5,
            DialStatus::NoAnswer => 4,
            DialStatus::Busy => 3,
            DialStatus::Failed => 2,
            DialStatus::Unavailable => 1,
            DialStatus::NotFound => 0,
        }
    }

    /// The more informative of two target outcomes (see [`DialStatus::rank`]); on a tie
    /// the first is kept.
    pub fn most_informative(self, other: DialStatus) -> DialStatus {
        if other.rank() > self.rank() {
            other
        } else {
            self
        }
    }

    /// The final response the caller gets when the script ends without deciding after
    /// a dial that ended this way; `None` for outcomes that end the call themselves.
    pub fn fallback_response(self, sip_code: Option<u16>) -> Option<u16> {
        match self {
            DialStatus::Answered | DialStatus::Cancelled => None,
            DialStatus::Busy => Some(486),
            DialStatus::NoAnswer | DialStatus::Unavailable => Some(480),
            DialStatus::NotFound => Some(404),
            DialStatus::Failed => Some(sip_code.filter(|c| (400..700).contains(c)).unwrap_or(480)),
        }
    }
}

/// What `dial` reports back to the script.
#[derive(Debug, Clone, PartialEq)]
pub struct DialResult {
    pub status: DialStatus,
    /// The final response that decided it: 200, 486, 603..., and 480 for a timeout or
    /// an extension with no registered contact. `None` when there was none to report
    /// (the caller cancelled).
    pub sip_code: Option<u16>,
    /// Who answered, when someone did.
    pub answered_by: Option<DialTarget>,
    /// How long the bridged call lasted; zero when nobody answered.
    pub duration: Duration,
}

impl DialResult {
    pub fn answered(&self) -> bool {
        self.status == DialStatus::Answered
    }
}

/// One thing to play to the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sound {
    /// A prompt by name (`vm-intro`, `digits/5`, looked up in the sounds folder for the
    /// call's language), or a path to a WAV file relative to the sounds folder.
    Prompt(String),
    /// A call-progress tone (`ring`, `busy`, `congestion`, `dial`, `beep`, or one DTMF
    /// digit) for this long.
    Tone(String, Duration),
    Silence(Duration),
}

/// `call:play`, and the prompt of `call:read_digits`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlayRequest {
    pub sounds: Vec<Sound>,
    /// A key press stops the playback (and is returned).
    pub interruptible: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlayResult {
    /// Everything was played (not cut short by a key).
    pub completed: bool,
    /// The key that stopped the playback.
    pub digit: Option<char>,
}

/// `call:read_digits`: collect key presses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigitsRequest {
    /// Played first; a key press stops it and counts as the first digit.
    pub prompt: Vec<Sound>,
    /// Stop after this many digits.
    pub max: usize,
    /// Give up this long after the prompt (or the last digit) with what was collected.
    pub timeout: Duration,
    /// Keys that end the input (not included in the result), e.g. `#`.
    pub terminators: String,
}

/// `call:record`: record what the caller says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRequest {
    /// Where the WAV goes: a path the engine has already checked and made absolute.
    pub file: std::path::PathBuf,
    pub max: Duration,
    /// Stop after this much silence (trimmed from the end); `None` never.
    pub silence: Option<Duration>,
    /// Play a beep first.
    pub beep: bool,
    /// Keys that stop the recording (not recorded).
    pub terminators: String,
}

/// Why a recording stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordStop {
    Terminator(char),
    Silence,
    MaxDuration,
    Hangup,
}

impl RecordStop {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordStop::Terminator(_) => "terminator",
            RecordStop::Silence => "silence",
            RecordStop::MaxDuration => "max",
            RecordStop::Hangup => "hangup",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordResult {
    pub file: std::path::PathBuf,
    pub duration: Duration,
    pub reason: RecordStop,
}

/// Why an operation could not be done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The caller is gone (hung up, CANCEL, transport closed). The engine stops the
    /// script quietly: there is nobody left to decide for.
    Ended,
    /// The B2BUA could not do it (no media port, transport error); the engine logs it
    /// and stops the script, and the B2BUA cleans the call up.
    Failed(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Ended => f.write_str("the caller has hung up"),
            CallError::Failed(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for CallError {}

/// The operations a dialplan can ask of a call. The B2BUA implements it for its call
/// task; the test harness implements it with simulated targets.
///
/// The engine calls these in an order that makes sense for the call's phase:
/// `answer` only on an unanswered call, `reject` and `redirect` only before the call is
/// answered, `hangup` only after, and nothing after the call has ended (a dial that was
/// answered and bridged, a reject, a redirect, a hangup, or a dial the caller cancelled).
/// The futures must be `Send` so a call task can move between worker threads.
pub trait CallControl: Send {
    fn info(&self) -> &CallInfo;

    /// Rings the targets and, when one answers, bridges it to the caller (answering the
    /// caller's leg if the script has not) and resolves only when that call is over.
    /// When nobody answers, the caller's leg is left as it was (still ringing, or
    /// answered) so the script can try something else. Errors are reported in the
    /// result: [`DialStatus::Cancelled`] when the caller hung up meanwhile.
    fn dial(&mut self, request: DialRequest) -> impl Future<Output = DialResult> + Send;

    /// Answers the caller's leg (200 OK) without bridging it anywhere yet.
    fn answer(&mut self) -> impl Future<Output = Result<(), CallError>> + Send;

    /// Refuses the unanswered call with a final response (400–699).
    fn reject(
        &mut self,
        code: u16,
        reason: Option<String>,
    ) -> impl Future<Output = Result<(), CallError>> + Send;

    /// Refuses the unanswered call with 302 Moved Temporarily and this Contact.
    fn redirect(&mut self, uri: String) -> impl Future<Output = Result<(), CallError>> + Send;

    /// Ends the answered call (BYE).
    fn hangup(&mut self) -> impl Future<Output = Result<(), CallError>> + Send;

    /// Plays to the answered caller; resolves when done (or cut short by a key).
    fn play(
        &mut self,
        request: PlayRequest,
    ) -> impl Future<Output = Result<PlayResult, CallError>> + Send;

    /// Plays the prompt and collects key presses (RFC 4733, SIP INFO or in-band).
    fn read_digits(
        &mut self,
        request: DigitsRequest,
    ) -> impl Future<Output = Result<String, CallError>> + Send;

    /// Records the answered caller to a WAV file.
    fn record(
        &mut self,
        request: RecordRequest,
    ) -> impl Future<Output = Result<RecordResult, CallError>> + Send;

    /// What a party of this call hears while the other holds it: the hold music of
    /// `class` (a folder under `[media] moh_dir`), or silence with `None`.
    fn set_music(
        &mut self,
        class: Option<String>,
    ) -> impl Future<Output = Result<(), CallError>> + Send;

    /// Records both parties of the call from now until it ends, to a stereo WAV
    /// (caller left, callee right). Resolves once the recording has started.
    fn record_call(
        &mut self,
        file: std::path::PathBuf,
    ) -> impl Future<Output = Result<(), CallError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_informative_prefers_rang_over_busy_over_unreachable() {
        use DialStatus::*;
        let fold = |all: &[DialStatus]| {
            all.iter()
                .copied()
                .reduce(DialStatus::most_informative)
                .unwrap()
        };
        assert_eq!(fold(&[NotFound, Unavailable, Busy, NoAnswer]), NoAnswer);
        assert_eq!(fold(&[Unavailable, Busy, Failed]), Busy);
        assert_eq!(fold(&[NotFound, Failed, Unavailable]), Failed);
        assert_eq!(fold(&[NotFound, Unavailable]), Unavailable);
        assert_eq!(fold(&[NotFound]), NotFound);
    }

    #[test]
    fn fallback_responses_follow_the_status() {
        assert_eq!(DialStatus::Busy.fallback_response(Some(600)), Some(486));
        assert_eq!(DialStatus::NoAnswer.fallback_response(None), Some(480));
        assert_eq!(DialStatus::NotFound.fallback_response(Some(604)), Some(404));
        assert_eq!(DialStatus::Failed.fallback_response(Some(603)), Some(603));
        assert_eq!(DialStatus::Failed.fallback_response(Some(200)), Some(480));
        assert_eq!(DialStatus::Answered.fallback_response(Some(200)), None);
        assert_eq!(DialStatus::Cancelled.fallback_response(None), None);
    }
}
