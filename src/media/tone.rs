//! Call-progress and DTMF tone generator: a frame source for ringback, busy, congestion,
//! dial tone, beeps and in-band digits (US cadences, Telcordia frequencies).
//!
//! Each component is a 32-bit phase accumulator read through a shared interpolated sine
//! table: exact integer phase steps, so there is no drift however the output is framed, and
//! no trigonometry per sample. Everything derives from the sample position in the tone, and
//! each burst restarts at phase zero with a 2 ms ramp at both ends (no clicks, identical
//! bursts), so frame-by-frame output equals one-shot output.

use std::str::FromStr;
use std::sync::OnceLock;

use super::inband::digit_freqs;

/// Per-component peak amplitude: about -10 dBm0 (0 dBm0 is a 22 706 peak in 16-bit PCM).
const AMPLITUDE: f32 = 7000.0;
const RAMP_MS: u64 = 2;
const TABLE_BITS: u32 = 10;
const TABLE_LEN: usize = 1 << TABLE_BITS;
/// Low phase bits below the table index: the interpolation fraction.
const FRAC_BITS: u32 = 32 - TABLE_BITS;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tone {
    /// Ringback: 440+480 Hz, 2 s on / 4 s off.
    Ring,
    /// 480+620 Hz, 0.5 s on / 0.5 s off.
    Busy,
    /// Reorder / all circuits busy: 480+620 Hz, 0.25 s on / 0.25 s off.
    Congestion,
    /// 350+440 Hz, continuous.
    Dial,
    /// 1000 Hz for 0.5 s, then finished.
    Beep,
    /// A DTMF key (0-9 * # A-D) for 100 ms, then finished.
    Digit(char),
}

impl FromStr for Tone {
    type Err = String;

    /// "ring" (or "ringback"), "busy", "congestion", "dial", "beep", any case, or one DTMF key.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let tone = match s.to_ascii_lowercase().as_str() {
            "ring" | "ringback" => Tone::Ring,
            "busy" => Tone::Busy,
            "congestion" => Tone::Congestion,
            "dial" => Tone::Dial,
            "beep" => Tone::Beep,
            _ => {
                let mut chars = s.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) if digit_freqs(c).is_some() => {
                        Tone::Digit(c.to_ascii_uppercase())
                    }
                    _ => return Err(format!("unknown tone {s:?}")),
                }
            }
        };
        Ok(tone)
    }
}

/// One sine period plus a guard entry so interpolation never wraps.
fn sine_table() -> &'static [f32; TABLE_LEN + 1] {
    static TABLE: OnceLock<[f32; TABLE_LEN + 1]> = OnceLock::new();
    TABLE.get_or_init(|| {
        std::array::from_fn(|i| (std::f64::consts::TAU * i as f64 / TABLE_LEN as f64).sin() as f32)
    })
}

/// Produces a tone's samples frame by frame.
#[derive(Debug)]
pub struct ToneGenerator {
    table: &'static [f32; TABLE_LEN + 1],
    /// Phase increments per sample (2^32 = one cycle); 0 for an unused component.
    steps: [u32; 2],
    phases: [u32; 2],
    /// Burst length and cycle length in samples; `period` None = no repetition.
    on: u64,
    period: Option<u64>,
    /// Total length of a finite tone.
    length: Option<u64>,
    ramp: u64,
    pos: u64,
}

impl ToneGenerator {
    /// A `Tone::Digit` that is not a DTMF key gives a tone that is already finished.
    pub fn new(tone: Tone, sample_rate: u32) -> Self {
        let rate = u64::from(sample_rate.max(1));
        let ms = |ms: u64| ms * rate / 1000;
        // (frequencies, on ms (0 = continuous), off ms (0 = no repetition), finite?)
        let (freqs, on_ms, off_ms, finite): ([f32; 2], u64, u64, bool) = match tone {
            Tone::Ring => ([440.0, 480.0], 2000, 4000, false),
            Tone::Busy => ([480.0, 620.0], 500, 500, false),
            Tone::Congestion => ([480.0, 620.0], 250, 250, false),
            Tone::Dial => ([350.0, 440.0], 0, 0, false),
            Tone::Beep => ([1000.0, 0.0], 500, 0, true),
            Tone::Digit(c) => match digit_freqs(c) {
                Some((row, col)) => ([row, col], 100, 0, true),
                None => ([0.0, 0.0], 0, 0, true), // finished from the start
            },
        };
        let on = if finite || on_ms > 0 {
            ms(on_ms)
        } else {
            u64::MAX
        };
        ToneGenerator {
            table: sine_table(),
            steps: freqs.map(|f| (f64::from(f) * 4_294_967_296.0 / rate as f64).round() as u32),
            phases: [0; 2],
            on,
            period: (off_ms > 0).then(|| on + ms(off_ms)),
            length: finite.then_some(on),
            ramp: ms(RAMP_MS).max(1),
            pos: 0,
        }
    }

    /// Writes the next `out.len()` samples. Returns false if a finite tone (beep, digit) had
    /// already finished before this call (then `out` is all zero), so `while gen.fill(&mut
    /// frame) { send(frame) }` plays the whole tone, its last frame zero-padded.
    pub fn fill(&mut self, out: &mut [i16]) -> bool {
        let running = self.length.is_none_or(|len| self.pos < len);
        for sample in out.iter_mut() {
            *sample = self.next_sample();
        }
        running
    }

    fn next_sample(&mut self) -> i16 {
        let pos = self.pos;
        self.pos += 1;
        if self.length.is_some_and(|len| pos >= len) {
            return 0;
        }
        let t = self.period.map_or(pos, |p| pos % p);
        if t >= self.on {
            return 0;
        }
        if t == 0 {
            self.phases = [0; 2];
        }
        // Linear fade over the first and last `ramp` samples of a burst.
        let edge = t.min(self.on - 1 - t);
        let gain = if edge < self.ramp {
            (edge + 1) as f32 / (self.ramp + 1) as f32
        } else {
            1.0
        };
        let mut sum = 0.0;
        for (phase, &step) in self.phases.iter_mut().zip(&self.steps) {
            if step != 0 {
                let i = (*phase >> FRAC_BITS) as usize;
                let frac = (*phase & ((1 << FRAC_BITS) - 1)) as f32 / (1u32 << FRAC_BITS) as f32;
                let (a, b) = (self.table[i], self.table[i + 1]);
                sum += a + frac * (b - a);
                *phase = phase.wrapping_add(step);
            }
        }
        (sum * AMPLITUDE * gain).round() as i16
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::inband::DtmfDetector;

    /// Amplitude of the `freq` component of `x` (Hann-windowed Goertzel, normalized).
    fn amplitude_at(x: &[i16], freq: f64, rate: u32) -> f64 {
        let c = 2.0 * (std::f64::consts::TAU * freq / f64::from(rate)).cos();
        let n = x.len() as f64;
        let (mut s1, mut s2) = (0.0, 0.0);
        for (i, &v) in x.iter().enumerate() {
            let w = 0.5 - 0.5 * (std::f64::consts::TAU * i as f64 / n).cos();
            let s0 = w * f64::from(v) + c * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        let power = s1 * s1 + s2 * s2 - c * s1 * s2;
        // The Hann window's sum is n / 2.
        4.0 * power.sqrt() / n
    }

    fn generate(tone: Tone, rate: u32, ms: u32, frame: usize) -> Vec<i16> {
        let mut g = ToneGenerator::new(tone, rate);
        let mut out = vec![0; (rate * ms / 1000) as usize];
        for chunk in out.chunks_mut(frame) {
            g.fill(chunk);
        }
        out
    }

    #[test]
    fn parse_names() {
        assert_eq!("ring".parse(), Ok(Tone::Ring));
        assert_eq!(" Busy ".parse(), Ok(Tone::Busy));
        assert_eq!("CONGESTION".parse(), Ok(Tone::Congestion));
        assert_eq!("dial".parse(), Ok(Tone::Dial));
        assert_eq!("beep".parse(), Ok(Tone::Beep));
        assert_eq!("7".parse(), Ok(Tone::Digit('7')));
        assert_eq!("#".parse(), Ok(Tone::Digit('#')));
        assert_eq!("b".parse(), Ok(Tone::Digit('B')));
        for bad in ["", "x", "12", "ringing", "E"] {
            assert!(bad.parse::<Tone>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn frequencies_present() {
        let cases: &[(Tone, &[f64], &[f64])] = &[
            (Tone::Ring, &[440.0, 480.0], &[350.0, 620.0, 1000.0]),
            (Tone::Busy, &[480.0, 620.0], &[440.0, 350.0, 1000.0]),
            (Tone::Congestion, &[480.0, 620.0], &[440.0, 350.0]),
            (Tone::Dial, &[350.0, 440.0], &[480.0, 620.0]),
            (Tone::Beep, &[1000.0], &[440.0, 480.0, 2000.0]),
            (
                Tone::Digit('5'),
                &[770.0, 1336.0],
                &[697.0, 852.0, 1209.0, 1477.0],
            ),
        ];
        for rate in [8000, 16000] {
            for &(tone, present, absent) in cases {
                // The first 100 ms: inside the first burst of every tone.
                let window = &generate(tone, rate, 100, 160);
                for &f in present {
                    let a = amplitude_at(window, f, rate);
                    assert!(
                        (a - 7000.0).abs() < 50.0,
                        "{tone:?} {rate} Hz: {f} Hz at {a}"
                    );
                }
                for &f in absent {
                    let a = amplitude_at(window, f, rate);
                    assert!(a < 50.0, "{tone:?} {rate} Hz: {f} Hz at {a}");
                }
            }
        }
    }

    #[test]
    fn matches_reference_sine() {
        let x = generate(Tone::Beep, 8000, 100, 160);
        for (n, &v) in x.iter().enumerate().skip(16) {
            let want = 7000.0 * (std::f64::consts::TAU * 1000.0 * n as f64 / 8000.0).sin();
            assert!(
                (f64::from(v) - want).abs() <= 1.0,
                "sample {n}: {v} vs {want}"
            );
        }
    }

    /// Checks every 10 ms window against `on(ms)`: sounding windows are loud, others silent.
    fn check_cadence(tone: Tone, rate: u32, total_ms: u32, on: impl Fn(u32) -> bool) {
        let x = generate(tone, rate, total_ms, (rate / 50) as usize);
        let win = (rate / 100) as usize;
        for (i, w) in x.chunks(win).enumerate() {
            let ms = i as u32 * 10;
            let rms =
                (w.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / w.len() as f64).sqrt();
            if on(ms) {
                // Edge windows include a 2 ms ramp; full windows are ~7000 (one tone) or more.
                assert!(rms > 3000.0, "{tone:?} {rate} Hz at {ms} ms: rms {rms}");
            } else {
                assert!(
                    w.iter().all(|&v| v == 0),
                    "{tone:?} {rate} Hz at {ms} ms not silent"
                );
            }
        }
    }

    #[test]
    fn cadences() {
        for rate in [8000, 16000] {
            check_cadence(Tone::Ring, rate, 13_000, |ms| ms % 6000 < 2000);
            check_cadence(Tone::Busy, rate, 3000, |ms| ms % 1000 < 500);
            check_cadence(Tone::Congestion, rate, 2000, |ms| ms % 500 < 250);
            check_cadence(Tone::Dial, rate, 3000, |_| true);
            check_cadence(Tone::Beep, rate, 1500, |ms| ms < 500);
            check_cadence(Tone::Digit('#'), rate, 500, |ms| ms < 100);
        }
    }

    #[test]
    fn finite_tones_report_the_end() {
        // Beep at 8 kHz: 4000 samples = 25 frames of 160; the 26th finds it finished.
        let mut g = ToneGenerator::new(Tone::Beep, 8000);
        let mut frame = [0i16; 160];
        let mut frames = 0;
        while g.fill(&mut frame) {
            frames += 1;
        }
        assert_eq!(frames, 25);
        assert!(frame.iter().all(|&v| v == 0));
        // Digit at 16 kHz in 300-sample frames: 1600 samples, the 6th frame is zero-padded.
        let mut g = ToneGenerator::new(Tone::Digit('1'), 16000);
        let mut frame = [0i16; 300];
        let results: Vec<bool> = (0..7).map(|_| g.fill(&mut frame)).collect();
        assert_eq!(results, [true, true, true, true, true, true, false]);
        // Continuous and cadenced tones never finish; an invalid digit is finished at once.
        let mut g = ToneGenerator::new(Tone::Busy, 8000);
        assert!((0..200).all(|_| g.fill(&mut frame)));
        let mut g = ToneGenerator::new(Tone::Digit('x'), 8000);
        assert!(!g.fill(&mut frame));
        assert!(frame.iter().all(|&v| v == 0));
    }

    #[test]
    fn framing_does_not_change_output() {
        for tone in [Tone::Ring, Tone::Busy, Tone::Dial, Tone::Digit('9')] {
            for rate in [8000, 16000] {
                let whole = generate(tone, rate, 7000, usize::MAX);
                for frame in [7, 160, 320] {
                    assert!(
                        generate(tone, rate, 7000, frame) == whole,
                        "{tone:?} {rate} {frame}"
                    );
                }
            }
        }
    }

    #[test]
    fn generated_digits_are_detected() {
        for rate in [8000, 16000] {
            for d in "0123456789*#ABCD".chars() {
                let mut g = ToneGenerator::new(Tone::Digit(d), rate);
                let mut det = DtmfDetector::new(rate);
                let mut frame = vec![0i16; (rate / 50) as usize];
                let mut got = String::new();
                // The tone, then silence until well after it.
                for _ in 0..20 {
                    g.fill(&mut frame);
                    got.extend(det.push(&frame));
                }
                assert_eq!(got, d.to_string(), "{rate} Hz");
            }
        }
    }
}
