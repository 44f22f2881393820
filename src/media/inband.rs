//! In-band DTMF detection for legs that did not negotiate telephone-event.
//!
//! Eight Goertzel filters (the DTMF row and column frequencies) run sample by sample over
//! fixed blocks of 12.75 ms (102 samples at 8 kHz, scaled with the rate), so any chunking of
//! the input gives the same result and nothing is buffered or allocated. Each block is
//! classified on its own with relative thresholds only (level-independent above a floor):
//! one row and one column tone must each dominate their group, the twist must be within
//! limits, and the two tones must carry most of the block's energy, which rejects speech,
//! music and noise. Blocks are then debounced: three consecutive blocks of one digit
//! (~38 ms) confirm a press, reported once; two blocks without it (~25 ms) end the press.
//! Since a block only passes when the tone covers most of it, the accepted duration depends
//! on alignment: tones of 47 ms or more are always detected, 34 ms or less never (a 30 ms tone
//! cannot fill three blocks), in between sometimes. Phones send 70-100 ms.

/// Row tones (low group) then column tones (high group), Hz.
const FREQS: [f32; 8] = [697.0, 770.0, 852.0, 941.0, 1209.0, 1336.0, 1477.0, 1633.0];
const KEYS: [[char; 4]; 4] = [
    ['1', '2', '3', 'A'],
    ['4', '5', '6', 'B'],
    ['7', '8', '9', 'C'],
    ['*', '0', '#', 'D'],
];
/// Block length at 8 kHz; ~78 Hz bins separate adjacent DTMF tones (73 Hz apart at least)
/// well enough while keeping time resolution for the 40 ms rule.
const BLOCK_AT_8K: u32 = 102;
/// Each tone must exceed the other tones of its group by 10 dB (power ratio).
const GROUP_DOMINANCE: f32 = 10.0;
/// Normal twist (column weaker than row) up to 8 dB, reverse twist up to 4 dB.
const MAX_NORMAL_TWIST: f32 = 6.31;
const MAX_REVERSE_TWIST: f32 = 2.51;
/// The two tones must carry at least this share of the block's energy. It also rejects
/// blocks only partly covered by a tone, which makes the block count a duration measure.
const MIN_TONE_SHARE: f32 = 0.75;
/// Mean square of the two tones together: two tones of amplitude 300 (about -37 dBm0 each).
const MIN_TONE_POWER: f32 = 300.0 * 300.0;
/// Consecutive blocks of one digit that confirm a press, and blocks without it that end it.
const CONFIRM_BLOCKS: u8 = 3;
const END_BLOCKS: u8 = 2;

/// Detects DTMF key presses in linear PCM.
#[derive(Debug)]
pub struct DtmfDetector {
    block_len: u32,
    coeffs: [f32; 8],
    s1: [f32; 8],
    s2: [f32; 8],
    energy: f32,
    count: u32,
    /// The digit seen in the latest blocks, and for how many consecutive blocks.
    candidate: Option<char>,
    run: u8,
    /// The confirmed press still going on, and the blocks since it was last seen.
    pressed: Option<char>,
    misses: u8,
}

impl DtmfDetector {
    /// `sample_rate` is normally 8000 or 16000; rates below 8000 are treated as 8000.
    pub fn new(sample_rate: u32) -> Self {
        let rate = sample_rate.max(8000);
        let block_len = (u64::from(rate) * u64::from(BLOCK_AT_8K) / 8000) as u32;
        let coeffs = FREQS.map(|f| 2.0 * (std::f32::consts::TAU * f / rate as f32).cos());
        DtmfDetector {
            block_len,
            coeffs,
            s1: [0.0; 8],
            s2: [0.0; 8],
            energy: 0.0,
            count: 0,
            candidate: None,
            run: 0,
            pressed: None,
            misses: 0,
        }
    }

    /// Feeds PCM in any chunk size; returns a digit once per press, when the press is
    /// confirmed. Presses are confirmed at least 5 blocks (~64 ms) apart, so a chunk of up to
    /// 60 ms yields at most one digit; split longer audio.
    pub fn push(&mut self, pcm: &[i16]) -> Option<char> {
        let mut digit = None;
        for &sample in pcm {
            let x = f32::from(sample);
            self.energy += x * x;
            for i in 0..8 {
                let s0 = x + self.coeffs[i] * self.s1[i] - self.s2[i];
                self.s2[i] = self.s1[i];
                self.s1[i] = s0;
            }
            self.count += 1;
            if self.count == self.block_len {
                let seen = self.classify_block();
                self.s1 = [0.0; 8];
                self.s2 = [0.0; 8];
                self.energy = 0.0;
                self.count = 0;
                if let Some(d) = self.debounce(seen) {
                    digit = Some(d);
                }
            }
        }
        digit
    }

    /// The digit this block holds, if it passes every test.
    fn classify_block(&self) -> Option<char> {
        let power: [f32; 8] = std::array::from_fn(|i| {
            let (s1, s2) = (self.s1[i], self.s2[i]);
            s1 * s1 + s2 * s2 - self.coeffs[i] * s1 * s2
        });
        let (row, row_power, row_second) = strongest(&power[..4]);
        let (col, col_power, col_second) = strongest(&power[4..]);
        let n = self.block_len as f32;
        // |X|^2 of a sine of amplitude A over n samples is (A n / 2)^2; its mean square A^2/2.
        let tone_power = 2.0 * (row_power + col_power) / (n * n);
        let block_power = self.energy / n;
        let ok = tone_power >= MIN_TONE_POWER
            && tone_power >= MIN_TONE_SHARE * block_power
            && row_power >= GROUP_DOMINANCE * row_second
            && col_power >= GROUP_DOMINANCE * col_second
            && row_power <= MAX_NORMAL_TWIST * col_power
            && col_power <= MAX_REVERSE_TWIST * row_power;
        ok.then_some(KEYS[row][col])
    }

    /// Turns per-block detections into one digit per press.
    fn debounce(&mut self, seen: Option<char>) -> Option<char> {
        if seen.is_some() && seen == self.candidate {
            self.run = self.run.saturating_add(1);
        } else {
            self.candidate = seen;
            self.run = u8::from(seen.is_some());
        }
        if let Some(pressed) = self.pressed {
            if seen == Some(pressed) {
                self.misses = 0;
            } else {
                self.misses += 1;
                if self.misses >= END_BLOCKS {
                    self.pressed = None;
                }
            }
        }
        if self.pressed.is_none() && self.run >= CONFIRM_BLOCKS {
            self.pressed = self.candidate;
            self.misses = 0;
            return self.pressed;
        }
        None
    }
}

/// The (row, column) frequencies of a key, Hz; lowercase a-d accepted.
pub(crate) fn digit_freqs(digit: char) -> Option<(f32, f32)> {
    let digit = digit.to_ascii_uppercase();
    let i = KEYS.iter().flatten().position(|&k| k == digit)?;
    Some((FREQS[i / 4], FREQS[4 + i % 4]))
}

/// Index and power of the strongest filter of a group, and the power of the runner-up.
fn strongest(group: &[f32]) -> (usize, f32, f32) {
    let mut best = (0, f32::MIN, f32::MIN);
    for (i, &p) in group.iter().enumerate() {
        if p > best.1 {
            best = (i, p, best.1);
        } else if p > best.2 {
            best.2 = p;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn freqs_of(digit: char) -> (f64, f64) {
        let (r, c) = digit_freqs(digit).unwrap();
        (f64::from(r), f64::from(c))
    }

    /// Appends `ms` of the given sines (frequency, amplitude); phases chosen by `phase`.
    fn tones(out: &mut Vec<f64>, rate: u32, ms: u32, parts: &[(f64, f64)], phase: f64) {
        let n = (rate * ms / 1000) as usize;
        for t in 0..n {
            let time = t as f64 / f64::from(rate);
            let v: f64 = parts
                .iter()
                .enumerate()
                .map(|(k, &(f, a))| {
                    a * (std::f64::consts::TAU * f * time + phase * (k + 1) as f64).sin()
                })
                .sum();
            out.push(v);
        }
    }

    fn digit(out: &mut Vec<f64>, rate: u32, ms: u32, d: char, row_amp: f64, col_amp: f64) {
        let (r, c) = freqs_of(d);
        tones(
            out,
            rate,
            ms,
            &[(r, row_amp), (c, col_amp)],
            out.len() as f64 * 0.37,
        );
    }

    fn silence(out: &mut Vec<f64>, rate: u32, ms: u32) {
        out.extend(std::iter::repeat_n(0.0, (rate * ms / 1000) as usize));
    }

    /// Adds Gaussian noise of the given RMS (xorshift + Box-Muller, fixed seed).
    fn add_noise(signal: &mut [f64], rms: f64) {
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut uniform = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        for s in signal.iter_mut() {
            let (u1, u2) = (uniform(), uniform());
            *s += rms * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        }
    }

    fn to_pcm(signal: &[f64]) -> Vec<i16> {
        signal
            .iter()
            .map(|&v| v.round().clamp(-32768.0, 32767.0) as i16)
            .collect()
    }

    /// Runs a detector over `pcm` fed in `chunk`-sample pieces.
    fn detect(rate: u32, pcm: &[i16], chunk: usize) -> String {
        let mut det = DtmfDetector::new(rate);
        pcm.chunks(chunk).filter_map(|c| det.push(c)).collect()
    }

    const ALL: &str = "123A456B789C*0#D";

    fn sequence(rate: u32, lead_ms: u32, noise_rms: f64) -> Vec<i16> {
        let mut s = Vec::new();
        silence(&mut s, rate, lead_ms);
        for d in ALL.chars() {
            digit(&mut s, rate, 50, d, 8000.0, 8000.0);
            silence(&mut s, rate, 50);
        }
        add_noise(&mut s, noise_rms);
        to_pcm(&s)
    }

    #[test]
    fn all_digits_50ms_tones_and_gaps() {
        for rate in [8000, 16000] {
            for lead_ms in [0, 3, 7, 11] {
                let pcm = sequence(rate, lead_ms, 0.0);
                for chunk in [rate as usize / 50, 7, 1] {
                    assert_eq!(
                        detect(rate, &pcm, chunk),
                        ALL,
                        "{rate} Hz, lead {lead_ms}, chunk {chunk}"
                    );
                }
            }
        }
    }

    #[test]
    fn all_digits_with_20db_snr_noise() {
        // Two tones of amplitude 8000 have power 64e6; 20 dB below that is RMS 800.
        for rate in [8000, 16000] {
            let pcm = sequence(rate, 5, 800.0);
            assert_eq!(detect(rate, &pcm, 160), ALL, "{rate} Hz");
            assert_eq!(detect(rate, &pcm, 7), ALL, "{rate} Hz");
        }
    }

    /// One tone burst of `ms`, preceded by `lead` samples and followed by silence.
    fn burst(rate: u32, lead: usize, ms: u32, d: char, row_amp: f64, col_amp: f64) -> Vec<i16> {
        let mut s = vec![0.0; lead];
        digit(&mut s, rate, ms, d, row_amp, col_amp);
        silence(&mut s, rate, 100);
        to_pcm(&s)
    }

    #[test]
    fn duration_limits_at_every_block_alignment() {
        for rate in [8000, 16000] {
            let block = (rate * 102 / 8000) as usize;
            for lead in (0..block).step_by(3) {
                let long = burst(rate, lead, 50, '5', 8000.0, 8000.0);
                assert_eq!(detect(rate, &long, 160), "5", "{rate} Hz, lead {lead}");
                let short = burst(rate, lead, 30, '5', 8000.0, 8000.0);
                assert_eq!(detect(rate, &short, 160), "", "{rate} Hz, lead {lead}");
            }
        }
    }

    #[test]
    fn twist_limits() {
        let db = |x: f64| 8000.0 * 10f64.powf(-x / 20.0);
        for rate in [8000, 16000] {
            for d in ['1', 'D', '5'] {
                // Normal twist: column weaker.
                assert_eq!(
                    detect(rate, &burst(rate, 0, 100, d, 8000.0, db(6.0)), 160),
                    d.to_string()
                );
                assert_eq!(
                    detect(rate, &burst(rate, 0, 100, d, 8000.0, db(10.0)), 160),
                    ""
                );
                // Reverse twist: row weaker.
                assert_eq!(
                    detect(rate, &burst(rate, 0, 100, d, db(3.0), 8000.0), 160),
                    d.to_string()
                );
                assert_eq!(
                    detect(rate, &burst(rate, 0, 100, d, db(6.0), 8000.0), 160),
                    ""
                );
            }
        }
    }

    #[test]
    fn level_floor() {
        // About -28 dBm0 per tone is detected, -45 dBm0 is not.
        assert_eq!(
            detect(8000, &burst(8000, 0, 100, '9', 900.0, 900.0), 160),
            "9"
        );
        assert_eq!(
            detect(8000, &burst(8000, 0, 100, '9', 130.0, 130.0), 160),
            ""
        );
    }

    #[test]
    fn non_dtmf_signals_rejected() {
        for rate in [8000, 16000] {
            let mut single = Vec::new();
            tones(&mut single, rate, 500, &[(1000.0, 8000.0)], 0.0);
            assert_eq!(detect(rate, &to_pcm(&single), 160), "");
            // Two row tones: no column.
            let mut chord = Vec::new();
            tones(
                &mut chord,
                rate,
                500,
                &[(697.0, 8000.0), (770.0, 8000.0)],
                0.0,
            );
            assert_eq!(detect(rate, &to_pcm(&chord), 160), "");
            // A valid pair plus a third tone of the same group.
            let mut three = Vec::new();
            tones(
                &mut three,
                rate,
                500,
                &[(697.0, 8000.0), (1209.0, 8000.0), (1336.0, 8000.0)],
                0.0,
            );
            assert_eq!(detect(rate, &to_pcm(&three), 160), "");
            // A pair drowned in broadband noise (tones hold well under 80% of the energy).
            let mut noisy = Vec::new();
            digit(&mut noisy, rate, 500, '5', 3000.0, 3000.0);
            add_noise(&mut noisy, 5000.0);
            assert_eq!(detect(rate, &to_pcm(&noisy), 160), "");
            let mut noise = vec![0.0; rate as usize];
            add_noise(&mut noise, 3000.0);
            assert_eq!(detect(rate, &to_pcm(&noise), 160), "");
            assert_eq!(detect(rate, &vec![0; rate as usize], 160), "");
        }
    }

    #[test]
    fn held_key_is_one_digit_and_repeats_are_new_digits() {
        for rate in [8000, 16000] {
            assert_eq!(
                detect(rate, &burst(rate, 0, 500, '#', 8000.0, 8000.0), 160),
                "#"
            );
            let mut s = Vec::new();
            for _ in 0..3 {
                digit(&mut s, rate, 60, '5', 8000.0, 8000.0);
                silence(&mut s, rate, 50);
            }
            assert_eq!(detect(rate, &to_pcm(&s), 7), "555");
        }
    }
}
