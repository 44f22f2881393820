//! Hold music encoded once per codec: a class's loop is encoded into 20 ms frames for
//! each codec when it is loaded (off the call paths), and every held call of that codec
//! copies the same frames, so five hundred held calls cost five hundred packet copies a
//! frame, not five hundred encoders and five hundred file reads. Until a codec's frames
//! are ready a held call encodes the music itself (see [`super::speaker`]).

use super::codec::{CodecError, CodecKind, Encoder};
use super::prompts::Clip;
use super::resample::Resampler;
use super::rtp::{self, Header};
use super::speaker::Voice;
use std::sync::{Arc, OnceLock};

/// Every codec, in the order of [`Music::encoded`]'s slots.
const KINDS: [CodecKind; 4] = [
    CodecKind::Pcmu,
    CodecKind::Pcma,
    CodecKind::G722,
    CodecKind::Opus,
];

/// A music loop as 20 ms frames of one codec.
pub struct EncodedLoop {
    kind: CodecKind,
    bytes: Vec<u8>,
    /// Where each frame starts in `bytes`; the last entry is the end.
    starts: Vec<usize>,
}

impl EncodedLoop {
    pub fn encode(clip: &Clip, kind: CodecKind) -> Result<EncodedLoop, CodecError> {
        let rate = kind.pcm_rate();
        let mut resampler =
            Resampler::new(clip.rate, rate).map_err(|e| CodecError::new(e.to_string()))?;
        let mut pcm = vec![0i16; clip.samples.len() * rate as usize / clip.rate as usize + 2];
        let n = resampler.process(&clip.samples, &mut pcm);
        pcm.truncate(n);
        let frame = (rate / 50) as usize;
        let mut encoder = Encoder::new(kind)?;
        let mut bytes = Vec::new();
        let mut starts = vec![0];
        let mut out = [0u8; 1500];
        for chunk in pcm.chunks_exact(frame) {
            let len = encoder.encode(chunk, &mut out)?;
            bytes.extend_from_slice(&out[..len]);
            starts.push(bytes.len());
        }
        if starts.len() < 2 {
            return Err(CodecError::new("the music is shorter than one frame"));
        }
        Ok(EncodedLoop {
            kind,
            bytes,
            starts,
        })
    }

    pub fn frames(&self) -> usize {
        self.starts.len() - 1
    }

    fn frame(&self, i: usize) -> &[u8] {
        &self.bytes[self.starts[i]..self.starts[i + 1]]
    }
}

/// One music class: its audio, and its frames per codec once they are encoded.
pub struct Music {
    pub clip: Arc<Clip>,
    encoded: [OnceLock<Arc<EncodedLoop>>; 4],
}

impl Music {
    pub fn new(clip: Arc<Clip>) -> Arc<Music> {
        Arc::new(Music {
            clip,
            encoded: Default::default(),
        })
    }

    /// Encodes the loop for every codec not encoded yet. Blocks for a while (Opus):
    /// run it on a thread of its own.
    pub fn prepare(&self) {
        for (slot, kind) in self.encoded.iter().zip(KINDS) {
            if slot.get().is_some() {
                continue;
            }
            match EncodedLoop::encode(&self.clip, kind) {
                Ok(frames) => {
                    let _ = slot.set(Arc::new(frames));
                }
                Err(e) => tracing::warn!(error = %e, codec = kind.name(), "hold music not encoded"),
            }
        }
    }

    /// The frames for `kind`, once encoded.
    pub fn encoded(&self, kind: CodecKind) -> Option<Arc<EncodedLoop>> {
        let slot = KINDS.iter().position(|k| *k == kind)?;
        self.encoded[slot].get().cloned()
    }
}

impl std::fmt::Debug for Music {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Music")
            .field("duration", &self.clip.duration())
            .finish_non_exhaustive()
    }
}

/// Plays encoded music frames to a leg, looping, as its own RTP stream.
pub struct MusicPlayer {
    music: Arc<EncodedLoop>,
    next: usize,
    header: Header,
    packet: [u8; 1500],
}

impl MusicPlayer {
    pub fn new(music: Arc<EncodedLoop>, payload_type: u8, ssrc: u32) -> MusicPlayer {
        MusicPlayer {
            music,
            next: 0,
            header: Header {
                payload_type,
                marker: true,
                seq: ssrc as u16,
                timestamp: ssrc.rotate_left(11),
                ssrc,
            },
            packet: [0; 1500],
        }
    }
}

impl Voice for MusicPlayer {
    fn on_tick(&mut self, emit: &mut dyn FnMut(&[u8])) -> bool {
        let frame = self.music.frame(self.next);
        let header_len = rtp::write_header(&self.header, &mut self.packet);
        let len = frame.len().min(self.packet.len() - header_len);
        self.packet[header_len..header_len + len].copy_from_slice(&frame[..len]);
        emit(&self.packet[..header_len + len]);
        self.next = (self.next + 1) % self.music.frames();
        self.header.marker = false;
        self.header.seq = self.header.seq.wrapping_add(1);
        let samples = self.music.kind.pcm_rate() / 50;
        self.header.timestamp = self
            .header
            .timestamp
            .wrapping_add(self.music.kind.rtp_ticks(samples));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec::Decoder;

    fn clip() -> Arc<Clip> {
        // 100 ms: five frames at 8 kHz, each a different level.
        let samples = (0..800).map(|i| 1000 * (i / 160 + 1) as i16).collect();
        Arc::new(Clip {
            rate: 8000,
            samples,
        })
    }

    #[test]
    fn music_is_encoded_once_per_codec_and_frames_loop() {
        let music = Music::new(clip());
        assert!(
            music.encoded(CodecKind::Pcma).is_none(),
            "not before prepare"
        );
        music.prepare();
        let pcma = music.encoded(CodecKind::Pcma).unwrap();
        assert_eq!(pcma.frames(), 5);
        assert!(Arc::ptr_eq(&pcma, &music.encoded(CodecKind::Pcma).unwrap()));
        assert_eq!(music.encoded(CodecKind::G722).unwrap().frames(), 5);
        assert!(music.encoded(CodecKind::Opus).unwrap().frames() == 5);

        let mut player = MusicPlayer::new(pcma, 8, 77);
        let mut decoder = Decoder::new(CodecKind::Pcma).unwrap();
        let mut levels = Vec::new();
        let mut headers = Vec::new();
        let mut pcm = [0i16; 160];
        for _ in 0..7 {
            assert!(player.on_tick(&mut |p| {
                let (h, body) = rtp::parse(p).unwrap();
                headers.push(h);
                decoder.decode(body, &mut pcm).unwrap();
                levels.push((pcm[80] + 500) / 1000);
            }));
        }
        assert_eq!(levels, [1, 2, 3, 4, 5, 1, 2], "the loop starts over");
        assert!(headers[0].marker && !headers[1].marker);
        assert_eq!(
            headers[6].timestamp.wrapping_sub(headers[0].timestamp),
            6 * 160
        );
        assert!(headers.iter().all(|h| h.payload_type == 8 && h.ssrc == 77));
    }
}
