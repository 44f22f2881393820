//! ITU-T G.722 at 64 kbit/s (mode 1): 16 kHz wideband audio in one octet per two samples.
//!
//! Written from the Recommendation rather than taken from a crate: the one Rust crate
//! (`ezk-g722`) drags in an async media framework and returns a fresh `Vec` per call,
//! while the codec itself is a few hundred lines of integer arithmetic with fixed state.
//!
//! Structure (G.722 §3/§4): a 24-tap quadrature mirror filter splits 16 kHz PCM into a
//! 0–4 kHz and a 4–8 kHz band at 8 kHz each; the lower band is coded with 6-bit ADPCM,
//! the upper with 2-bit ADPCM, each with its own adaptive pole-zero predictor. The octet
//! carries the upper band's code in its two high bits. Arithmetic follows the
//! Recommendation's 16-bit fixed point (saturating adds, `mult` = product >> 15) so the
//! bitstream interoperates with other implementations; the encoder runs the same
//! predictor update as the decoder, so both track the same state.

use super::CodecError;

/// QMF coefficients h0..h23 of the Recommendation, scaled by 2^13; the filter is symmetric.
const QMF: [i32; 24] = [
    3, -11, -11, 53, 12, -156, 32, 362, -210, -805, 951, 3876, 3876, 951, -805, -210, 362, 32,
    -156, 12, 53, -11, -11, 3,
];

/// Lower-band quantiser decision levels; level i is `(Q6[i] * det) >> 12`.
const Q6: [i32; 30] = [
    0, 35, 72, 110, 150, 190, 233, 276, 323, 370, 422, 473, 530, 587, 650, 714, 786, 858, 940,
    1023, 1121, 1219, 1339, 1458, 1612, 1765, 1980, 2195, 2557, 2919,
];
/// 6-bit codes for interval 1..=30 of a negative / positive difference (ILN, ILP).
const ILN: [u8; 31] = [
    0, 63, 62, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11,
    10, 9, 8, 7, 6, 5, 4,
];
const ILP: [u8; 31] = [
    0, 61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51, 50, 49, 48, 47, 46, 45, 44, 43, 42, 41, 40, 39,
    38, 37, 36, 35, 34, 33, 32,
];
/// Inverse quantiser outputs for the full 6-bit lower-band code (decoder output, QM6).
const QM6: [i32; 64] = [
    -136, -136, -136, -136, -24808, -21904, -19008, -16704, -14984, -13512, -12280, -11192, -10232,
    -9360, -8576, -7856, -7192, -6576, -6000, -5456, -4944, -4464, -4008, -3576, -3168, -2776,
    -2400, -2032, -1688, -1360, -1040, -728, 24808, 21904, 19008, 16704, 14984, 13512, 12280,
    11192, 10232, 9360, 8576, 7856, 7192, 6576, 6000, 5456, 4944, 4464, 4008, 3576, 3168, 2776,
    2400, 2032, 1688, 1360, 1040, 728, 432, 136, -432, -136,
];
/// Inverse quantiser for the code truncated to 4 bits (QM4): what drives the predictor, so
/// that the 56/48 kbit/s modes that steal low bits for data still track the encoder.
const QM4: [i32; 16] = [
    0, -20456, -12896, -8968, -6288, -4240, -2584, -1200, 20456, 12896, 8968, 6288, 4240, 2584,
    1200, 0,
];
/// Log scale factor increments per 4-bit code (WL indexed through RIL4).
const WL4: [i32; 16] = [
    -60, 3042, 1198, 538, 334, 172, 58, -30, 3042, 1198, 538, 334, 172, 58, -30, -60,
];
/// Upper-band inverse quantiser (QM2) and log scale factor increments (WH through RIH2).
const QM2: [i32; 4] = [-7408, -1616, 7408, 1616];
const WH2: [i32; 4] = [798, -214, 798, -214];
/// Upper-band decision level, in the same units as `Q6`.
const Q2: i32 = 564;
/// 2^(i/32) scaled by 2^11: the antilog table of the scale factor (ILB).
const ILB: [i32; 32] = [
    2048, 2093, 2139, 2186, 2233, 2282, 2332, 2383, 2435, 2489, 2543, 2599, 2656, 2714, 2774, 2834,
    2896, 2960, 3025, 3091, 3158, 3228, 3298, 3371, 3444, 3520, 3597, 3676, 3756, 3838, 3922, 4008,
];

/// Upper bounds of the log scale factors (NBL, NBH).
const NBL_MAX: i32 = 18432;
const NBH_MAX: i32 = 22528;

fn sat(x: i32) -> i32 {
    x.clamp(i32::from(i16::MIN), i32::from(i16::MAX))
}

/// The Recommendation's 16-bit fractional multiply.
fn mult(a: i32, b: i32) -> i32 {
    sat((a * b) >> 15)
}

/// Reconstructed sub-band signals are held to 15 bits (LIMIT).
fn limit(x: i32) -> i32 {
    x.clamp(-16384, 16383)
}

/// Scale factor from its log (SCALEL / SCALEH): `shift` is 8 for the lower band, 10 for
/// the upper, giving 2^(nb/2048) in the band's units.
fn scale_factor(nb: i32, shift: i32) -> i32 {
    let mantissa = ILB[((nb >> 6) & 31) as usize];
    let exponent = shift - (nb >> 11);
    let value = if exponent >= 0 {
        mantissa >> exponent
    } else {
        mantissa << -exponent
    };
    value << 2
}

/// Sign as the Recommendation takes it: the sign bit, so zero counts as positive.
fn negative(x: i32) -> bool {
    x < 0
}

/// One sub-band's ADPCM state: the adaptive predictor (2 poles, 6 zeros) and the
/// quantiser scale factor. Encoder and decoder run identical copies.
#[derive(Clone, Debug)]
struct Band {
    /// Predicted signal for the next sample (SL / SH).
    s: i32,
    /// Zero-section part of `s` (SZL / SZH).
    sz: i32,
    /// Reconstructed signal r[0] (current), r[1], r[2].
    r: [i32; 3],
    /// Partially reconstructed signal (difference plus zero prediction).
    p: [i32; 3],
    /// Pole coefficients a[1], a[2] (a[0] unused), Q14.
    a: [i32; 3],
    /// Quantised differences d[0] (current) .. d[6].
    d: [i32; 7],
    /// Zero coefficients b[1]..b[6] (b[0] unused), Q14.
    b: [i32; 7],
    /// Log scale factor (NBL / NBH) and scale factor (DETL / DETH).
    nb: i32,
    det: i32,
}

impl Band {
    fn new(det: i32) -> Band {
        Band {
            s: 0,
            sz: 0,
            r: [0; 3],
            p: [0; 3],
            a: [0; 3],
            d: [0; 7],
            b: [0; 7],
            nb: 0,
            det,
        }
    }

    /// Lower band: quantised difference and scale adaptation for a 6-bit code.
    fn update_lower(&mut self, code: u8) {
        let truncated = usize::from(code >> 2);
        let dq = mult(self.det, QM4[truncated]);
        self.nb = sat(mult(self.nb, 32512) + WL4[truncated]).clamp(0, NBL_MAX);
        self.det = scale_factor(self.nb, 8);
        self.predict(dq);
    }

    /// Upper band: the same for a 2-bit code.
    fn update_upper(&mut self, code: u8) {
        let code = usize::from(code);
        let dq = mult(self.det, QM2[code]);
        self.nb = sat(mult(self.nb, 32512) + WH2[code]).clamp(0, NBH_MAX);
        self.det = scale_factor(self.nb, 10);
        self.predict(dq);
    }

    /// Adapts the predictor to the new quantised difference `dq` and computes the next
    /// prediction (blocks RECONS, PARREC, UPZERO, UPPOL2, UPPOL1, FILTEZ, FILTEP, PREDIC).
    fn predict(&mut self, dq: i32) {
        self.d[0] = dq;
        self.p[0] = sat(dq + self.sz);
        self.r[0] = sat(self.s + dq);

        // Zero section: sign-sign LMS with leakage 2^-8; no step when the difference is 0.
        let step = if dq == 0 { 0 } else { 128 };
        let sign0 = negative(dq);
        for i in (1..7).rev() {
            let leaked = mult(self.b[i], 32640);
            self.b[i] = if negative(self.d[i]) == sign0 {
                sat(leaked + step)
            } else {
                sat(leaked - step)
            };
            self.d[i] = self.d[i - 1];
        }

        // Second pole, then the first with the stability limit |a1| <= 1 - 2^-4 - a2.
        let (sg0, sg1, sg2) = (
            negative(self.p[0]),
            negative(self.p[1]),
            negative(self.p[2]),
        );
        let a1_term = sat(self.a[1] * 4);
        let a1_term = (if sg0 == sg1 { sat(-a1_term) } else { a1_term }) >> 7;
        let correlation = if sg0 == sg2 { 128 } else { -128 };
        self.a[2] = sat(sat(a1_term + correlation) + mult(self.a[2], 32512)).clamp(-12288, 12288);
        let step = if sg0 == sg1 { 192 } else { -192 };
        let bound = sat(15360 - self.a[2]);
        self.a[1] = sat(step + mult(self.a[1], 32640)).clamp(-bound, bound);
        self.p[2] = self.p[1];
        self.p[1] = self.p[0];

        self.sz = (1..7)
            .rev()
            .fold(0, |acc, i| sat(acc + mult(sat(self.d[i] * 2), self.b[i])));
        self.r[2] = self.r[1];
        self.r[1] = self.r[0];
        let sp = sat(mult(self.a[1], sat(self.r[1] * 2)) + mult(self.a[2], sat(self.r[2] * 2)));
        self.s = sat(sp + self.sz);
    }
}

/// The difference's magnitude as the quantisers compare it: |x| for x >= 0, -x - 1 below.
fn quantiser_magnitude(x: i32) -> i32 {
    if x >= 0 { x } else { -x - 1 }
}

/// QUANTL: 6-bit code of the lower-band prediction error.
fn quantize_lower(el: i32, det: i32) -> u8 {
    let magnitude = quantiser_magnitude(el);
    // First decision level above the magnitude; interval 30 is open-ended.
    let interval = (1..30)
        .find(|&i| (Q6[i] * det) >> 12 > magnitude)
        .unwrap_or(30);
    if el < 0 { ILN[interval] } else { ILP[interval] }
}

/// QUANTH: 2-bit code of the upper-band prediction error.
fn quantize_upper(eh: i32, det: i32) -> u8 {
    let outer = quantiser_magnitude(eh) >= (Q2 * det) >> 12;
    match (eh < 0, outer) {
        (true, false) => 1,
        (true, true) => 0,
        (false, false) => 3,
        (false, true) => 2,
    }
}

/// G.722 encoder state (QMF history and both bands' ADPCM state).
#[derive(Clone, Debug)]
pub struct G722Encoder {
    /// Last 24 input samples, newest first.
    history: [i32; 24],
    low: Band,
    high: Band,
}

impl Default for G722Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl G722Encoder {
    pub fn new() -> G722Encoder {
        G722Encoder {
            history: [0; 24],
            low: Band::new(32),
            high: Band::new(8),
        }
    }

    /// Encodes 16 kHz PCM (an even number of samples) into `pcm.len() / 2` octets.
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        if !pcm.len().is_multiple_of(2) {
            return Err(CodecError::new(
                "G.722 frames need an even number of samples",
            ));
        }
        let octets = pcm.len() / 2;
        let out = out.get_mut(..octets).ok_or(CodecError::new(
            "G.722 output buffer smaller than the frame",
        ))?;
        for (octet, pair) in out.iter_mut().zip(pcm.chunks_exact(2)) {
            let (xl, xh) = self.analyse(pair[0], pair[1]);

            let el = sat(xl - self.low.s);
            let il = quantize_lower(el, self.low.det);
            self.low.update_lower(il);

            let eh = sat(xh - self.high.s);
            let ih = quantize_upper(eh, self.high.det);
            self.high.update_upper(ih);

            *octet = (ih << 6) | il;
        }
        Ok(octets)
    }

    /// Transmit QMF: two input samples in, one lower- and one upper-band sample out.
    fn analyse(&mut self, first: i16, second: i16) -> (i32, i32) {
        self.history.copy_within(0..22, 2);
        self.history[0] = i32::from(second);
        self.history[1] = i32::from(first);
        let (mut even, mut odd) = (0, 0);
        for (i, pair) in self.history.chunks_exact(2).enumerate() {
            even += QMF[2 * i] * pair[0];
            odd += QMF[2 * i + 1] * pair[1];
        }
        // The bands come out at half the input's scale (15 bits for 16-bit input), limited
        // as in the ITU-T reference code (FFmpeg skips the limit, so near full scale their
        // bitstreams differ; any decoder handles both).
        (limit((even + odd) >> 14), limit((even - odd) >> 14))
    }
}

/// G.722 decoder state.
#[derive(Clone, Debug)]
pub struct G722Decoder {
    /// Receive QMF history, newest first: (rl - rh, rl + rh) pairs.
    history: [i32; 24],
    low: Band,
    high: Band,
}

impl Default for G722Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl G722Decoder {
    pub fn new() -> G722Decoder {
        G722Decoder {
            history: [0; 24],
            low: Band::new(32),
            high: Band::new(8),
        }
    }

    /// Decodes octets into `2 * payload.len()` samples of 16 kHz PCM.
    pub fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        let samples = payload.len() * 2;
        let out = out.get_mut(..samples).ok_or(CodecError::new(
            "G.722 payload longer than the output buffer",
        ))?;
        for (&octet, pair) in payload.iter().zip(out.chunks_exact_mut(2)) {
            let il = octet & 0x3F;
            let ih = octet >> 6;

            let rl = limit(sat(self.low.s + mult(self.low.det, QM6[usize::from(il)])));
            self.low.update_lower(il);

            self.high.update_upper(ih);
            let rh = limit(self.high.r[0]);

            let (first, second) = self.synthesise(rl, rh);
            pair[0] = first;
            pair[1] = second;
        }
        Ok(samples)
    }

    /// Receive QMF: one sample of each band in, two 16 kHz samples out.
    fn synthesise(&mut self, rl: i32, rh: i32) -> (i16, i16) {
        self.history.copy_within(0..22, 2);
        self.history[0] = sat(rl - rh);
        self.history[1] = sat(rl + rh);
        let (mut even, mut odd) = (0, 0);
        for (i, pair) in self.history.chunks_exact(2).enumerate() {
            even += QMF[2 * i] * pair[0];
            odd += QMF[2 * i + 1] * pair[1];
        }
        (sat(even >> 11) as i16, sat(odd >> 11) as i16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    fn sine(freq: f64, amplitude: f64, len: usize) -> Vec<i16> {
        (0..len)
            .map(|n| (amplitude * (2.0 * PI * freq * n as f64 / 16000.0).sin()).round() as i16)
            .collect()
    }

    fn round_trip(pcm: &[i16]) -> Vec<i16> {
        let mut encoder = G722Encoder::new();
        let mut decoder = G722Decoder::new();
        let mut decoded = Vec::new();
        let mut bytes = [0u8; 160];
        let mut frame = [0i16; 320];
        for chunk in pcm.chunks(320) {
            let n = encoder.encode(chunk, &mut bytes).unwrap();
            let m = decoder.decode(&bytes[..n], &mut frame).unwrap();
            decoded.extend_from_slice(&frame[..m]);
        }
        decoded
    }

    /// SNR of `decoded` against `reference` delayed by `delay`, ignoring the first `skip`.
    fn snr_db(reference: &[i16], decoded: &[i16], delay: usize, skip: usize) -> f64 {
        let (mut signal, mut noise) = (0.0, 0.0);
        for n in skip..reference.len() - delay {
            let r = f64::from(reference[n]);
            signal += r * r;
            noise += (r - f64::from(decoded[n + delay])).powi(2);
        }
        10.0 * (signal / noise).log10()
    }

    /// One second of noise plus two triangle waves (about 500 Hz and 5.3 kHz), integer-only
    /// so the fixture does not depend on the platform's libm.
    fn fixture_signal() -> Vec<i16> {
        let mut seed = 0x2545_f491u32;
        (0..16000i32)
            .map(|n| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let noise = i32::from((seed >> 16) as i16) / 16;
                let triangle = |period: i32, amplitude: i32| {
                    let phase = (n * 1000) % period;
                    amplitude * (2 * (2 * phase - period).abs() - period) / period
                };
                (noise + triangle(32_000, 9000) + triangle(3019, 3000)) as i16
            })
            .collect()
    }

    fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
        bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        })
    }

    #[test]
    fn bitstream_matches_an_independent_implementation() {
        // Expected values come from FFmpeg's G.722 encoder and decoder (libavcodec), run on
        // the same input: an interop check that no self round trip can give.
        let pcm = fixture_signal();
        let mut encoded = vec![0u8; 8000];
        assert_eq!(G722Encoder::new().encode(&pcm, &mut encoded).unwrap(), 8000);
        assert_eq!(
            encoded[..16],
            [
                0x90, 0x20, 0x84, 0x20, 0x85, 0x20, 0x21, 0xad, 0x30, 0x3a, 0x9a, 0x1a, 0x0f, 0x8d,
                0x12, 0x53
            ]
        );
        assert_eq!(fnv1a(encoded.iter().copied()), 0x5ec7_5b5d_9769_7277);

        let mut decoded = vec![0i16; 16000];
        assert_eq!(
            G722Decoder::new().decode(&encoded, &mut decoded).unwrap(),
            16000
        );
        let bytes = decoded.iter().flat_map(|s| s.to_le_bytes());
        assert_eq!(fnv1a(bytes), 0xbdd5_1f8e_6766_13da);
    }

    #[test]
    fn scale_factor_matches_the_recommendation_range() {
        // Lower band: NBL 0 gives the minimum step 32, NBL_MAX the maximum 16384.
        assert_eq!(scale_factor(0, 8), 32);
        assert_eq!(scale_factor(NBL_MAX, 8), 16384);
        // Upper band: minimum 8 and the same maximum.
        assert_eq!(scale_factor(0, 10), 8);
        assert_eq!(scale_factor(NBH_MAX, 10), 16384);
        // Some interior points: 2^(nb/2048) with the table's truncation.
        assert_eq!(scale_factor(19 << 6, 10), 12);
        assert_eq!(scale_factor(351 << 6, 10), 16032);
        assert_eq!(scale_factor(289 << 6, 10), 4184);
    }

    #[test]
    fn quantisers_pick_the_documented_codes() {
        // Tiny errors land in interval 1 (61 positive, 63 negative), huge ones in 30. At the
        // smallest step the integer decision levels below 150 truncate to 0: interval 4.
        assert_eq!(quantize_lower(0, 16384), 61);
        assert_eq!(quantize_lower(-1, 16384), 63);
        assert_eq!(quantize_lower(0, 32), 58);
        assert_eq!(quantize_lower(-1, 32), 30);
        assert_eq!(quantize_lower(16000, 32), 32);
        assert_eq!(quantize_lower(-16000, 32), 4);
        assert_eq!(quantize_upper(0, 8), 3);
        assert_eq!(quantize_upper(-1, 8), 1);
        assert_eq!(quantize_upper(5000, 8), 2);
        assert_eq!(quantize_upper(-5000, 8), 0);
    }

    #[test]
    fn twenty_ms_is_160_octets() {
        let mut encoder = G722Encoder::new();
        let mut out = [0u8; 1500];
        assert_eq!(encoder.encode(&[0; 320], &mut out).unwrap(), 160);
        let mut decoder = G722Decoder::new();
        let mut pcm = [0i16; 960];
        assert_eq!(decoder.decode(&out[..160], &mut pcm).unwrap(), 320);
    }

    #[test]
    fn silence_stays_silent() {
        let mut encoder = G722Encoder::new();
        let mut decoder = G722Decoder::new();
        let mut bytes = [0u8; 160];
        let mut pcm = [0i16; 320];
        for _ in 0..5 {
            encoder.encode(&[0; 320], &mut bytes).unwrap();
            decoder.decode(&bytes, &mut pcm).unwrap();
            assert!(pcm.iter().all(|s| s.abs() < 16), "{pcm:?}");
        }
    }

    #[test]
    fn codec_delay_is_22_samples() {
        // Broadband input makes the delay unambiguous (a sine would repeat every period).
        let mut seed = 1u32;
        let noise: Vec<i16> = (0..8000)
            .map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                ((seed >> 16) as i16) / 8
            })
            .collect();
        let decoded = round_trip(&noise);
        let snr_at = |delay: usize| snr_db(&noise, &decoded, delay, 800);
        assert!(snr_at(22) > 8.0, "SNR {:.1} dB", snr_at(22));
        for delay in (0..64).filter(|&d| d != 22) {
            assert!(
                snr_at(delay) < 4.0,
                "delay {delay}: {:.1} dB",
                snr_at(delay)
            );
        }
    }

    #[test]
    fn one_khz_round_trip() {
        let pcm = sine(1000.0, 10000.0, 16000);
        let decoded = round_trip(&pcm);
        let snr = snr_db(&pcm, &decoded, 22, 1600);
        assert!(snr > 40.0, "1 kHz SNR {snr:.1} dB");
    }

    #[test]
    fn five_khz_survives_in_the_upper_band() {
        let pcm = sine(5000.0, 10000.0, 16000);
        let decoded = round_trip(&pcm);
        // Coded with only 2 bits per sample, but present: G.711 at 8 kHz would lose it all.
        let snr = snr_db(&pcm, &decoded, 22, 1600);
        assert!(snr > 18.0, "5 kHz SNR {snr:.1} dB");
    }

    #[test]
    fn odd_frames_and_short_buffers_are_errors() {
        let mut encoder = G722Encoder::new();
        let mut out = [0u8; 160];
        assert!(encoder.encode(&[0; 321], &mut out).is_err());
        assert!(encoder.encode(&[0; 322], &mut out).is_err());
        let mut decoder = G722Decoder::new();
        let mut pcm = [0i16; 319];
        assert!(decoder.decode(&[0; 160], &mut pcm).is_err());
    }

    #[test]
    fn full_scale_input_does_not_overflow() {
        let square: Vec<i16> = (0..3200)
            .map(|n| if (n / 4) % 2 == 0 { i16::MAX } else { i16::MIN })
            .collect();
        let decoded = round_trip(&square);
        assert_eq!(decoded.len(), square.len());
        let noise: Vec<i16> = (0..3200u32)
            .map(|n| (n.wrapping_mul(2_654_435_761) >> 16) as i16)
            .collect();
        assert_eq!(round_trip(&noise).len(), noise.len());
    }
}
