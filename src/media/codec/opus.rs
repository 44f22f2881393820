//! Opus (RFC 6716, RTP mapping RFC 7587) through the system libopus.
//!
//! The PBX runs Opus as a 16 kHz mono voice codec: wideband is what telephony audio
//! needs, it keeps the engine's internal rate at 16 kHz for every wideband codec, and
//! libopus resamples internally. RFC 7587 fixes the SDP as `opus/48000/2` and the RTP
//! clock at 48 kHz whatever the codec's internal rate, so only the timestamps scale (x3).
//!
//! The encoder turns on in-band FEC: each packet carries a low-bitrate copy of the
//! previous frame, which the decoder uses to rebuild a lost packet from the next one.

use super::CodecError;

/// The PCM rate both directions use.
pub const PCM_RATE: u32 = 16_000;
/// Opus frame durations are multiples of 2.5 ms: 40 samples at 16 kHz.
const GRANULE: usize = 40;
/// The longest Opus packet is 120 ms: 1920 samples at 16 kHz.
const MAX_FRAME: usize = 1920;
/// Nothing larger fits in a UDP datagram; also keeps lengths inside libopus's `int`.
const MAX_PAYLOAD: usize = 65_507;
/// Voice bitrate: wideband SILK with room for the FEC copy, which libopus only adds
/// above a bitrate threshold that its automatic choice at 16 kHz barely reaches.
const BITRATE: i32 = 24_000;
/// Expected loss rate the encoder sizes its FEC for.
const PACKET_LOSS_PERCENT: i32 = 10;

fn opus_error(err: ::opus::Error) -> CodecError {
    CodecError::new(err.description())
}

/// A 16 kHz mono Opus decoder.
pub struct OpusDecoder {
    decoder: ::opus::Decoder,
}

impl OpusDecoder {
    pub fn new() -> Result<OpusDecoder, CodecError> {
        let decoder = ::opus::Decoder::new(PCM_RATE, ::opus::Channels::Mono).map_err(opus_error)?;
        Ok(OpusDecoder { decoder })
    }

    /// Decodes one packet (a stereo packet is downmixed) into `out`.
    pub fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        if payload.is_empty() {
            return Err(CodecError::new("empty Opus payload"));
        }
        if payload.len() > MAX_PAYLOAD {
            return Err(CodecError::new("Opus payload larger than a datagram"));
        }
        let len = out.len().min(MAX_FRAME);
        self.decoder
            .decode(payload, &mut out[..len], false)
            .map_err(opus_error)
    }

    /// Fills `samples` (a multiple of 2.5 ms) for a lost packet: from the FEC data in
    /// `next` when given, else by libopus's packet loss concealment. After recovering from
    /// `next`, the caller decodes `next` itself as usual.
    pub fn conceal(
        &mut self,
        next: Option<&[u8]>,
        samples: usize,
        out: &mut [i16],
    ) -> Result<usize, CodecError> {
        if samples == 0 || !samples.is_multiple_of(GRANULE) || samples > MAX_FRAME {
            return Err(CodecError::new(
                "Opus concealment must be 2.5..120 ms in 2.5 ms steps",
            ));
        }
        let out = out.get_mut(..samples).ok_or(CodecError::new(
            "output buffer smaller than the concealed span",
        ))?;
        let written = match next {
            Some(packet) if !packet.is_empty() && packet.len() <= MAX_PAYLOAD => {
                self.decoder.decode(packet, out, true)
            }
            Some(_) => return Err(CodecError::new("unusable Opus packet for FEC")),
            None => self.decoder.decode(&[], out, false),
        };
        written.map_err(opus_error)
    }
}

/// A 16 kHz mono Opus encoder tuned for voice with in-band FEC.
pub struct OpusEncoder {
    encoder: ::opus::Encoder,
}

impl OpusEncoder {
    pub fn new() -> Result<OpusEncoder, CodecError> {
        let mut encoder =
            ::opus::Encoder::new(PCM_RATE, ::opus::Channels::Mono, ::opus::Application::Voip)
                .map_err(opus_error)?;
        encoder
            .set_bitrate(::opus::Bitrate::Bits(BITRATE))
            .map_err(opus_error)?;
        encoder.set_inband_fec(true).map_err(opus_error)?;
        encoder
            .set_packet_loss_perc(PACKET_LOSS_PERCENT)
            .map_err(opus_error)?;
        Ok(OpusEncoder { encoder })
    }

    /// Encodes one frame of 2.5 to 120 ms (libopus rejects other lengths).
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        if pcm.len() > MAX_FRAME {
            return Err(CodecError::new("Opus frame longer than 120 ms"));
        }
        let len = out.len().min(MAX_PAYLOAD);
        self.encoder
            .encode(pcm, &mut out[..len])
            .map_err(opus_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    /// 20 ms frames of a tone whose frequency is `freq(frame index)`, phase-continuous.
    fn tone_frames(count: usize, freq: impl Fn(usize) -> f64) -> Vec<Vec<i16>> {
        let mut phase = 0.0f64;
        (0..count)
            .map(|i| {
                let step = 2.0 * PI * freq(i) / f64::from(PCM_RATE);
                (0..320)
                    .map(|_| {
                        phase += step;
                        (8000.0 * phase.sin()) as i16
                    })
                    .collect()
            })
            .collect()
    }

    fn encode_all(frames: &[Vec<i16>]) -> Vec<Vec<u8>> {
        let mut encoder = OpusEncoder::new().unwrap();
        let mut out = [0u8; 1500];
        frames
            .iter()
            .map(|f| {
                let n = encoder.encode(f, &mut out).unwrap();
                out[..n].to_vec()
            })
            .collect()
    }

    /// Power of `freq` in `pcm` (Goertzel).
    fn power_at(pcm: &[i16], freq: f64) -> f64 {
        let coeff = 2.0 * (2.0 * PI * freq / f64::from(PCM_RATE)).cos();
        let (mut s1, mut s2) = (0.0, 0.0);
        for &x in pcm {
            let s0 = f64::from(x) + coeff * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        s1 * s1 + s2 * s2 - coeff * s1 * s2
    }

    fn dominant_frequency(pcm: &[i16]) -> f64 {
        (2..160)
            .map(|i| f64::from(i) * 50.0)
            .max_by(|a, b| power_at(pcm, *a).total_cmp(&power_at(pcm, *b)))
            .unwrap()
    }

    fn rms(pcm: &[i16]) -> f64 {
        (pcm.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / pcm.len() as f64).sqrt()
    }

    #[test]
    fn sine_round_trip_keeps_its_frequency() {
        let frames = tone_frames(25, |_| 1000.0);
        let packets = encode_all(&frames);
        let mut decoder = OpusDecoder::new().unwrap();
        let mut decoded = Vec::new();
        let mut out = [0i16; 960];
        for packet in &packets {
            assert!(packet.len() < 200, "{} bytes for 20 ms", packet.len());
            let n = decoder.decode(packet, &mut out).unwrap();
            assert_eq!(n, 320);
            decoded.extend_from_slice(&out[..n]);
        }
        // Skip the first 100 ms: encoder warm-up and codec delay.
        let steady = &decoded[1600..];
        assert_eq!(dominant_frequency(steady), 1000.0);
        let level = rms(steady) / rms(&frames[10]);
        assert!((0.5..2.0).contains(&level), "level ratio {level}");
    }

    #[test]
    fn fec_recovers_a_lost_frame_that_plc_cannot_guess() {
        // The tone changes from 500 Hz to 1500 Hz at the frame that is lost, so only the
        // FEC copy carried in the next packet can know the new pitch.
        let frames = tone_frames(12, |i| if i < 10 { 500.0 } else { 1500.0 });
        let packets = encode_all(&frames);
        let mut with_fec = OpusDecoder::new().unwrap();
        let mut plc_only = OpusDecoder::new().unwrap();
        let mut out = [0i16; 960];
        for packet in &packets[..10] {
            with_fec.decode(packet, &mut out).unwrap();
            plc_only.decode(packet, &mut out).unwrap();
        }
        // Packet 10 is lost; packet 11 arrived.
        let mut recovered = [0i16; 320];
        let n = with_fec
            .conceal(Some(&packets[11]), 320, &mut recovered)
            .unwrap();
        assert_eq!(n, 320);
        let mut guessed = [0i16; 320];
        assert_eq!(plc_only.conceal(None, 320, &mut guessed).unwrap(), 320);

        // Judge the second half: the first carries the old tone through the codec delay.
        let fec_half = &recovered[160..];
        let plc_half = &guessed[160..];
        assert!(
            rms(fec_half) > 0.25 * rms(&frames[10]),
            "FEC frame too quiet"
        );
        assert!(power_at(fec_half, 1500.0) > 4.0 * power_at(fec_half, 500.0));
        assert!(power_at(plc_half, 1500.0) < power_at(plc_half, 500.0));
        // Decoding continues normally with the packet that carried the FEC.
        assert_eq!(with_fec.decode(&packets[11], &mut out).unwrap(), 320);
    }

    #[test]
    fn plc_without_next_continues_the_signal() {
        let frames = tone_frames(10, |_| 800.0);
        let packets = encode_all(&frames);
        let mut decoder = OpusDecoder::new().unwrap();
        let mut out = [0i16; 960];
        for packet in &packets[..9] {
            decoder.decode(packet, &mut out).unwrap();
        }
        assert_eq!(decoder.conceal(None, 320, &mut out).unwrap(), 320);
        assert!(rms(&out[..320]) > 0.1 * rms(&frames[8]));
        assert_eq!(dominant_frequency(&out[..320]), 800.0);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let mut decoder = OpusDecoder::new().unwrap();
        let mut out = [0i16; 960];
        assert!(decoder.decode(&[], &mut out).is_err());
        // TOC code 3 with a frame count of zero is malformed (RFC 6716 §3.2.5).
        assert!(decoder.decode(&[0x03, 0x00], &mut out).is_err());
        // Arbitrary bytes must not panic, whatever libopus makes of them.
        let mut seed = 0x1234_5678u32;
        for len in 1..200 {
            let garbage: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    (seed >> 24) as u8
                })
                .collect();
            let _ = decoder.decode(&garbage, &mut out);
        }
        // A 60 ms packet does not fit in 20 ms of output.
        let mut encoder = OpusEncoder::new().unwrap();
        let mut packet = [0u8; 1500];
        let n = encoder.encode(&[0; 960], &mut packet).unwrap();
        assert!(decoder.decode(&packet[..n], &mut out[..320]).is_err());
        assert_eq!(decoder.decode(&packet[..n], &mut out).unwrap(), 960);
        // Concealment spans must be whole 2.5 ms granules within the buffer.
        assert!(decoder.conceal(None, 100, &mut out).is_err());
        assert!(decoder.conceal(None, 0, &mut out).is_err());
        assert!(decoder.conceal(None, 960, &mut out[..320]).is_err());
        assert!(decoder.conceal(Some(&[]), 320, &mut out).is_err());
        // Frame lengths libopus does not support.
        assert!(encoder.encode(&[0; 300], &mut packet).is_err());
        assert!(encoder.encode(&[0; 4000], &mut packet).is_err());
    }
}
