//! What switchboard itself says to a leg: prompts, tones, silence or hold music, as
//! 20 ms frames encoded in the leg's codec. Sans-IO: the media clock calls
//! [`Speaker::on_tick`], which hands out at most one RTP packet.
//!
//! Items play one after another; an item that ends inside a frame leaves the rest of
//! that frame silent (under 20 ms between prompts). Clips are shared, so a hundred
//! calls on hold read the same samples.

use super::codec::{CodecError, Encoder};
use super::plan::AudioFormat;
use super::prompts::Clip;
use super::resample::Resampler;
use super::rtp::{self, Header};
use super::tone::{Tone, ToneGenerator};
use std::sync::Arc;
use std::time::Duration;

/// The rate tones and silence are made at.
const ITEM_RATE: u32 = 8000;
/// One frame at 16 kHz, the most any item or codec here needs.
const FRAME_MAX: usize = 320;

/// One thing to say.
#[derive(Debug)]
pub enum Item {
    Clip(Arc<Clip>),
    Tone(Tone, Duration),
    Silence(Duration),
}

/// An item being played, with its position.
enum Playing {
    Clip {
        clip: Arc<Clip>,
        at: usize,
    },
    Tone {
        generator: ToneGenerator,
        left: usize,
    },
    Silence {
        left: usize,
    },
}

impl Playing {
    fn start(item: Item) -> Playing {
        let samples = |d: Duration| (d.as_millis() as usize) * (ITEM_RATE as usize) / 1000;
        match item {
            Item::Clip(clip) => Playing::Clip { clip, at: 0 },
            Item::Tone(tone, length) => Playing::Tone {
                generator: ToneGenerator::new(tone, ITEM_RATE),
                left: samples(length),
            },
            Item::Silence(length) => Playing::Silence {
                left: samples(length),
            },
        }
    }

    fn rate(&self) -> u32 {
        match self {
            Playing::Clip { clip, .. } => clip.rate,
            _ => ITEM_RATE,
        }
    }

    /// Fills the front of `out`; returns how much, zero once the item is over.
    fn fill(&mut self, out: &mut [i16]) -> usize {
        match self {
            Playing::Clip { clip, at } => {
                let n = out.len().min(clip.samples.len() - *at);
                out[..n].copy_from_slice(&clip.samples[*at..*at + n]);
                *at += n;
                n
            }
            Playing::Tone { generator, left } => {
                let n = out.len().min(*left);
                let going = generator.fill(&mut out[..n]);
                *left = if going { *left - n } else { 0 };
                n
            }
            Playing::Silence { left } => {
                let n = out.len().min(*left);
                out[..n].fill(0);
                *left -= n;
                n
            }
        }
    }

    fn rewind(&mut self) {
        if let Playing::Clip { at, .. } = self {
            *at = 0;
        }
    }
}

/// Something switchboard says to a leg, a frame per tick of the media clock.
pub trait Voice: Send {
    /// Sends the next 20 ms through `emit`. False once everything has been said (no
    /// packet then).
    fn on_tick(&mut self, emit: &mut dyn FnMut(&[u8])) -> bool;
}

pub struct Speaker {
    items: std::vec::IntoIter<Item>,
    current: Option<Playing>,
    /// Hold music: the single clip starts again when it ends.
    looping: bool,
    encoder: Encoder,
    out: AudioFormat,
    header: Header,
    from_narrow: Resampler,
    from_wide: Resampler,
    source: [i16; FRAME_MAX],
    frame: [i16; FRAME_MAX],
    packet: [u8; 1500],
}

impl Speaker {
    /// Plays `items` once, in order, to a leg that receives `out`.
    pub fn new(items: Vec<Item>, out: AudioFormat, ssrc: u32) -> Result<Speaker, CodecError> {
        Speaker::build(items, out, ssrc, false)
    }

    /// Plays `music` over and over.
    pub fn looping(music: Arc<Clip>, out: AudioFormat, ssrc: u32) -> Result<Speaker, CodecError> {
        Speaker::build(vec![Item::Clip(music)], out, ssrc, true)
    }

    fn build(
        items: Vec<Item>,
        out: AudioFormat,
        ssrc: u32,
        looping: bool,
    ) -> Result<Speaker, CodecError> {
        let rate = out.kind.pcm_rate();
        let resampler =
            |from| Resampler::new(from, rate).map_err(|e| CodecError::new(e.to_string()));
        let mut items = items.into_iter();
        let current = items.next().map(Playing::start);
        Ok(Speaker {
            items,
            current,
            looping,
            encoder: Encoder::new(out.kind)?,
            out,
            header: Header {
                payload_type: out.payload_type,
                marker: true,
                seq: ssrc as u16,
                timestamp: ssrc.rotate_left(11),
                ssrc,
            },
            from_narrow: resampler(8000)?,
            from_wide: resampler(16000)?,
            source: [0; FRAME_MAX],
            frame: [0; FRAME_MAX],
            packet: [0; 1500],
        })
    }

    /// The format this speaker sends.
    pub fn format(&self) -> AudioFormat {
        self.out
    }
}

impl Voice for Speaker {
    fn on_tick(&mut self, emit: &mut dyn FnMut(&[u8])) -> bool {
        let Some(playing) = self.current.as_mut() else {
            return false;
        };
        let rate = playing.rate();
        let wanted = (rate / 50) as usize;
        let mut filled = playing.fill(&mut self.source[..wanted]);
        if filled == 0 {
            if self.looping {
                playing.rewind();
                filled = playing.fill(&mut self.source[..wanted]);
            } else {
                self.current = self.items.next().map(Playing::start);
                return self.on_tick(emit);
            }
        }
        self.source[filled..wanted].fill(0);
        let resampler = if rate == 8000 {
            &mut self.from_narrow
        } else {
            &mut self.from_wide
        };
        let n = resampler.process(&self.source[..wanted], &mut self.frame);
        let header_len = rtp::write_header(&self.header, &mut self.packet);
        if let Ok(len) = self
            .encoder
            .encode(&self.frame[..n], &mut self.packet[header_len..])
        {
            emit(&self.packet[..header_len + len]);
        }
        self.header.marker = false;
        self.header.seq = self.header.seq.wrapping_add(1);
        self.header.timestamp = self
            .header
            .timestamp
            .wrapping_add(self.out.kind.rtp_ticks(n as u32));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec::{CodecKind, Decoder};

    fn format(kind: CodecKind, payload_type: u8) -> AudioFormat {
        AudioFormat { payload_type, kind }
    }

    /// Runs the speaker to its end (at most `limit` frames), decoding what it sends.
    fn play(speaker: &mut Speaker, limit: usize) -> (Vec<Header>, Vec<i16>) {
        let mut decoder = Decoder::new(speaker.format().kind).unwrap();
        let (mut headers, mut pcm) = (Vec::new(), Vec::new());
        let mut buf = [0i16; 960];
        for _ in 0..limit {
            let going = speaker.on_tick(&mut |p| {
                let (h, body) = rtp::parse(p).unwrap();
                headers.push(h);
                let n = decoder.decode(body, &mut buf).unwrap();
                pcm.extend_from_slice(&buf[..n]);
            });
            if !going {
                break;
            }
        }
        (headers, pcm)
    }

    #[test]
    fn items_play_in_order_as_one_stream_and_then_stop() {
        let clip = Arc::new(Clip {
            rate: 8000,
            samples: vec![8000; 800],
        });
        let items = vec![
            Item::Clip(clip),
            Item::Silence(Duration::from_millis(100)),
            Item::Tone(Tone::Beep, Duration::from_millis(200)),
        ];
        let mut speaker = Speaker::new(items, format(CodecKind::Pcmu, 0), 42).unwrap();
        let (headers, pcm) = play(&mut speaker, 100);
        // 100 ms of clip, 100 ms of silence, 200 ms of beep: 20 frames, then done.
        assert_eq!(headers.len(), 20);
        assert!(headers[0].marker && headers[1..].iter().all(|h| !h.marker));
        for pair in headers.windows(2) {
            assert_eq!(pair[1].seq, pair[0].seq.wrapping_add(1));
            assert_eq!(pair[1].timestamp.wrapping_sub(pair[0].timestamp), 160);
        }
        assert!(pcm[..800].iter().all(|&s| (s - 8000).abs() < 300));
        assert!(pcm[800..1600].iter().all(|&s| s.abs() < 10));
        assert!(pcm[1700..].iter().any(|&s| s.abs() > 1000), "the beep");
        assert!(!speaker.on_tick(&mut |_| panic!("nothing more")));
    }

    #[test]
    fn music_loops_and_wideband_legs_get_16_khz_frames() {
        let music = Arc::new(Clip {
            rate: 8000,
            samples: (0..400)
                .map(|i| if i < 200 { 5000 } else { -5000 })
                .collect(),
        });
        let mut speaker = Speaker::looping(music, format(CodecKind::G722, 9), 1).unwrap();
        let (headers, pcm) = play(&mut speaker, 50);
        assert_eq!(headers.len(), 50, "music never ends");
        assert_eq!(pcm.len(), 50 * 320);
        // G.722 counts 8 kHz ticks for 16 kHz audio.
        assert_eq!(headers[1].timestamp.wrapping_sub(headers[0].timestamp), 160);
        assert_eq!(headers[0].payload_type, 9);
    }
}
