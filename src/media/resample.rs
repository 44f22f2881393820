//! Sample-rate conversion between the engine's two rates, 8 kHz (G.711) and 16 kHz
//! (G.722, Opus), for transcoding calls whose legs use different codecs.
//!
//! Both directions use one linear-phase half-band FIR (63 taps, Kaiser window, ~60 dB
//! stopband, cut-off at 4 kHz): decimation must remove 4–8 kHz before dropping every
//! other sample or it folds back as audible aliasing, and interpolation must remove the
//! spectral image that inserting zeros creates. A half-band filter has every other tap
//! zero, so each output costs 32 multiplies, and on the interpolating side one of the two
//! output phases is a plain delayed copy of the input.
//!
//! A `Resampler` serves one direction of one stream and keeps the filter history, so
//! frames can be fed one at a time with the same result as one long buffer.

use std::fmt;

/// Filter length: 4 * 16 - 1, the half-band form with the centre tap at index 31.
const TAPS: usize = 63;
const CENTRE: usize = TAPS / 2;
/// Non-zero taps besides the centre: those at odd distance from it (even indices).
const PHASE_TAPS: usize = TAPS.div_ceil(2);
/// Kaiser β for about 60 dB of stopband attenuation.
const KAISER_BETA: f64 = 5.65;

/// History lengths (powers of two so the ring index wraps with a mask).
const DOWN_HISTORY: usize = 64;
const UP_HISTORY: usize = PHASE_TAPS;

/// A rate pair the resampler does not handle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResampleError {
    pub from_rate: u32,
    pub to_rate: u32,
}

impl fmt::Display for ResampleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot resample {} Hz to {} Hz (only 8000 <-> 16000 and identity)",
            self.from_rate, self.to_rate
        )
    }
}

impl std::error::Error for ResampleError {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    Identity,
    Up,
    Down,
}

/// Stateful converter between 8000 and 16000 Hz (and the identity).
#[derive(Clone, Debug)]
pub struct Resampler {
    from_rate: u32,
    to_rate: u32,
    direction: Direction,
    /// The filter's taps at even indices (odd distance from the centre), index j = tap 2j.
    taps: [f32; PHASE_TAPS],
    /// Input history, stored twice so the newest `len` samples are always contiguous.
    history: [f32; 2 * DOWN_HISTORY],
    /// Where the next input sample goes.
    pos: usize,
    /// Decimation keeps every second input; true when the next input completes a pair.
    odd: bool,
}

impl Resampler {
    /// Only 8000/16000 pairs and the identity (any rate to itself) are supported.
    pub fn new(from_rate: u32, to_rate: u32) -> Result<Resampler, ResampleError> {
        let direction = match (from_rate, to_rate) {
            (from, to) if from == to && from > 0 => Direction::Identity,
            (8000, 16_000) => Direction::Up,
            (16_000, 8000) => Direction::Down,
            _ => return Err(ResampleError { from_rate, to_rate }),
        };
        Ok(Resampler {
            from_rate,
            to_rate,
            direction,
            taps: half_band_taps(),
            history: [0.0; 2 * DOWN_HISTORY],
            pos: 0,
            odd: false,
        })
    }

    pub fn from_rate(&self) -> u32 {
        self.from_rate
    }

    pub fn to_rate(&self) -> u32 {
        self.to_rate
    }

    /// Converts `input`, writing `input.len() * to / from` samples to `out`, and returns
    /// that count. When decimating an odd-length input the count depends on the phase
    /// left by earlier calls (the sum over calls is exact); even-length frames always give
    /// exactly half. No allocation.
    ///
    /// # Panics
    /// If `out` is shorter than that count (`input.len().div_ceil(2)` when decimating):
    /// buffer sizing is the caller's contract, not something the network controls.
    pub fn process(&mut self, input: &[i16], out: &mut [i16]) -> usize {
        match self.direction {
            Direction::Identity => {
                out[..input.len()].copy_from_slice(input);
                input.len()
            }
            Direction::Up => self.interpolate(input, out),
            Direction::Down => self.decimate(input, out),
        }
    }

    /// Pushes one sample and returns the newest `len` samples, oldest first.
    fn push(&mut self, sample: i16, len: usize) -> &[f32] {
        let value = f32::from(sample);
        self.history[self.pos] = value;
        self.history[self.pos + len] = value;
        self.pos = (self.pos + 1) & (len - 1);
        &self.history[self.pos..self.pos + len]
    }

    fn interpolate(&mut self, input: &[i16], out: &mut [i16]) -> usize {
        let produced = input.len() * 2;
        assert!(out.len() >= produced, "resampler output buffer too small");
        let taps = self.taps;
        for (&sample, pair) in input.iter().zip(out.chunks_exact_mut(2)) {
            let window = self.push(sample, UP_HISTORY);
            // Zero-stuffed input through the filter with gain 2: the even output phase
            // sees the taps at even indices, the odd phase only the centre tap (2 * 0.5).
            let even: f32 = taps
                .iter()
                .zip(window.iter().rev())
                .map(|(t, x)| t * x)
                .sum();
            pair[0] = to_sample(2.0 * even);
            pair[1] = to_sample(window[UP_HISTORY - 1 - CENTRE / 2]);
        }
        produced
    }

    fn decimate(&mut self, input: &[i16], out: &mut [i16]) -> usize {
        let produced = (input.len() + usize::from(self.odd)) / 2;
        assert!(out.len() >= produced, "resampler output buffer too small");
        let taps = self.taps;
        let mut written = 0;
        for &sample in input {
            let odd = self.odd;
            self.odd = !odd;
            let window = self.push(sample, DOWN_HISTORY);
            if !odd {
                continue;
            }
            // window[63 - k] is the input k samples ago; taps at even k plus the centre.
            let newest = DOWN_HISTORY - 1;
            let side: f32 = taps
                .iter()
                .enumerate()
                .map(|(j, t)| t * window[newest - 2 * j])
                .sum();
            out[written] = to_sample(side + 0.5 * window[newest - CENTRE]);
            written += 1;
        }
        written
    }
}

fn to_sample(value: f32) -> i16 {
    // `as` saturates floats at the integer's bounds.
    value.round() as i16
}

/// Taps at even indices of a Kaiser-windowed sinc with cut-off at a quarter of the higher
/// rate, normalised so that they sum to 0.5 (with the 0.5 centre tap: unity DC gain, and
/// each interpolation phase has unity gain too).
fn half_band_taps() -> [f32; PHASE_TAPS] {
    let half_width = CENTRE as f64;
    let mut taps = [0.0f64; PHASE_TAPS];
    for (j, tap) in taps.iter_mut().enumerate() {
        let t = (2 * j) as f64 - half_width;
        let sinc = (std::f64::consts::FRAC_PI_2 * t).sin() / (std::f64::consts::PI * t);
        let ratio = t / half_width;
        let window = bessel_i0(KAISER_BETA * (1.0 - ratio * ratio).sqrt()) / bessel_i0(KAISER_BETA);
        *tap = sinc * window;
    }
    let sum: f64 = taps.iter().sum();
    taps.map(|t| (t * 0.5 / sum) as f32)
}

/// Modified Bessel function of the first kind, order zero (power series).
fn bessel_i0(x: f64) -> f64 {
    let quarter_x2 = x * x / 4.0;
    let (mut sum, mut term, mut k) = (1.0, 1.0, 1.0);
    while term > sum * 1e-12 {
        term *= quarter_x2 / (k * k);
        sum += term;
        k += 1.0;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    fn sine(freq: f64, rate: f64, amplitude: f64, len: usize) -> Vec<i16> {
        (0..len)
            .map(|n| (amplitude * (2.0 * PI * freq * n as f64 / rate).sin()).round() as i16)
            .collect()
    }

    fn rms(x: &[i16]) -> f64 {
        (x.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
    }

    fn run(from: u32, to: u32, input: &[i16]) -> Vec<i16> {
        let mut resampler = Resampler::new(from, to).unwrap();
        let mut out = vec![0i16; input.len() * 2 + 1];
        let n = resampler.process(input, &mut out);
        out.truncate(n);
        out
    }

    #[test]
    fn only_the_two_rates_and_identity() {
        assert!(Resampler::new(8000, 16_000).is_ok());
        assert!(Resampler::new(16_000, 8000).is_ok());
        assert!(Resampler::new(48_000, 48_000).is_ok());
        let error = Resampler::new(8000, 48_000).unwrap_err();
        assert_eq!((error.from_rate, error.to_rate), (8000, 48_000));
        assert!(Resampler::new(44_100, 16_000).is_err());
        assert!(Resampler::new(0, 0).is_err());
        let resampler = Resampler::new(16_000, 8000).unwrap();
        assert_eq!((resampler.from_rate(), resampler.to_rate()), (16_000, 8000));
    }

    #[test]
    fn filter_is_a_half_band_with_unity_gain() {
        let taps = half_band_taps();
        let sum: f32 = taps.iter().sum();
        assert!((sum - 0.5).abs() < 1e-6);
        // Symmetric (linear phase).
        for j in 0..PHASE_TAPS {
            assert!((taps[j] - taps[PHASE_TAPS - 1 - j]).abs() < 1e-7);
        }
    }

    #[test]
    fn upsampled_tone_keeps_its_frequency_cleanly() {
        let input = sine(1000.0, 8000.0, 10000.0, 1600);
        let output = run(8000, 16_000, &input);
        assert_eq!(output.len(), 3200);
        // Group delay: 31 samples at 16 kHz. Compare with the ideal 16 kHz tone.
        let ideal = sine(1000.0, 16_000.0, 10000.0, 3200);
        let (mut signal, mut noise) = (0.0, 0.0);
        for n in 200..3200 {
            let reference = f64::from(ideal[n - 31]);
            signal += reference * reference;
            noise += (reference - f64::from(output[n])).powi(2);
        }
        let snr = 10.0 * (signal / noise).log10();
        assert!(snr > 45.0, "SNR {snr:.1} dB");
    }

    #[test]
    fn upsampling_leaves_no_image() {
        // A 3 kHz tone zero-stuffed would also appear at 5 kHz; the filter must remove it.
        let output = run(8000, 16_000, &sine(3000.0, 8000.0, 10000.0, 1600));
        let image = goertzel(&output[200..], 5000.0, 16_000.0);
        let tone = goertzel(&output[200..], 3000.0, 16_000.0);
        let rejection = 10.0 * (tone / image).log10();
        assert!(rejection > 50.0, "image only {rejection:.1} dB down");
    }

    #[test]
    fn decimation_blocks_aliasing() {
        // 6 kHz cannot exist at 8 kHz; unfiltered it would alias to 2 kHz.
        let input = sine(6000.0, 16_000.0, 10000.0, 3200);
        let output = run(16_000, 8000, &input);
        assert_eq!(output.len(), 1600);
        let attenuation = 20.0 * (rms(&input) / rms(&output[100..])).log10();
        assert!(attenuation > 50.0, "attenuation {attenuation:.1} dB");
    }

    #[test]
    fn decimation_passes_the_voice_band() {
        let input = sine(1000.0, 16_000.0, 10000.0, 3200);
        let output = run(16_000, 8000, &input);
        let gain = 20.0 * (rms(&output[100..]) / rms(&input)).log10();
        assert!(gain.abs() < 0.1, "gain {gain:.2} dB");
        // Group delay 31 samples at 16 kHz is 15.5 at 8 kHz: compare with the ideal tone.
        let ideal: Vec<f64> = (0..1600)
            .map(|m| 10000.0 * (2.0 * PI * 1000.0 * (2.0 * m as f64 + 1.0 - 31.0) / 16_000.0).sin())
            .collect();
        let (mut signal, mut noise) = (0.0, 0.0);
        for m in 100..1600 {
            signal += ideal[m] * ideal[m];
            noise += (ideal[m] - f64::from(output[m])).powi(2);
        }
        let snr = 10.0 * (signal / noise).log10();
        assert!(snr > 45.0, "SNR {snr:.1} dB");
    }

    #[test]
    fn chunked_processing_equals_one_pass() {
        let input: Vec<i16> = (0..3200u32)
            .map(|n| ((n.wrapping_mul(2_654_435_761) >> 20) as i16) - 2048)
            .collect();
        for (from, to) in [(8000, 16_000), (16_000, 8000), (8000, 8000)] {
            let whole = run(from, to, &input);
            let mut resampler = Resampler::new(from, to).unwrap();
            let mut chunked = Vec::new();
            let mut out = [0i16; 320];
            for chunk in input.chunks(160) {
                let n = resampler.process(chunk, &mut out);
                chunked.extend_from_slice(&out[..n]);
            }
            assert_eq!(chunked, whole, "{from} -> {to}");
        }
    }

    #[test]
    fn odd_chunks_keep_the_decimation_phase() {
        let input = sine(440.0, 16_000.0, 8000.0, 320);
        let whole = run(16_000, 8000, &input);
        let mut resampler = Resampler::new(16_000, 8000).unwrap();
        let mut out = [0i16; 320];
        let mut chunked = Vec::new();
        for chunk in input.chunks(33) {
            let n = resampler.process(chunk, &mut out);
            chunked.extend_from_slice(&out[..n]);
        }
        assert_eq!(chunked, whole);
    }

    #[test]
    fn identity_copies() {
        let input = sine(440.0, 8000.0, 8000.0, 160);
        assert_eq!(run(8000, 8000, &input), input);
        assert_eq!(run(16_000, 16_000, &input), input);
    }

    #[test]
    fn full_scale_saturates_instead_of_wrapping() {
        let square: Vec<i16> = (0..320)
            .map(|n| if (n / 8) % 2 == 0 { i16::MAX } else { i16::MIN })
            .collect();
        for (from, to) in [(8000, 16_000), (16_000, 8000)] {
            let out = run(from, to, &square);
            // Gibbs overshoot clips at the rails; a wrap would flip signs within a run.
            let steady = &out[out.len() / 2..];
            assert!(steady.iter().any(|&s| s == i16::MAX || s > 30000));
            assert!(
                steady
                    .windows(2)
                    .all(|w| (i32::from(w[0]) - i32::from(w[1])).abs() < 60000)
            );
        }
    }

    fn goertzel(x: &[i16], freq: f64, rate: f64) -> f64 {
        let coeff = 2.0 * (2.0 * PI * freq / rate).cos();
        let (mut s1, mut s2) = (0.0, 0.0);
        for &v in x {
            let s0 = f64::from(v) + coeff * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        s1 * s1 + s2 * s2 - coeff * s1 * s2
    }
}
