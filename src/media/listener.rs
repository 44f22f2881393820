//! What switchboard hears from a leg: key presses, and the decoded audio when
//! something records it. Sans-IO: each packet from the leg's phone goes through
//! [`Listener::on_packet`].
//!
//! Key presses come as RFC 4733 events where the leg negotiated them, and are then
//! taken from those only; a leg without them is listened to in-band (Goertzel), which
//! needs its audio decoded. One press is one digit either way.

use super::codec::{CodecError, Decoder};
use super::dtmf::{EventReceiver, TelephoneEvent};
use super::inband::DtmfDetector;
use super::plan::{AudioFormat, LegFormats};
use super::resample::Resampler;
use super::rtp;

/// Decoded audio handed to a tap is at this rate (what recordings are written at).
pub const TAP_RATE: u32 = 8000;

pub struct Listener {
    /// The telephone-event payload type the phone sends, if it negotiated them.
    events: Option<u8>,
    receiver: EventReceiver,
    formats: Vec<AudioFormat>,
    inband: Option<DtmfDetector>,
    /// Made at the first packet that needs decoding: most bridged calls never do, and
    /// a decoder (Opus's above all) is the bulk of a listener's memory.
    decoding: Option<Box<Decoding>>,
}

struct Decoding {
    decoders: Vec<(AudioFormat, Decoder)>,
    /// 16 kHz codecs to the tap rate.
    narrow: Resampler,
    pcm: [i16; 960],
    tapped: [i16; 960],
}

impl Decoding {
    fn new(formats: &[AudioFormat]) -> Result<Decoding, CodecError> {
        let mut decoders = Vec::with_capacity(formats.len());
        for f in formats {
            decoders.push((*f, Decoder::new(f.kind)?));
        }
        Ok(Decoding {
            decoders,
            narrow: Resampler::new(16000, TAP_RATE).map_err(|e| CodecError::new(e.to_string()))?,
            pcm: [0; 960],
            tapped: [0; 960],
        })
    }

    /// The packet's audio at the tap rate.
    fn decode(&mut self, payload_type: u8, payload: &[u8]) -> Option<&[i16]> {
        let (format, decoder) = self
            .decoders
            .iter_mut()
            .find(|(f, _)| f.payload_type == payload_type)?;
        let n = decoder.decode(payload, &mut self.pcm).ok()?;
        if format.kind.pcm_rate() == TAP_RATE {
            return Some(&self.pcm[..n]);
        }
        let m = self.narrow.process(&self.pcm[..n], &mut self.tapped);
        Some(&self.tapped[..m])
    }
}

impl Listener {
    /// For a leg that negotiated `formats`. Without RFC 4733 events on the leg, key
    /// presses are detected in the audio when `inband` says someone listens for them
    /// (decoding every packet costs more than relaying it).
    pub fn new(formats: &LegFormats, inband: bool) -> Result<Listener, CodecError> {
        Ok(Listener {
            events: formats.events.map(|e| e.receive),
            receiver: EventReceiver::new(),
            formats: formats.receives.clone(),
            inband: (inband && formats.events.is_none()).then(|| DtmfDetector::new(TAP_RATE)),
            decoding: None,
        })
    }

    /// Whether digits need the audio decoded (no RFC 4733 on this leg).
    pub fn needs_audio(&self) -> bool {
        self.inband.is_some()
    }

    /// A packet from the leg's phone. With `decode`, its audio goes to `tap` at
    /// [`TAP_RATE`] (and to the in-band detector). Returns a key press it completes.
    pub fn on_packet(
        &mut self,
        packet: &[u8],
        decode: bool,
        tap: &mut dyn FnMut(&[i16]),
    ) -> Option<char> {
        let (header, payload) = rtp::parse(packet)?;
        if Some(header.payload_type) == self.events {
            let event = TelephoneEvent::parse(payload)?;
            return self.receiver.on_packet(header.timestamp, event);
        }
        if !decode && self.inband.is_none() {
            return None;
        }
        if self.decoding.is_none() {
            self.decoding = Some(Box::new(Decoding::new(&self.formats).ok()?));
        }
        let samples = self
            .decoding
            .as_mut()?
            .decode(header.payload_type, payload)?;
        if decode {
            tap(samples);
        }
        self.inband.as_mut()?.push(samples)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec::{CodecKind, Encoder};
    use crate::media::rtp::Header;
    use crate::media::tone::{Tone, ToneGenerator};
    use crate::sdp::Sdp;

    fn formats(text: &str) -> LegFormats {
        let sdp = format!(
            "v=0\r\no=a 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n{text}"
        );
        let sdp = Sdp::parse(sdp.as_bytes()).unwrap();
        LegFormats::negotiated(&sdp, &sdp)
    }

    fn packet(pt: u8, seq: u16, timestamp: u32, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 12];
        let header = Header {
            payload_type: pt,
            marker: false,
            seq,
            timestamp,
            ssrc: 9,
        };
        rtp::write_header(&header, &mut p);
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn rfc_4733_presses_count_once_and_audio_is_left_alone() {
        let mut listener = Listener::new(
            &formats("m=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"),
            true,
        )
        .unwrap();
        assert!(!listener.needs_audio());
        let mut digits = String::new();
        for (i, (end, duration)) in [
            (false, 160),
            (false, 320),
            (true, 480),
            (true, 480),
            (true, 480),
        ]
        .into_iter()
        .enumerate()
        {
            let event = TelephoneEvent {
                event: 11,
                end,
                volume: 10,
                duration,
            };
            let p = packet(101, i as u16, 8000, &event.write());
            digits.extend(listener.on_packet(&p, false, &mut |_| panic!("no tap")));
        }
        assert_eq!(digits, "#");
    }

    #[test]
    fn a_leg_without_events_is_heard_in_band_and_taps_get_8_khz() {
        let leg = formats("m=audio 4000 RTP/AVP 9\r\n");
        assert!(!Listener::new(&leg, false).unwrap().needs_audio());
        let mut listener = Listener::new(&leg, true).unwrap();
        assert!(listener.needs_audio());
        let mut encoder = Encoder::new(CodecKind::G722).unwrap();
        let mut tone = ToneGenerator::new(Tone::Digit('7'), 16000);
        let (mut digits, mut tapped) = (String::new(), 0usize);
        let (mut pcm, mut payload) = ([0i16; 320], [0u8; 400]);
        for i in 0..20u16 {
            // 100 ms of the key, then silence.
            if !tone.fill(&mut pcm) {
                pcm.fill(0);
            }
            let len = encoder.encode(&pcm, &mut payload).unwrap();
            let p = packet(9, i, 160 * u32::from(i), &payload[..len]);
            digits.extend(listener.on_packet(&p, true, &mut |s| tapped += s.len()));
        }
        assert_eq!(digits, "7");
        assert_eq!(tapped, 20 * 160);
    }
}
