//! A recording in progress inside the media task: what goes into the file and when
//! it stops. The file itself is written by a [`Recorder`] thread, off the media path.
//!
//! A message (one leg, mono) stops at its maximum length or after a run of silence,
//! which is held back rather than written so that it can be trimmed. A whole call
//! (both legs, stereo: caller left, callee right) takes one 20 ms frame of each leg
//! per clock tick, a missing one as silence, so the two channels stay in step.

use super::listener::TAP_RATE;
use super::recorder::{Recorder, interleave};
use std::time::Duration;

/// Samples per frame at the tap rate.
const FRAME: usize = (TAP_RATE / 50) as usize;
/// Mean absolute amplitude under which a frame counts as silence (about -45 dBFS).
const SILENCE_LEVEL: u32 = 180;
/// The most a call recording buffers per leg between ticks.
const CALL_FIFO: usize = 8 * FRAME;

/// Why a recording ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Asked to (a terminator key, the script).
    Asked,
    Silence,
    MaxDuration,
    /// The call ended.
    Hangup,
}

/// How a recording ended: why, and how much was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub stopped: Stopped,
    pub duration: Duration,
}

/// Stop conditions of a message recording.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max: Duration,
    pub silence: Option<Duration>,
}

pub enum Recording {
    /// One leg, mono.
    Message {
        recorder: Recorder,
        limits: Limits,
        written: usize,
        /// Silent samples not written yet (trimmed if the recording ends on them).
        held: Vec<i16>,
    },
    /// Both legs, stereo.
    Call {
        recorder: Recorder,
        fifos: [Vec<i16>; 2],
        /// The stereo frame being written (boxed: the variants stay the same size).
        frame: Box<[i16; 2 * FRAME]>,
        written: usize,
    },
}

impl Recording {
    pub fn message(recorder: Recorder, limits: Limits) -> Recording {
        let held = limits.silence.map_or(0, |s| samples(s) + FRAME);
        Recording::Message {
            recorder,
            limits,
            written: 0,
            held: Vec::with_capacity(held),
        }
    }

    pub fn call(recorder: Recorder) -> Recording {
        Recording::Call {
            recorder,
            fifos: [Vec::with_capacity(CALL_FIFO), Vec::with_capacity(CALL_FIFO)],
            frame: Box::new([0; 2 * FRAME]),
            written: 0,
        }
    }

    /// Audio heard from leg `side` (0 caller, 1 callee) at the tap rate. A message
    /// takes only the caller's. Returns why it must stop now, if it must.
    pub fn on_audio(&mut self, side: usize, pcm: &[i16]) -> Option<Stopped> {
        match self {
            Recording::Message {
                recorder,
                limits,
                written,
                held,
            } => {
                if side != 0 {
                    return None;
                }
                if let Some(silence) = limits.silence {
                    if is_silent(pcm) {
                        let room = held.capacity() - held.len();
                        held.extend_from_slice(&pcm[..pcm.len().min(room)]);
                        if held.len() >= samples(silence) {
                            return Some(Stopped::Silence);
                        }
                        return None;
                    }
                    recorder.push(held);
                    *written += held.len();
                    held.clear();
                }
                recorder.push(pcm);
                *written += pcm.len();
                (*written + held.len() >= samples(limits.max)).then_some(Stopped::MaxDuration)
            }
            Recording::Call { fifos, .. } => {
                let fifo = &mut fifos[side.min(1)];
                let room = CALL_FIFO - fifo.len();
                fifo.extend_from_slice(&pcm[..pcm.len().min(room)]);
                None
            }
        }
    }

    /// The media clock: a call recording writes one stereo frame.
    pub fn on_tick(&mut self) {
        if let Recording::Call {
            recorder,
            fifos,
            frame,
            written,
        } = self
        {
            let [left, right] = fifos;
            let (l, r) = (left.len().min(FRAME), right.len().min(FRAME));
            let mut left_frame = [0i16; FRAME];
            let mut right_frame = [0i16; FRAME];
            left_frame[..l].copy_from_slice(&left[..l]);
            right_frame[..r].copy_from_slice(&right[..r]);
            left.drain(..l);
            right.drain(..r);
            interleave(&left_frame, &right_frame, &mut frame[..]);
            recorder.push(&frame[..]);
            *written += FRAME;
        }
    }

    /// Whether the clock must run for this recording.
    pub fn needs_clock(&self) -> bool {
        matches!(self, Recording::Call { .. })
    }

    /// Ends the recording: the recorder finishes the file on its own thread; `then`
    /// gets the outcome once the file is complete.
    pub fn finish(
        self,
        stopped: Stopped,
        then: impl FnOnce(std::io::Result<Outcome>) + Send + 'static,
    ) {
        let (recorder, written) = match self {
            Recording::Message {
                recorder, written, ..
            } => (recorder, written),
            Recording::Call {
                recorder, written, ..
            } => (recorder, written),
        };
        let duration = Duration::from_secs_f64(written as f64 / f64::from(TAP_RATE));
        // Waiting for the writer thread blocks, so not here.
        std::thread::spawn(move || {
            then(recorder.stop().map(|_| Outcome { stopped, duration }));
        });
    }
}

fn samples(d: Duration) -> usize {
    (d.as_millis() as usize) * (TAP_RATE as usize) / 1000
}

fn is_silent(pcm: &[i16]) -> bool {
    if pcm.is_empty() {
        return true;
    }
    let sum: u64 = pcm.iter().map(|s| u64::from(s.unsigned_abs())).sum();
    sum / (pcm.len() as u64) < u64::from(SILENCE_LEVEL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::wav;
    use std::sync::mpsc;

    fn loud() -> Vec<i16> {
        (0..FRAME)
            .map(|i| if i % 2 == 0 { 4000 } else { -4000 })
            .collect()
    }

    fn finish(recording: Recording, stopped: Stopped) -> Outcome {
        let (tx, rx) = mpsc::channel();
        recording.finish(stopped, move |outcome| {
            let _ = tx.send(outcome);
        });
        rx.recv().unwrap().unwrap()
    }

    #[test]
    fn a_message_stops_after_its_silence_and_the_silence_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.wav");
        let limits = Limits {
            max: Duration::from_secs(60),
            silence: Some(Duration::from_millis(500)),
        };
        let mut rec = Recording::message(Recorder::start(&path, TAP_RATE, 1).unwrap(), limits);
        for _ in 0..50 {
            assert_eq!(rec.on_audio(0, &loud()), None);
        }
        // A short pause is kept; the other leg is not recorded.
        for _ in 0..10 {
            assert_eq!(rec.on_audio(0, &[0; FRAME]), None);
            assert_eq!(rec.on_audio(1, &loud()), None);
        }
        assert_eq!(rec.on_audio(0, &loud()), None);
        let mut stop = None;
        for _ in 0..30 {
            stop = stop.or(rec.on_audio(0, &[3; FRAME]));
        }
        assert_eq!(stop, Some(Stopped::Silence));
        let outcome = finish(rec, Stopped::Silence);
        assert_eq!(outcome.duration, Duration::from_millis(1220));
        let file = wav::read(&path).unwrap();
        assert_eq!(file.samples.len(), 61 * FRAME);
    }

    #[test]
    fn a_message_stops_at_its_maximum() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.wav");
        let limits = Limits {
            max: Duration::from_millis(200),
            silence: None,
        };
        let mut rec = Recording::message(Recorder::start(&path, TAP_RATE, 1).unwrap(), limits);
        let stops: Vec<Option<Stopped>> = (0..10).map(|_| rec.on_audio(0, &loud())).collect();
        assert_eq!(stops[8], None);
        assert_eq!(stops[9], Some(Stopped::MaxDuration));
    }

    #[test]
    fn a_call_recording_keeps_the_legs_in_step() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.wav");
        let mut rec = Recording::call(Recorder::start(&path, TAP_RATE, 2).unwrap());
        // The caller sends every tick, the callee only every other one.
        for i in 0..10 {
            rec.on_audio(0, &[1000; FRAME]);
            if i % 2 == 0 {
                rec.on_audio(1, &[-2000; FRAME]);
            }
            rec.on_tick();
        }
        let outcome = finish(rec, Stopped::Hangup);
        assert_eq!(outcome.duration, Duration::from_millis(200));
        let file = wav::read(&path).unwrap();
        assert_eq!((file.channels, file.samples.len()), (2, 10 * 2 * FRAME));
        let left: Vec<i16> = file.samples.iter().step_by(2).copied().collect();
        let right: Vec<i16> = file.samples.iter().skip(1).step_by(2).copied().collect();
        assert!(left.iter().all(|&s| s == 1000));
        assert_eq!(right.iter().filter(|&&s| s == -2000).count(), 5 * FRAME);
    }
}
