//! ITU-T G.711 μ-law (PCMU) and A-law (PCMA): one octet per 8 kHz sample.
//!
//! Decoding is a lookup in 256-entry tables built at compile time from the G.711 formulas;
//! encoding finds the segment from the position of the magnitude's top bit (the segment
//! search of the standard, without a loop). Both directions are stateless.

use super::CodecError;

/// μ-law bias: added before encoding so every segment starts at a power of two.
const ULAW_BIAS: i32 = 0x84;
/// Largest magnitude μ-law can carry before the bias would overflow the top segment.
const ULAW_CLIP: i32 = 32635;

/// Expands one μ-law octet to 16-bit linear PCM (G.711 table 2a, scaled by 4).
pub const fn ulaw_to_linear(code: u8) -> i16 {
    // Codes are transmitted inverted so that silence (0xFF) has many ones on the line.
    let u = !code;
    let exponent = (u >> 4) & 0x07;
    let mantissa = (u & 0x0F) as i32;
    let magnitude = (((mantissa << 3) + ULAW_BIAS) << exponent) - ULAW_BIAS;
    if u & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// Expands one A-law octet to 16-bit linear PCM (G.711 table 1a, scaled by 8).
pub const fn alaw_to_linear(code: u8) -> i16 {
    // Even bits are inverted on the line; the sign bit set means positive.
    let a = code ^ 0x55;
    let exponent = (a >> 4) & 0x07;
    let mantissa = (a & 0x0F) as i32;
    // Each value decodes to the middle of its quantisation interval.
    let magnitude = if exponent == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (exponent - 1)
    };
    if a & 0x80 != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

const fn build_table(alaw: bool) -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = if alaw {
            alaw_to_linear(i as u8)
        } else {
            ulaw_to_linear(i as u8)
        };
        i += 1;
    }
    table
}

static ULAW_TABLE: [i16; 256] = build_table(false);
static ALAW_TABLE: [i16; 256] = build_table(true);

/// Number of significant bits of a positive value: the segment search of G.711.
fn bit_length(value: i32) -> u32 {
    i32::BITS - value.leading_zeros()
}

/// Compresses one 16-bit linear sample to a μ-law octet.
pub fn linear_to_ulaw(sample: i16) -> u8 {
    let sample = i32::from(sample);
    // Negative samples fold by one's complement (-x - 1), as in the ITU-T G.191 reference
    // coder, so that -1 maps like 0 and both signs meet the decision levels alike.
    let (sign, magnitude) = if sample < 0 {
        (0x80, !sample)
    } else {
        (0, sample)
    };
    let biased = magnitude.min(ULAW_CLIP) + ULAW_BIAS;
    // The biased magnitude is 0x84..=0x7FFF: its top bit is bit 7 (segment 0) to 14 (segment 7).
    let exponent = bit_length(biased) - 8;
    let mantissa = (biased >> (exponent + 3)) & 0x0F;
    !(sign | (exponent << 4) as i32 | mantissa) as u8
}

/// Compresses one 16-bit linear sample to an A-law octet.
pub fn linear_to_alaw(sample: i16) -> u8 {
    // A-law works on 13 bits; negative values are folded with a one's complement so that
    // -1..-16 (13-bit) share the smallest negative code, mirroring 0..15.
    let x = i32::from(sample) >> 3;
    let (sign, magnitude) = if x >= 0 { (0x80, x) } else { (0, -x - 1) };
    let code = if magnitude < 32 {
        magnitude >> 1
    } else {
        // Segment e (1..=7) covers [16 << e, 32 << e); its 16 steps are 1 << e wide.
        let exponent = bit_length(magnitude) - 5;
        ((exponent as i32) << 4) | ((magnitude >> exponent) & 0x0F)
    };
    ((sign | code) ^ 0x55) as u8
}

/// Decodes a μ-law payload into `out`, one sample per octet.
pub fn decode_ulaw(payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
    decode_with(&ULAW_TABLE, payload, out)
}

/// Decodes an A-law payload into `out`, one sample per octet.
pub fn decode_alaw(payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
    decode_with(&ALAW_TABLE, payload, out)
}

fn decode_with(table: &[i16; 256], payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
    let out = out.get_mut(..payload.len()).ok_or(CodecError::new(
        "G.711 payload longer than the output buffer",
    ))?;
    for (sample, &code) in out.iter_mut().zip(payload) {
        *sample = table[usize::from(code)];
    }
    Ok(payload.len())
}

/// Encodes PCM at 8 kHz to μ-law, one octet per sample.
pub fn encode_ulaw(pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
    encode_with(linear_to_ulaw, pcm, out)
}

/// Encodes PCM at 8 kHz to A-law, one octet per sample.
pub fn encode_alaw(pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
    encode_with(linear_to_alaw, pcm, out)
}

fn encode_with(law: fn(i16) -> u8, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
    let out = out.get_mut(..pcm.len()).ok_or(CodecError::new(
        "G.711 output buffer smaller than the frame",
    ))?;
    for (code, &sample) in out.iter_mut().zip(pcm) {
        *code = law(sample);
    }
    Ok(pcm.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq: f64, amplitude: f64, rate: f64, len: usize) -> Vec<i16> {
        (0..len)
            .map(|n| {
                (amplitude * (2.0 * std::f64::consts::PI * freq * n as f64 / rate).sin()) as i16
            })
            .collect()
    }

    fn snr_db(reference: &[i16], decoded: &[i16]) -> f64 {
        let signal: f64 = reference.iter().map(|&s| f64::from(s).powi(2)).sum();
        let noise: f64 = reference
            .iter()
            .zip(decoded)
            .map(|(&r, &d)| (f64::from(r) - f64::from(d)).powi(2))
            .sum();
        10.0 * (signal / noise).log10()
    }

    #[test]
    fn ulaw_known_values() {
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(ulaw_to_linear(0x7F), 0);
        // Largest magnitudes: segment 7, step 15.
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(ulaw_to_linear(0xFE), 8);
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        assert_eq!(linear_to_ulaw(-1), 0x7F);
        // One's complement folding: -4 still rounds to the zero step, 4 does not.
        assert_eq!(linear_to_ulaw(4), 0xFE);
        assert_eq!(linear_to_ulaw(-4), 0x7F);
        assert_eq!(linear_to_ulaw(-5), 0x7E);
    }

    #[test]
    fn alaw_known_values() {
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xAA), 32256);
        assert_eq!(alaw_to_linear(0x2A), -32256);
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(linear_to_alaw(-1), 0x55);
        assert_eq!(linear_to_alaw(i16::MAX), 0xAA);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2A);
    }

    #[test]
    fn every_code_round_trips() {
        for code in 0..=255u8 {
            let expected_ulaw = if code == 0x7F { 0xFF } else { code };
            assert_eq!(
                linear_to_ulaw(ulaw_to_linear(code)),
                expected_ulaw,
                "μ-law {code:#04x}"
            );
            assert_eq!(
                linear_to_alaw(alaw_to_linear(code)),
                code,
                "A-law {code:#04x}"
            );
        }
    }

    #[test]
    fn tables_are_monotonic_in_magnitude() {
        // Within a sign, larger segment/step means larger magnitude: catches a swapped field.
        for code in 0..0x7Fu8 {
            assert!(ulaw_to_linear(code) < ulaw_to_linear(code + 1));
            assert!(ulaw_to_linear(0x80 + code) > ulaw_to_linear(0x81 + code));
        }
        let alaw_positive: Vec<i16> = (0x80..=0xFFu8).map(|c| alaw_to_linear(c ^ 0x55)).collect();
        assert!(alaw_positive.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn sine_snr_above_35_db() {
        let pcm = sine(1004.0, 16000.0, 8000.0, 8000);
        let mut bytes = vec![0u8; pcm.len()];
        let mut decoded = vec![0i16; pcm.len()];

        assert_eq!(encode_ulaw(&pcm, &mut bytes).unwrap(), pcm.len());
        assert_eq!(decode_ulaw(&bytes, &mut decoded).unwrap(), pcm.len());
        let ulaw = snr_db(&pcm, &decoded);
        assert!(ulaw > 35.0, "μ-law SNR {ulaw:.1} dB");

        assert_eq!(encode_alaw(&pcm, &mut bytes).unwrap(), pcm.len());
        assert_eq!(decode_alaw(&bytes, &mut decoded).unwrap(), pcm.len());
        let alaw = snr_db(&pcm, &decoded);
        assert!(alaw > 35.0, "A-law SNR {alaw:.1} dB");
    }

    #[test]
    fn short_buffers_are_errors() {
        let mut out = [0i16; 159];
        assert!(decode_ulaw(&[0xFF; 160], &mut out).is_err());
        assert!(decode_alaw(&[0xD5; 160], &mut out).is_err());
        let mut bytes = [0u8; 10];
        assert!(encode_ulaw(&[0; 11], &mut bytes).is_err());
        assert!(encode_alaw(&[0; 11], &mut bytes).is_err());
    }
}
