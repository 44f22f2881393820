//! A phone's media end owned by the test: one UDP socket on loopback that a SIPp
//! scenario names in its SDP (`-set rtp_port N`) while SIPp does the signalling. It
//! speaks PCMU (payload type 0) with RFC 4733 events as 101, the numbers the SIPp
//! scenarios offer and switchboard's answers keep, on a 20 ms schedule as a phone does,
//! and keeps every packet it receives with its arrival time for the test to decode.
//!
//! Sending runs on the test's thread (each call returns when its last packet is out),
//! receiving on a thread of its own, so a test can press keys while audio arrives.

use super::{Server, free_port, wait_until};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use switchboard::media::codec::{CodecKind, Decoder, Encoder};
use switchboard::media::dtmf::EventSender;
use switchboard::media::rtp::{self, Header};
use switchboard::media::tone::{Tone, ToneGenerator};

/// The sample rate of PCMU and of everything this phone analyses.
pub const RATE: u32 = 8000;
/// Samples in one 20 ms packet.
pub const FRAME: usize = 160;
const PTIME: Duration = Duration::from_millis(20);
pub const PCMU: u8 = 0;
pub const EVENTS: u8 = 101;

/// One packet as it arrived.
#[derive(Clone, Debug)]
pub struct Received {
    /// Since the phone was made.
    pub at: Duration,
    pub from: SocketAddr,
    pub header: Header,
    pub payload: Vec<u8>,
}

/// A 20 ms frame of received PCMU, decoded.
#[derive(Clone, Debug)]
pub struct Frame {
    pub at: Duration,
    pub from: SocketAddr,
    pub pcm: Vec<i16>,
}

pub struct MediaPhone {
    socket: UdpSocket,
    pub port: u16,
    started: Instant,
    received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    receiver: Option<JoinHandle<()>>,
    peer: Option<SocketAddr>,
    encoder: Encoder,
    ssrc: u32,
    seq: u16,
    /// The RTP timestamp of the next 20 ms slot.
    timestamp: u32,
    /// When the next packet is due; `None` before the first and after a pause.
    due: Option<Instant>,
}

impl MediaPhone {
    /// Binds 127.0.0.1 on a free port and starts listening.
    pub fn new() -> MediaPhone {
        let port = free_port();
        let socket = UdpSocket::bind(("127.0.0.1", port)).expect("bind the media phone");
        let listener = socket.try_clone().expect("clone socket");
        listener
            .set_read_timeout(Some(Duration::from_millis(20)))
            .expect("read timeout");
        let started = Instant::now();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let receiver = {
            let (received, stop) = (received.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = listener.recv_from(&mut buf) else {
                        continue;
                    };
                    let at = started.elapsed();
                    if let Some((header, payload)) = rtp::parse(&buf[..n]) {
                        let packet = Received {
                            at,
                            from,
                            header,
                            payload: payload.to_vec(),
                        };
                        received.lock().expect("received").push(packet);
                    }
                }
            })
        };
        MediaPhone {
            socket,
            port,
            started,
            received,
            stop,
            receiver: Some(receiver),
            peer: None,
            encoder: Encoder::new(CodecKind::Pcmu).expect("PCMU encoder"),
            ssrc: 0x5eed_0000 | u32::from(port),
            seq: port.wrapping_mul(7),
            timestamp: u32::from(port) << 12,
            due: None,
        }
    }

    /// Time since the phone was made, the clock of [`Received::at`].
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Where to send from now on.
    pub fn send_to(&mut self, peer: SocketAddr) {
        self.peer = Some(peer);
    }

    /// Everything received so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("received").clone()
    }

    /// The PCMU packets received so far, decoded, in arrival order.
    pub fn audio(&self) -> Vec<Frame> {
        let mut decoder = Decoder::new(CodecKind::Pcmu).expect("PCMU decoder");
        let mut pcm = [0i16; 960];
        self.received()
            .into_iter()
            .filter(|p| p.header.payload_type == PCMU)
            .map(|p| {
                let n = decoder.decode(&p.payload, &mut pcm).expect("PCMU payload");
                Frame {
                    at: p.at,
                    from: p.from,
                    pcm: pcm[..n].to_vec(),
                }
            })
            .collect()
    }

    /// Waits for the next 20 ms slot; true if it starts a talkspurt (the first packet,
    /// or the first after a pause, whose timestamp then jumps by the time that passed:
    /// RFC 3551 §4.1).
    fn next_slot(&mut self) -> bool {
        let now = Instant::now();
        let (due, resumed) = match self.due {
            Some(due) if now <= due + PTIME * 5 => (due, false),
            Some(due) => {
                let skipped = ((now - due).as_millis() / 20) as u32;
                self.timestamp = self.timestamp.wrapping_add(skipped * FRAME as u32);
                (now, true)
            }
            None => (now, true),
        };
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        self.due = Some(due + PTIME);
        resumed
    }

    fn emit(&mut self, payload_type: u8, marker: bool, timestamp: u32, payload: &[u8]) {
        let peer = self
            .peer
            .expect("the media phone does not know where to send");
        let header = Header {
            payload_type,
            marker,
            seq: self.seq,
            timestamp,
            ssrc: self.ssrc,
        };
        let mut packet = [0u8; 12 + FRAME];
        let len = rtp::write_header(&header, &mut packet);
        packet[len..len + payload.len()].copy_from_slice(payload);
        self.socket
            .send_to(&packet[..len + payload.len()], peer)
            .expect("send RTP");
        self.seq = self.seq.wrapping_add(1);
    }

    /// Sends `pcm` (8 kHz) as 20 ms PCMU packets, the last one padded with silence.
    pub fn send_audio(&mut self, pcm: &[i16]) {
        let mut payload = [0u8; FRAME];
        for chunk in pcm.chunks(FRAME) {
            let mut frame = [0i16; FRAME];
            frame[..chunk.len()].copy_from_slice(chunk);
            let n = self.encoder.encode(&frame, &mut payload).expect("encode");
            let talkspurt = self.next_slot();
            self.emit(PCMU, talkspurt, self.timestamp, &payload[..n]);
            self.timestamp = self.timestamp.wrapping_add(FRAME as u32);
        }
    }

    pub fn send_silence(&mut self, length: Duration) {
        self.send_audio(&vec![0; samples(length)]);
    }

    /// A sine at `hz` with peak `amplitude`.
    pub fn send_tone(&mut self, hz: f64, amplitude: f64, length: Duration) {
        self.send_audio(&sine(hz, amplitude, samples(length)));
    }

    /// An RFC 4733 key press held `held`: a start packet with the marker, updates every
    /// 20 ms, then the end packet three times, all with the timestamp of the start, as
    /// a phone sends them; the audio timestamp then goes on past the press.
    pub fn press_key(&mut self, digit: char, held: Duration) {
        let mut sender = EventSender::new(digit, held.as_millis() as u32, RATE, 20)
            .unwrap_or_else(|| panic!("{digit:?} is no DTMF key"));
        let mut start = None;
        while let Some((event, first)) = sender.next_packet() {
            self.next_slot();
            let timestamp = *start.get_or_insert(self.timestamp);
            self.emit(EVENTS, first, timestamp, &event.write());
            self.timestamp = self.timestamp.wrapping_add(FRAME as u32);
        }
    }

    /// A key press as its DTMF tone in the audio (100 ms, switchboard's own generator).
    pub fn press_key_inband(&mut self, digit: char) {
        let mut generator = ToneGenerator::new(Tone::Digit(digit), RATE);
        let mut tone = Vec::new();
        let mut frame = [0i16; FRAME];
        while generator.fill(&mut frame) {
            tone.extend_from_slice(&frame);
        }
        assert!(!tone.is_empty(), "{digit:?} is no DTMF key");
        self.send_audio(&tone);
    }
}

impl Drop for MediaPhone {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(receiver) = self.receiver.take() {
            let _ = receiver.join();
        }
    }
}

/// Samples at [`RATE`] in `length`.
pub fn samples(length: Duration) -> usize {
    (length.as_micros() * u128::from(RATE) / 1_000_000) as usize
}

pub fn sine(hz: f64, amplitude: f64, n: usize) -> Vec<i16> {
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(RATE);
            (amplitude * (std::f64::consts::TAU * hz * t).sin()) as i16
        })
        .collect()
}

/// Root mean square of `pcm`.
pub fn rms(pcm: &[i16]) -> f64 {
    if pcm.is_empty() {
        return 0.0;
    }
    let energy: f64 = pcm.iter().map(|&s| f64::from(s).powi(2)).sum();
    (energy / pcm.len() as f64).sqrt()
}

/// The share of `pcm`'s energy at `hz` (Goertzel): about 1 for a sine at `hz` filling
/// the block, near 0 for anything far from it.
pub fn tone_share(pcm: &[i16], hz: f64) -> f64 {
    let energy: f64 = pcm.iter().map(|&s| f64::from(s).powi(2)).sum();
    if energy == 0.0 {
        return 0.0;
    }
    let coeff = 2.0 * (std::f64::consts::TAU * hz / f64::from(RATE)).cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &x in pcm {
        let s0 = f64::from(x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    2.0 * power / (pcm.len() as f64 * energy)
}

/// The frequency (5 Hz steps, 50-3800 Hz) holding the largest share of `pcm`'s energy,
/// and that share: near 1 for a pure tone, about 0.5 for two equal tones.
pub fn strongest_tone(pcm: &[i16]) -> (f64, f64) {
    (10..760)
        .map(|step| {
            let hz = f64::from(step) * 5.0;
            (hz, tone_share(pcm, hz))
        })
        .fold((0.0, 0.0), |best, f| if f.1 > best.1 { f } else { best })
}

/// The port switchboard gave `leg` (`"a_leg"`, `"b_leg"`) of its first live call, at
/// the server's SIP address, once that call is answered; waits up to 10 s.
pub fn switchboard_rtp(server: &Server, leg: &str) -> SocketAddr {
    let url = format!("http://{}/api/calls", server.admin);
    let mut last = serde_json::Value::Null;
    let mut port = None;
    wait_until(Duration::from_secs(10), || {
        let Ok(mut answer) = ureq::get(&url).call() else {
            return false;
        };
        let Ok(body) = answer.body_mut().read_to_string() else {
            return false;
        };
        last = serde_json::from_str(&body).unwrap_or_default();
        let call = &last["calls"][0];
        port = (call["state"] != "ringing")
            .then(|| call[leg]["our_rtp_port"].as_u64())
            .flatten()
            .filter(|&p| p > 0);
        port.is_some()
    });
    let port =
        port.unwrap_or_else(|| panic!("no answered call with an RTP port for {leg}: {last}"));
    SocketAddr::new(server.sip.ip(), u16::try_from(port).expect("a port"))
}
