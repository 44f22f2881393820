//! The frame path of one direction: packets from one leg are put in order by a
//! jitter buffer, decoded, resampled and encoded into the other leg's codec, in
//! 20 ms frames on the media clock. Sans-IO: packets and clock ticks come in with the
//! time, packets to send go out through a callback.
//!
//! The outgoing stream is our own (SSRC, sequence numbers, timestamps in the
//! receiving codec's clock); the relay's stream rewriter then keeps it continuous with
//! whatever the leg was sent before. RFC 4733 events skip the jitter buffer and go out
//! at once, moved onto the outgoing timeline with their duration rescaled between the
//! two clocks (an Opus leg counts in 48 kHz, a G.711 leg in 8 kHz).

use super::codec::{CodecError, CodecKind, Decoder, Encoder};
use super::dtmf::{TelephoneEvent, rescale_duration};
use super::jitter::{JitterBuffer, JitterConfig, Playout};
use super::plan::{AudioFormat, EventFormat, LegFormats};
use super::resample::Resampler;
use super::rtp::{self, Header};
use std::time::{Duration, Instant};

/// The media clock's frame.
pub const FRAME: Duration = Duration::from_millis(20);
/// Samples of 60 ms at 16 kHz: the longest packet decoded.
const DECODE_MAX: usize = 960;
/// Twice that at the output rate, plus a frame being filled.
const FIFO_MAX: usize = 3 * DECODE_MAX;
const PACKET_MAX: usize = 1500;

/// One decoder per codec the sending leg may use.
struct Incoming {
    format: AudioFormat,
    decoder: Decoder,
}

/// An event being passed on: its timestamp on each side.
#[derive(Clone, Copy)]
struct ActiveEvent {
    in_timestamp: u32,
    out_timestamp: u32,
}

pub struct Transcoder {
    incoming: Vec<Incoming>,
    /// Payload type and clock of the sending leg's telephone-events.
    events_in: Option<EventFormat>,
    events_in_clock: u32,
    events_out: Option<EventFormat>,
    event: Option<ActiveEvent>,
    jitter: JitterBuffer,
    /// 8 and 16 kHz decoded audio to the encoder's rate.
    from_narrow: Resampler,
    from_wide: Resampler,
    encoder: Encoder,
    out_format: AudioFormat,
    out: Header,
    decoded: [i16; DECODE_MAX],
    resampled: [i16; 2 * DECODE_MAX],
    fifo: [i16; FIFO_MAX],
    fifo_len: usize,
    frame_samples: usize,
    /// Decoded samples per packet of the sending leg, for concealing a lost one.
    last_packet_samples: usize,
    last_kind: CodecKind,
    packet: [u8; PACKET_MAX],
}

impl Transcoder {
    /// A direction from a leg that negotiated `from` to one that receives `to` (and
    /// `events`, if it takes them). `ssrc` names the stream we send.
    pub fn new(
        from: &LegFormats,
        to: AudioFormat,
        events: Option<EventFormat>,
        ssrc: u32,
    ) -> Result<Transcoder, CodecError> {
        let mut incoming: Vec<Incoming> = Vec::new();
        for f in &from.receives {
            incoming.push(Incoming {
                format: *f,
                decoder: Decoder::new(f.kind)?,
            });
        }
        let first = from.send().map_or(CodecKind::Pcmu, |f| f.kind);
        let out_rate = to.kind.pcm_rate();
        let resampler =
            |rate| Resampler::new(rate, out_rate).map_err(|e| CodecError::new(e.to_string()));
        Ok(Transcoder {
            incoming,
            events_in: from.events,
            events_in_clock: from.events.map_or(8000, |e| e.clock),
            events_out: events,
            event: None,
            jitter: JitterBuffer::new(JitterConfig {
                frame: FRAME,
                min_delay: FRAME,
                max_delay: Duration::from_millis(200),
                clock_rate: first.rtp_clock(),
            }),
            from_narrow: resampler(8000)?,
            from_wide: resampler(16000)?,
            encoder: Encoder::new(to.kind)?,
            out_format: to,
            out: Header {
                payload_type: to.payload_type,
                marker: true,
                seq: (ssrc >> 16) as u16,
                timestamp: ssrc.rotate_left(7),
                ssrc,
            },
            decoded: [0; DECODE_MAX],
            resampled: [0; 2 * DECODE_MAX],
            fifo: [0; FIFO_MAX],
            fifo_len: 0,
            frame_samples: (out_rate / 50) as usize,
            last_packet_samples: (first.pcm_rate() / 50) as usize,
            last_kind: first,
            packet: [0; PACKET_MAX],
        })
    }

    /// The receiving leg's codec.
    pub fn output(&self) -> AudioFormat {
        self.out_format
    }

    pub fn jitter(&self) -> &JitterBuffer {
        &self.jitter
    }

    /// An RTP packet from the sending leg. Audio waits in the jitter buffer; an event
    /// goes out at once through `emit`.
    pub fn on_packet(&mut self, now: Instant, packet: &[u8], emit: &mut dyn FnMut(&[u8])) {
        let Some((header, payload)) = rtp::parse(packet) else {
            return;
        };
        if self
            .events_in
            .is_some_and(|e| e.receive == header.payload_type)
        {
            self.pass_event(header, payload, emit);
            return;
        }
        if self.decoder_for(header.payload_type).is_none() {
            return;
        }
        self.jitter.push(
            now,
            header.seq,
            header.timestamp,
            header.marker,
            // The payload type rides in front of the payload so the frame decodes with
            // the codec it was sent with.
            payload_with_type(header.payload_type, payload, &mut self.packet),
        );
    }

    /// The media clock: decodes what is due and sends what makes whole frames.
    pub fn on_tick(&mut self, now: Instant, emit: &mut dyn FnMut(&[u8])) {
        while self.fifo_len < self.frame_samples {
            if !self.decode_next(now) {
                break;
            }
        }
        while self.fifo_len >= self.frame_samples {
            self.send_frame(emit);
        }
    }

    /// Takes one packet (or a gap) from the jitter buffer into the FIFO; false when
    /// there is nothing to play.
    fn decode_next(&mut self, now: Instant) -> bool {
        let (kind, samples) = match self.jitter.pop(now) {
            Playout::Empty => return false,
            Playout::Packet { payload, .. } => {
                let Some((&pt, payload)) = payload.split_first() else {
                    return true;
                };
                let Some(i) = self
                    .incoming
                    .iter()
                    .position(|i| i.format.payload_type == pt)
                else {
                    return true;
                };
                let incoming = &mut self.incoming[i];
                match incoming.decoder.decode(payload, &mut self.decoded) {
                    Ok(n) => (incoming.format.kind, n),
                    // A corrupt frame is heard as a lost one.
                    Err(_) => (incoming.format.kind, 0),
                }
            }
            Playout::Lost { next } => {
                let kind = self.last_kind;
                let wanted = self.last_packet_samples;
                let next = next.and_then(|p| p.split_first()).and_then(|(&pt, rest)| {
                    self.incoming
                        .iter()
                        .any(|i| i.format.payload_type == pt && i.format.kind == kind)
                        .then_some(rest)
                });
                let Some(incoming) = self.incoming.iter_mut().find(|i| i.format.kind == kind)
                else {
                    return true;
                };
                let n = incoming
                    .decoder
                    .conceal(next, wanted, &mut self.decoded)
                    .unwrap_or(0);
                (kind, n)
            }
        };
        if samples > 0 {
            self.last_kind = kind;
            self.last_packet_samples = samples;
        }
        let resampler = if kind.pcm_rate() == 8000 {
            &mut self.from_narrow
        } else {
            &mut self.from_wide
        };
        let n = resampler.process(&self.decoded[..samples], &mut self.resampled);
        let room = FIFO_MAX - self.fifo_len;
        // More than the FIFO holds (the clock fell behind): what does not fit is dropped.
        let n = n.min(room);
        self.fifo[self.fifo_len..self.fifo_len + n].copy_from_slice(&self.resampled[..n]);
        self.fifo_len += n;
        true
    }

    fn send_frame(&mut self, emit: &mut dyn FnMut(&[u8])) {
        let frame = self.frame_samples;
        let header_len = rtp::write_header(&self.out, &mut self.packet);
        let encoded = self
            .encoder
            .encode(&self.fifo[..frame], &mut self.packet[header_len..]);
        self.fifo.copy_within(frame..self.fifo_len, 0);
        self.fifo_len -= frame;
        let step = self.out_format.kind.rtp_ticks(frame as u32);
        if let Ok(len) = encoded {
            emit(&self.packet[..header_len + len]);
            self.out.marker = false;
            self.out.seq = self.out.seq.wrapping_add(1);
        }
        self.out.timestamp = self.out.timestamp.wrapping_add(step);
    }

    /// Passes a telephone-event on in the receiving leg's numbering and clock.
    fn pass_event(&mut self, header: Header, payload: &[u8], emit: &mut dyn FnMut(&[u8])) {
        let (Some(out), Some(mut event)) = (self.events_out, TelephoneEvent::parse(payload)) else {
            return;
        };
        let new = self
            .event
            .is_none_or(|e| e.in_timestamp != header.timestamp);
        if new {
            self.event = Some(ActiveEvent {
                in_timestamp: header.timestamp,
                out_timestamp: self.out.timestamp,
            });
        }
        let Some(active) = self.event else { return };
        event.duration = rescale_duration(event.duration, self.events_in_clock, out.clock);
        let mut packet = [0u8; 16];
        let len = rtp::write_header(
            &Header {
                payload_type: out.send,
                marker: new,
                seq: self.out.seq,
                timestamp: active.out_timestamp,
                ssrc: self.out.ssrc,
            },
            &mut packet,
        );
        packet[len..len + 4].copy_from_slice(&event.write());
        self.out.seq = self.out.seq.wrapping_add(1);
        emit(&packet[..len + 4]);
    }

    fn decoder_for(&self, payload_type: u8) -> Option<&Incoming> {
        self.incoming
            .iter()
            .find(|i| i.format.payload_type == payload_type)
    }
}

/// `payload` with its payload type in front, in `scratch`.
fn payload_with_type<'a>(payload_type: u8, payload: &[u8], scratch: &'a mut [u8]) -> &'a [u8] {
    let len = payload.len().min(scratch.len() - 1);
    scratch[0] = payload_type;
    scratch[1..=len].copy_from_slice(&payload[..len]);
    &scratch[..=len]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp::Sdp;

    fn formats(sdp_formats: &str, rtpmaps: &str) -> LegFormats {
        let text = format!(
            "v=0\r\no=a 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
             m=audio 4000 RTP/AVP {sdp_formats}\r\n{rtpmaps}"
        );
        let sdp = Sdp::parse(text.as_bytes()).unwrap();
        LegFormats::negotiated(&sdp, &sdp)
    }

    fn sine(rate: u32, hz: f64, from: usize, n: usize) -> Vec<i16> {
        (from..from + n)
            .map(|i| {
                let t = i as f64 / f64::from(rate);
                (10_000.0 * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16
            })
            .collect()
    }

    /// Share of the power of `samples` at `hz` (Goertzel).
    fn tone_share(samples: &[i16], rate: u32, hz: f64) -> f64 {
        let coeff = 2.0 * (2.0 * std::f64::consts::PI * hz / f64::from(rate)).cos();
        let (mut s1, mut s2, mut total) = (0.0f64, 0.0f64, 0.0f64);
        for &x in samples {
            let x = f64::from(x);
            let s0 = x + coeff * s1 - s2;
            s2 = s1;
            s1 = s0;
            total += x * x;
        }
        let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
        2.0 * power / (samples.len() as f64 * total.max(1.0))
    }

    fn rtp(pt: u8, seq: u16, timestamp: u32, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 12];
        rtp::write_header(
            &Header {
                payload_type: pt,
                marker: false,
                seq,
                timestamp,
                ssrc: 0x1234,
            },
            &mut p,
        );
        p.extend_from_slice(payload);
        p
    }

    /// Runs `n` 20 ms packets of a `hz` tone encoded as `from` through a transcoder to
    /// `to`, one tick per packet in virtual time, and decodes what comes out.
    fn run(
        from: CodecKind,
        pt: u8,
        leg: &LegFormats,
        to: AudioFormat,
        hz: f64,
        n: usize,
    ) -> (Vec<Header>, Vec<i16>) {
        let mut t = Transcoder::new(leg, to, None, 0xBEEF).unwrap();
        let mut encoder = Encoder::new(from).unwrap();
        let mut decoder = Decoder::new(to.kind).unwrap();
        let frame = (from.pcm_rate() / 50) as usize;
        let start = Instant::now();
        let (mut headers, mut heard) = (Vec::new(), Vec::new());
        let mut payload = [0u8; 1500];
        let mut pcm = [0i16; 2000];
        for i in 0..n {
            let now = start + FRAME * i as u32;
            let len = encoder
                .encode(&sine(from.pcm_rate(), hz, i * frame, frame), &mut payload)
                .unwrap();
            let ts = from.rtp_ticks((i * frame) as u32);
            t.on_packet(now, &rtp(pt, i as u16, ts, &payload[..len]), &mut |_| {
                panic!("audio must wait for the clock")
            });
            t.on_tick(now, &mut |p| {
                let (h, body) = rtp::parse(p).unwrap();
                headers.push(h);
                let got = decoder.decode(body, &mut pcm).unwrap();
                heard.extend_from_slice(&pcm[..got]);
            });
        }
        (headers, heard)
    }

    #[test]
    fn pcmu_becomes_g722_with_the_tone_kept() {
        let leg = formats("0", "");
        let to = AudioFormat {
            payload_type: 9,
            kind: CodecKind::G722,
        };
        let (headers, heard) = run(CodecKind::Pcmu, 0, &leg, to, 1000.0, 50);
        assert!(headers.len() >= 45, "{} packets out", headers.len());
        // One stream: our SSRC, consecutive numbers, 160 ticks (20 ms of G.722) apart.
        for pair in headers.windows(2) {
            assert_eq!(pair[1].seq, pair[0].seq.wrapping_add(1));
            assert_eq!(pair[1].timestamp.wrapping_sub(pair[0].timestamp), 160);
            assert_eq!((pair[1].ssrc, pair[1].payload_type), (0xBEEF, 9));
        }
        assert!(headers[0].marker && !headers[1].marker);
        let tail = &heard[heard.len() - 16000 / 2..];
        assert!(tone_share(tail, 16000, 1000.0) > 0.8);
    }

    #[test]
    fn opus_becomes_pcma_and_a_reordered_pair_is_put_back_in_order() {
        let leg = formats("111", "a=rtpmap:111 opus/48000/2\r\n");
        let to = AudioFormat {
            payload_type: 8,
            kind: CodecKind::Pcma,
        };
        let (headers, heard) = run(CodecKind::Opus, 111, &leg, to, 600.0, 50);
        assert!(headers.len() >= 45);
        for pair in headers.windows(2) {
            assert_eq!(pair[1].timestamp.wrapping_sub(pair[0].timestamp), 160);
        }
        let tail = &heard[heard.len() - 4000..];
        assert!(tone_share(tail, 8000, 600.0) > 0.8);

        // Packets 2 and 3 swapped on the way: the jitter buffer plays them in order.
        let mut t = Transcoder::new(&leg, to, None, 1).unwrap();
        let mut encoder = Encoder::new(CodecKind::Opus).unwrap();
        let start = Instant::now();
        let mut packets = Vec::new();
        let mut payload = [0u8; 1500];
        for i in 0..6usize {
            let len = encoder
                .encode(&sine(16000, 600.0, i * 320, 320), &mut payload)
                .unwrap();
            packets.push(rtp(111, i as u16, 960 * i as u32, &payload[..len]));
        }
        packets.swap(2, 3);
        let mut out = 0;
        for (i, p) in packets.iter().enumerate() {
            let now = start + FRAME * i as u32;
            t.on_packet(now, p, &mut |_| {});
            t.on_tick(now, &mut |_| out += 1);
        }
        // Drain what the buffer holds back; stop before it starts concealing the
        // packets that would follow the last one.
        for i in 6..12u32 {
            if t.jitter().stats().played == 6 {
                break;
            }
            t.on_tick(start + FRAME * i, &mut |_| out += 1);
        }
        let stats = t.jitter().stats();
        assert_eq!(
            (stats.played, stats.lost, stats.late),
            (6, 0, 0),
            "{stats:?}"
        );
        // A frame more where the buffer stretched its delay for the late packet.
        assert!(
            (6..=6 + stats.stretched as usize).contains(&out),
            "{out} frames"
        );
    }

    #[test]
    fn events_move_to_the_outgoing_clock_and_timeline() {
        let leg = formats(
            "111 101",
            "a=rtpmap:111 opus/48000/2\r\na=rtpmap:101 telephone-event/48000\r\n",
        );
        let to = AudioFormat {
            payload_type: 0,
            kind: CodecKind::Pcmu,
        };
        let events = Some(EventFormat {
            send: 96,
            receive: 96,
            clock: 8000,
        });
        let mut t = Transcoder::new(&leg, to, events, 7).unwrap();
        let now = Instant::now();
        let mut sent = Vec::new();
        // Digit 5: start, continuation, three ends, all with one timestamp, 48 kHz units.
        for (seq, (end, duration)) in [
            (false, 960),
            (false, 1920),
            (true, 2880),
            (true, 2880),
            (true, 2880),
        ]
        .into_iter()
        .enumerate()
        {
            let event = TelephoneEvent {
                event: 5,
                end,
                volume: 10,
                duration,
            };
            t.on_packet(
                now,
                &rtp(101, seq as u16, 48_000, &event.write()),
                &mut |p| sent.push(p.to_vec()),
            );
        }
        assert_eq!(sent.len(), 5);
        let parsed: Vec<(Header, TelephoneEvent)> = sent
            .iter()
            .map(|p| {
                let (h, body) = rtp::parse(p).unwrap();
                (h, TelephoneEvent::parse(body).unwrap())
            })
            .collect();
        assert!(parsed[0].0.marker && !parsed[1].0.marker);
        assert!(
            parsed
                .iter()
                .all(|(h, _)| h.payload_type == 96 && h.ssrc == 7)
        );
        assert!(
            parsed
                .iter()
                .all(|(h, _)| h.timestamp == parsed[0].0.timestamp)
        );
        let durations: Vec<u16> = parsed.iter().map(|(_, e)| e.duration).collect();
        assert_eq!(durations, [160, 320, 480, 480, 480]);
        // A leg that takes no events gets none.
        let mut quiet = Transcoder::new(&leg, to, None, 7).unwrap();
        let event = TelephoneEvent {
            event: 5,
            end: false,
            volume: 10,
            duration: 960,
        };
        quiet.on_packet(now, &rtp(101, 0, 0, &event.write()), &mut |_| {
            panic!("no events towards this leg")
        });
    }
}
