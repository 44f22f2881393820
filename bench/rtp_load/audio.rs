//! Real audio for the transcoding runs and the codec-alone measurement: a shipped
//! prompt (speech, with its pauses) encoded once at start into a loop of 20 ms frames
//! per codec, so sending costs the generator a copy, not an encode.
//!
//! Speech rather than a tone or silence because an encoder's cost depends on what it
//! encodes: Opus spends far less on silence than on a voice.

use std::io;
use switchboard::media::codec::{CodecKind, Encoder};
use switchboard::media::resample::Resampler;
use switchboard::media::wav;

/// About 5.6 s of 8 kHz mono speech (espeak-ng, see sounds/generate.sh).
const PROMPT: &[u8] = include_bytes!("../../sounds/en/vm-intro.wav");

/// The prompt as mono PCM at `rate` (8 or 16 kHz), trimmed to whole 20 ms frames.
pub fn speech(rate: u32) -> io::Result<Vec<i16>> {
    let prompt = wav::read_bytes(PROMPT).map_err(|e| io::Error::other(e.to_string()))?;
    if prompt.sample_rate != 8000 || prompt.channels != 1 {
        return Err(io::Error::other("the prompt is not 8 kHz mono"));
    }
    let mut pcm = if rate == 8000 {
        prompt.samples
    } else {
        let mut up = Resampler::new(8000, rate).map_err(|e| io::Error::other(e.to_string()))?;
        let mut out = vec![0i16; prompt.samples.len() * 2];
        let n = up.process(&prompt.samples, &mut out);
        out.truncate(n);
        out
    };
    let frame = rate as usize / 50;
    pcm.truncate(pcm.len() / frame * frame);
    Ok(pcm)
}

/// One call's worth of encoded audio: the prompt as consecutive 20 ms payloads of
/// `kind`, sent in a loop.
pub struct EncodedLoop {
    pub kind: CodecKind,
    pub frames: Vec<Vec<u8>>,
    /// RTP timestamp units per 20 ms frame: 160 for G.711 and G.722, 960 for Opus.
    pub timestamp_step: u32,
}

impl EncodedLoop {
    pub fn new(kind: CodecKind) -> io::Result<EncodedLoop> {
        let pcm = speech(kind.pcm_rate())?;
        let frame = kind.pcm_rate() as usize / 50;
        let mut encoder = Encoder::new(kind).map_err(|e| io::Error::other(e.to_string()))?;
        let mut out = [0u8; 1500];
        let frames = pcm
            .chunks_exact(frame)
            .map(|chunk| {
                let len = encoder
                    .encode(chunk, &mut out)
                    .map_err(|e| io::Error::other(e.to_string()))?;
                Ok(out[..len].to_vec())
            })
            .collect::<io::Result<Vec<_>>>()?;
        if frames.is_empty() {
            return Err(io::Error::other("the prompt is shorter than a frame"));
        }
        Ok(EncodedLoop {
            kind,
            timestamp_step: kind.rtp_ticks(frame as u32),
            frames,
        })
    }

    /// The payload for frame `round` of a call (the loop repeats).
    pub fn frame(&self, round: u64) -> &[u8] {
        &self.frames[(round % self.frames.len() as u64) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard::media::codec::Decoder;

    #[test]
    fn the_prompt_is_seconds_of_speech_at_both_rates() {
        let narrow = speech(8000).unwrap();
        let wide = speech(16000).unwrap();
        assert!(narrow.len() >= 8000 * 3, "{} samples", narrow.len());
        assert_eq!(wide.len(), narrow.len() * 2);
        // Not silence: the RMS of a spoken prompt is well above the noise floor.
        let rms = (narrow.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / narrow.len() as f64)
            .sqrt();
        assert!(rms > 300.0, "rms {rms}");
    }

    #[test]
    fn every_codec_loop_has_one_payload_per_frame_and_the_right_clock() {
        let frames = speech(8000).unwrap().len() / 160;
        for (kind, step, payload) in [
            (CodecKind::Pcmu, 160, Some(160)),
            (CodecKind::G722, 160, Some(160)),
            (CodecKind::Opus, 960, None),
        ] {
            let audio = EncodedLoop::new(kind).unwrap();
            assert_eq!(audio.frames.len(), frames, "{kind}");
            assert_eq!(audio.timestamp_step, step, "{kind}");
            if let Some(len) = payload {
                assert!(audio.frames.iter().all(|f| f.len() == len), "{kind}");
            }
            // The payloads decode as the codec they claim to be.
            let mut decoder = Decoder::new(kind).unwrap();
            let mut pcm = [0i16; 960];
            let n = decoder.decode(audio.frame(7), &mut pcm).unwrap();
            assert_eq!(n, kind.pcm_rate() as usize / 50, "{kind}");
            assert_eq!(audio.frame(frames as u64 + 7), audio.frame(7));
        }
    }
}
