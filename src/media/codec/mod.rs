//! Audio codecs of the media engine: G.711 μ-law/A-law, G.722 and Opus behind one
//! `Decoder`/`Encoder` pair, so transcoding code only picks a `CodecKind`.
//!
//! Every codec exchanges mono 16-bit PCM at its own natural rate (`pcm_rate`: 8 kHz for
//! G.711, 16 kHz for G.722 and Opus); converting between rates is the resampler's job.
//! RTP timestamps run at a clock that is not always that rate (G.722 counts 8 kHz, Opus
//! 48 kHz), so `rtp_ticks`/`pcm_samples` convert between the two.
//!
//! Nothing here allocates per packet: decoders and encoders own fixed state, and a packet
//! that is malformed or does not fit the caller's buffer is an error, never a panic.

pub mod g711;
pub mod g722;
pub mod opus;

use std::borrow::Cow;
use std::fmt;

/// The codecs the engine can decode and encode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CodecKind {
    Pcmu,
    Pcma,
    G722,
    Opus,
}

impl CodecKind {
    /// From an SDP rtpmap name/clock/channels: PCMU/8000, PCMA/8000, G722/8000 (RFC 3551:
    /// G.722's RTP clock is 8000 although it samples at 16 kHz), opus/48000/2 (RFC 7587).
    /// The name is case-insensitive; `channels` 0 stands for "not given" (mono).
    pub fn from_sdp(name: &str, clock_rate: u32, channels: u16) -> Option<CodecKind> {
        let mono = channels <= 1;
        let kind = if name.eq_ignore_ascii_case("PCMU") && mono {
            CodecKind::Pcmu
        } else if name.eq_ignore_ascii_case("PCMA") && mono {
            CodecKind::Pcma
        } else if name.eq_ignore_ascii_case("G722") && mono {
            CodecKind::G722
        } else if name.eq_ignore_ascii_case("opus") && channels == 2 {
            // RFC 7587 §7: always "/2", even for mono streams.
            CodecKind::Opus
        } else {
            return None;
        };
        (kind.rtp_clock() == clock_rate).then_some(kind)
    }

    /// The rtpmap encoding name.
    pub fn name(self) -> &'static str {
        match self {
            CodecKind::Pcmu => "PCMU",
            CodecKind::Pcma => "PCMA",
            CodecKind::G722 => "G722",
            CodecKind::Opus => "opus",
        }
    }

    /// The static RTP payload type of RFC 3551, if the codec has one (Opus is dynamic).
    pub fn static_payload_type(self) -> Option<u8> {
        match self {
            CodecKind::Pcmu => Some(0),
            CodecKind::Pcma => Some(8),
            CodecKind::G722 => Some(9),
            CodecKind::Opus => None,
        }
    }

    /// Rate of the PCM the decoder gives and the encoder takes.
    pub fn pcm_rate(self) -> u32 {
        match self {
            CodecKind::Pcmu | CodecKind::Pcma => 8000,
            CodecKind::G722 => 16_000,
            CodecKind::Opus => opus::PCM_RATE,
        }
    }

    /// RTP timestamp clock rate.
    pub fn rtp_clock(self) -> u32 {
        match self {
            CodecKind::Pcmu | CodecKind::Pcma | CodecKind::G722 => 8000,
            CodecKind::Opus => 48_000,
        }
    }

    /// RTP timestamp units spanned by `pcm_samples` samples at `pcm_rate`.
    pub fn rtp_ticks(self, pcm_samples: u32) -> u32 {
        match self {
            CodecKind::Pcmu | CodecKind::Pcma => pcm_samples,
            CodecKind::G722 => pcm_samples / 2,
            CodecKind::Opus => pcm_samples.saturating_mul(3),
        }
    }

    /// PCM samples at `pcm_rate` spanned by `rtp_ticks` RTP timestamp units.
    pub fn pcm_samples(self, rtp_ticks: u32) -> u32 {
        match self {
            CodecKind::Pcmu | CodecKind::Pcma => rtp_ticks,
            CodecKind::G722 => rtp_ticks.saturating_mul(2),
            CodecKind::Opus => rtp_ticks / 3,
        }
    }
}

impl fmt::Display for CodecKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a codec refused a payload or a frame. The codecs' own messages are static text, so
/// rejecting hostile input does not allocate; callers may also wrap a formatted message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodecError(Cow<'static, str>);

impl CodecError {
    pub fn new(message: impl Into<Cow<'static, str>>) -> CodecError {
        CodecError(message.into())
    }

    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "codec error: {}", self.0)
    }
}

impl std::error::Error for CodecError {}

/// 60 ms at 16 kHz: the longest frame G.711/G.722 concealment repeats.
const MAX_FRAME: usize = 960;
/// A concealed G.711/G.722 repeat fades to silence over this many milliseconds.
const FADE_MS: usize = 60;

/// Loss concealment for the sample codecs (G.711, G.722), which have none of their own:
/// the last good frame is repeated while fading linearly to silence, so a short gap is
/// bridged and a long one goes quiet instead of buzzing.
struct Concealer {
    last: [i16; MAX_FRAME],
    len: usize,
    /// Next sample of `last` to repeat.
    pos: usize,
    /// Samples left before silence, out of `fade`.
    remaining: usize,
    fade: usize,
}

impl Concealer {
    fn new(pcm_rate: u32) -> Concealer {
        let fade = pcm_rate as usize * FADE_MS / 1000;
        Concealer {
            last: [0; MAX_FRAME],
            len: 0,
            pos: 0,
            remaining: fade,
            fade,
        }
    }

    /// Keeps a freshly decoded frame (its tail if longer than the buffer).
    fn remember(&mut self, pcm: &[i16]) {
        let tail = &pcm[pcm.len().saturating_sub(MAX_FRAME)..];
        self.last[..tail.len()].copy_from_slice(tail);
        self.len = tail.len();
        self.pos = 0;
        self.remaining = self.fade;
    }

    fn fill(&mut self, out: &mut [i16]) {
        for sample in out {
            if self.len == 0 || self.remaining == 0 {
                *sample = 0;
                continue;
            }
            let value = i64::from(self.last[self.pos]) * self.remaining as i64 / self.fade as i64;
            *sample = value as i16;
            self.pos = (self.pos + 1) % self.len;
            self.remaining -= 1;
        }
    }
}

enum DecoderState {
    Pcmu,
    Pcma,
    // Boxed: the ADPCM state is a few hundred bytes, the other variants a pointer or none.
    G722(Box<g722::G722Decoder>),
    Opus(opus::OpusDecoder),
}

/// Turns RTP payloads of one stream into PCM at the codec's `pcm_rate`.
pub struct Decoder {
    kind: CodecKind,
    state: DecoderState,
    /// Used by the codecs without their own concealment.
    concealer: Concealer,
}

impl Decoder {
    pub fn new(kind: CodecKind) -> Result<Decoder, CodecError> {
        let state = match kind {
            CodecKind::Pcmu => DecoderState::Pcmu,
            CodecKind::Pcma => DecoderState::Pcma,
            CodecKind::G722 => DecoderState::G722(Box::default()),
            CodecKind::Opus => DecoderState::Opus(opus::OpusDecoder::new()?),
        };
        Ok(Decoder {
            kind,
            state,
            concealer: Concealer::new(kind.pcm_rate()),
        })
    }

    pub fn kind(&self) -> CodecKind {
        self.kind
    }

    /// Decodes one RTP payload into `out` (mono, at `pcm_rate`); returns samples written.
    /// 960 samples of `out` hold any 20..60 ms packet. A payload that does not fit, or
    /// that the codec rejects, is an error.
    pub fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        let written = match &mut self.state {
            DecoderState::Pcmu => g711::decode_ulaw(payload, out)?,
            DecoderState::Pcma => g711::decode_alaw(payload, out)?,
            DecoderState::G722(decoder) => decoder.decode(payload, out)?,
            DecoderState::Opus(decoder) => return decoder.decode(payload, out),
        };
        self.concealer.remember(&out[..written]);
        Ok(written)
    }

    /// Fills `samples` samples for a lost packet. Opus rebuilds the frame from the in-band
    /// FEC of `next` (the packet after the lost one) when given, else runs its PLC; the
    /// caller then decodes `next` as usual. G.711/G.722 repeat the last frame, fading out.
    pub fn conceal(
        &mut self,
        next: Option<&[u8]>,
        samples: usize,
        out: &mut [i16],
    ) -> Result<usize, CodecError> {
        if let DecoderState::Opus(decoder) = &mut self.state {
            return decoder.conceal(next, samples, out);
        }
        let out = out.get_mut(..samples).ok_or(CodecError::new(
            "output buffer smaller than the concealed span",
        ))?;
        self.concealer.fill(out);
        Ok(samples)
    }
}

enum EncoderState {
    Pcmu,
    Pcma,
    G722(Box<g722::G722Encoder>),
    Opus(opus::OpusEncoder),
}

/// Turns PCM at the codec's `pcm_rate` into RTP payloads of one stream.
pub struct Encoder {
    kind: CodecKind,
    state: EncoderState,
}

impl Encoder {
    pub fn new(kind: CodecKind) -> Result<Encoder, CodecError> {
        let state = match kind {
            CodecKind::Pcmu => EncoderState::Pcmu,
            CodecKind::Pcma => EncoderState::Pcma,
            CodecKind::G722 => EncoderState::G722(Box::default()),
            CodecKind::Opus => EncoderState::Opus(opus::OpusEncoder::new()?),
        };
        Ok(Encoder { kind, state })
    }

    pub fn kind(&self) -> CodecKind {
        self.kind
    }

    /// Encodes one frame of mono PCM at `pcm_rate` (10, 20, 40 or 60 ms; G.711 and G.722
    /// take any length, G.722 an even one) into `out`, returning the payload length.
    /// 1500 bytes of `out` always suffice.
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        match &mut self.state {
            EncoderState::Pcmu => g711::encode_ulaw(pcm, out),
            EncoderState::Pcma => g711::encode_alaw(pcm, out),
            EncoderState::G722(encoder) => encoder.encode(pcm, out),
            EncoderState::Opus(encoder) => encoder.encode(pcm, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [CodecKind; 4] = [
        CodecKind::Pcmu,
        CodecKind::Pcma,
        CodecKind::G722,
        CodecKind::Opus,
    ];

    #[test]
    fn sdp_names_map_to_kinds() {
        assert_eq!(CodecKind::from_sdp("PCMU", 8000, 1), Some(CodecKind::Pcmu));
        assert_eq!(CodecKind::from_sdp("pcma", 8000, 0), Some(CodecKind::Pcma));
        assert_eq!(CodecKind::from_sdp("G722", 8000, 1), Some(CodecKind::G722));
        assert_eq!(CodecKind::from_sdp("OPUS", 48000, 2), Some(CodecKind::Opus));
        // G.722 advertised at its sampling rate is a known interop bug, not G.722 of RFC 3551.
        assert_eq!(CodecKind::from_sdp("G722", 16000, 1), None);
        assert_eq!(CodecKind::from_sdp("opus", 48000, 1), None);
        assert_eq!(CodecKind::from_sdp("opus", 16000, 2), None);
        assert_eq!(CodecKind::from_sdp("PCMU", 8000, 2), None);
        assert_eq!(CodecKind::from_sdp("GSM", 8000, 1), None);
        for kind in ALL {
            let channels = if kind == CodecKind::Opus { 2 } else { 1 };
            assert_eq!(
                CodecKind::from_sdp(kind.name(), kind.rtp_clock(), channels),
                Some(kind)
            );
        }
    }

    #[test]
    fn rates_and_timestamp_conversion() {
        let twenty_ms = |kind: CodecKind| kind.pcm_rate() / 50;
        assert_eq!(CodecKind::Pcmu.rtp_ticks(twenty_ms(CodecKind::Pcmu)), 160);
        assert_eq!(CodecKind::G722.rtp_ticks(twenty_ms(CodecKind::G722)), 160);
        assert_eq!(CodecKind::Opus.rtp_ticks(twenty_ms(CodecKind::Opus)), 960);
        for kind in ALL {
            let samples = twenty_ms(kind);
            assert_eq!(kind.pcm_samples(kind.rtp_ticks(samples)), samples, "{kind}");
            assert_eq!(kind.rtp_ticks(samples), kind.rtp_clock() / 50, "{kind}");
        }
        assert_eq!(CodecKind::Pcma.static_payload_type(), Some(8));
        assert_eq!(CodecKind::Opus.static_payload_type(), None);
    }

    #[test]
    fn every_codec_round_trips_through_the_common_api() {
        for kind in ALL {
            let rate = kind.pcm_rate() as f64;
            let frame_len = kind.pcm_rate() as usize / 50;
            let mut encoder = Encoder::new(kind).unwrap();
            let mut decoder = Decoder::new(kind).unwrap();
            assert_eq!((encoder.kind(), decoder.kind()), (kind, kind));
            let mut payload = [0u8; 1500];
            let mut pcm = [0i16; 960];
            let mut energy = 0.0;
            for frame in 0..20 {
                let input: Vec<i16> = (0..frame_len)
                    .map(|n| {
                        let t = (frame * frame_len + n) as f64 / rate;
                        (8000.0 * (2.0 * std::f64::consts::PI * 700.0 * t).sin()) as i16
                    })
                    .collect();
                let len = encoder.encode(&input, &mut payload).unwrap();
                let n = decoder.decode(&payload[..len], &mut pcm).unwrap();
                assert_eq!(n, frame_len, "{kind}");
                if frame >= 10 {
                    energy += pcm[..n].iter().map(|&s| f64::from(s).powi(2)).sum::<f64>();
                }
            }
            let rms = (energy / (10 * frame_len) as f64).sqrt();
            // The input's RMS is 8000 / sqrt(2) ≈ 5657.
            assert!((4000.0..8000.0).contains(&rms), "{kind}: rms {rms}");
        }
    }

    #[test]
    fn sample_codec_concealment_repeats_then_fades() {
        let mut decoder = Decoder::new(CodecKind::Pcmu).unwrap();
        let mut out = [0i16; 960];
        // Nothing decoded yet: silence.
        assert_eq!(decoder.conceal(None, 160, &mut out).unwrap(), 160);
        assert!(out[..160].iter().all(|&s| s == 0));

        let frame: Vec<i16> = (0..160)
            .map(|n| if n % 2 == 0 { 1000 } else { -1000 })
            .collect();
        let mut payload = [0u8; 160];
        g711::encode_ulaw(&frame, &mut payload).unwrap();
        decoder.decode(&payload, &mut out).unwrap();
        let first = out[0];

        let mut concealed = [0i16; 480];
        assert_eq!(
            decoder.conceal(None, 160, &mut concealed[..160]).unwrap(),
            160
        );
        assert_eq!(
            decoder.conceal(None, 320, &mut concealed[160..]).unwrap(),
            320
        );
        // Starts as the last frame at full level, decays, and is silent after 60 ms.
        assert_eq!(concealed[0], first);
        let level = |s: &[i16]| s.iter().map(|&x| i32::from(x).abs()).max().unwrap();
        assert!(level(&concealed[..160]) > level(&concealed[160..320]));
        assert!(level(&concealed[160..320]) > level(&concealed[320..470]));
        assert!(level(&concealed[320..470]) > 0);
        assert_eq!(decoder.conceal(None, 160, &mut out).unwrap(), 160);
        assert!(out[..160].iter().all(|&s| s == 0));

        // A good packet re-arms concealment.
        decoder.decode(&payload, &mut out).unwrap();
        decoder.conceal(None, 160, &mut concealed).unwrap();
        assert_eq!(concealed[0], first);
        assert!(decoder.conceal(None, 961, &mut out).is_err());
    }

    #[test]
    fn g722_conceal_fills_at_16_khz() {
        let mut decoder = Decoder::new(CodecKind::G722).unwrap();
        let mut out = [0i16; 960];
        let payload = [0xFAu8; 160];
        assert_eq!(decoder.decode(&payload, &mut out).unwrap(), 320);
        assert_eq!(decoder.conceal(None, 320, &mut out).unwrap(), 320);
    }

    #[test]
    fn oversized_payloads_are_errors() {
        let mut out = [0i16; 960];
        for kind in [CodecKind::Pcmu, CodecKind::Pcma, CodecKind::G722] {
            let mut decoder = Decoder::new(kind).unwrap();
            assert!(decoder.decode(&[0u8; 961], &mut out).is_err(), "{kind}");
        }
        let error = Decoder::new(CodecKind::G722)
            .unwrap()
            .decode(&[0; 481], &mut out)
            .unwrap_err();
        assert!(error.to_string().contains("G.722"), "{error}");
    }
}
