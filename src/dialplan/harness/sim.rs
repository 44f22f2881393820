//! A simulated call: targets behave as the test case says, time passes on a manual
//! clock (ringing and talking take no real time), and everything the dialplan asked
//! for is recorded.

use super::cases::{Behaviour, Case};
use crate::dialplan::ManualClock;
use crate::dialplan::call::{
    CallControl, CallError, CallInfo, DialRequest, DialResult, DialStatus, DialTarget, Strategy,
};
use std::sync::Arc;
use std::time::Duration;

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
    /// Time since the call arrived.
    elapsed: Duration,
    pub dials: Vec<DialRequest>,
    /// Every target offered the call, in order.
    pub dialed: Vec<String>,
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
    pub fn new(case: &'c Case, clock: Arc<ManualClock>) -> SimCall<'c> {
        SimCall {
            case,
            clock,
            elapsed: Duration::ZERO,
            dials: Vec::new(),
            dialed: Vec::new(),
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
}
