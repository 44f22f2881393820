//! The media load: every call's two phones send 20 ms RTP packets at 50 per second
//! towards the relay, and everything the relay forwards is received and measured.
//!
//! All caller-side phones share one UDP socket and all callee-side phones another, so
//! the generator costs four threads and two sockets whatever the number of calls; the
//! relay still sees one latched address per leg, as with real phones. Packets are
//! paced evenly over each 20 ms period (in 1 ms batches) rather than sent in bursts.
//!
//! How a received packet is matched to the one sent:
//! - Stamped packets (relayed runs) carry call, direction, sequence and send time in
//!   the payload.
//! - Through a transcoder nothing of the payload survives, so audio packets are matched
//!   by where they come from and their RTP timestamp. Each call's relay sends from its
//!   own port, which names the call; the transcoder's stream counts frames in its RTP
//!   timestamps, so a packet's distance in timestamp from the stream's first packet
//!   (the one with the marker bit, made from the first frame sent) is its frame number
//!   `k`, and it is measured against the send time of frame `k` of that call, which the
//!   sender logs. A packet that matches no frame sent (the few frames a transcoder's
//!   concealment adds after the senders stop) is counted as unmatched.

use crate::audio::EncodedLoop;
use crate::histogram::Histogram;
use crate::procfs;
use crate::rtp::{self, Direction, PACKET_LEN, Stamp};
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use switchboard::media::rtp::Header;

const PACKET_INTERVAL: Duration = Duration::from_millis(20);
/// Senders wake at most this often; packets due meanwhile go out together.
const SEND_TICK: Duration = Duration::from_millis(1);
/// How long a receiver blocks before checking whether the run is over.
const RECV_POLL: Duration = Duration::from_millis(50);
/// Generator sockets take bursts from many relay sockets at once.
const SOCKET_BUFFER: usize = 4 << 20;

/// Where each of a call's two phones sends its RTP: the relay's address for that leg,
/// which is also where the relay's packets to that phone come from.
#[derive(Clone, Copy, Debug)]
pub struct CallMedia {
    pub a_dest: SocketAddr,
    pub b_dest: SocketAddr,
    /// The payload type the callee's phone sends its audio with (audio runs only).
    pub b_payload_type: u8,
}

/// Real audio for both phones of every call, measured by RTP timestamps; without it
/// the phones send stamped PCMU.
#[derive(Clone, Copy)]
pub struct Audio<'a> {
    /// What the caller's phone sends, PCMU (payload type 0).
    pub caller: &'a EncodedLoop,
    /// What the callee's phone sends.
    pub callee: &'a EncodedLoop,
}

/// The generator's two media sockets: every caller phone on `a`, every callee on `b`.
pub struct Endpoints {
    pub a: UdpSocket,
    pub b: UdpSocket,
}

impl Endpoints {
    pub fn bind(ip: std::net::IpAddr) -> io::Result<Endpoints> {
        Ok(Endpoints {
            a: bind_media_socket(SocketAddr::new(ip, 0))?,
            b: bind_media_socket(SocketAddr::new(ip, 0))?,
        })
    }

    pub fn a_addr(&self) -> io::Result<SocketAddr> {
        self.a.local_addr()
    }

    pub fn b_addr(&self) -> io::Result<SocketAddr> {
        self.b.local_addr()
    }
}

fn bind_media_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    sock.set_recv_buffer_size(SOCKET_BUFFER)?;
    sock.set_send_buffer_size(SOCKET_BUFFER)?;
    sock.bind(&addr.into())?;
    let sock: UdpSocket = sock.into();
    sock.set_read_timeout(Some(RECV_POLL))?;
    Ok(sock)
}

#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Traffic before the measurement window: relays latch, queues settle.
    pub warmup: Duration,
    pub measure: Duration,
    /// Time after the last packet is sent for the last ones to arrive.
    pub drain: Duration,
}

/// What one run measured. Packet counts cover packets *sent* inside the window.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Measurement {
    pub calls: usize,
    pub window_s: f64,
    pub sent: u64,
    pub received: u64,
    pub loss_pct: f64,
    pub send_errors: u64,
    pub reordered: u64,
    /// Packets of ours arriving at the wrong side, and datagrams not ours at all.
    pub misdirected: u64,
    pub foreign: u64,
    /// "payload stamps" or "rtp timestamps" (see the module doc).
    pub matched_by: &'static str,
    /// RTP matching only: packets that matched no frame sent, and streams whose first
    /// packet had no marker bit (their start was lost, so their frame numbers may be off).
    pub unmatched: u64,
    pub unanchored_streams: u64,
    pub latency_us: Percentiles,
    /// RFC 3550 interarrival jitter per stream (call and direction), over the streams.
    pub jitter_us: JitterSummary,
    pub relay_cpu_s: f64,
    /// Relay CPU time divided by the packets it relayed in the window.
    pub relay_cpu_us_per_packet: f64,
    /// Relay CPU time per call and second of the window (both directions).
    pub relay_cpu_us_per_call_second: f64,
    pub relay_cpu_pct: f64,
    pub generator_cpu_pct: f64,
    /// CPU used by everything else on the machine during the window (other people's
    /// work on a shared machine), in % of one core: a step with much of it is disturbed.
    pub others_cpu_pct: f64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct JitterSummary {
    pub mean: f64,
    pub p99: f64,
    pub max: f64,
}

/// Runs the load against `calls` and measures the relay process `relay_pid`.
pub fn run(
    endpoints: &Endpoints,
    calls: &[CallMedia],
    timing: Timing,
    relay_pid: u32,
    audio: Option<Audio<'_>>,
) -> io::Result<Measurement> {
    let epoch = Instant::now();
    let window = Window {
        start_ns: timing.warmup.as_nanos() as u64,
        end_ns: (timing.warmup + timing.measure).as_nanos() as u64,
    };
    let stop_receiving = AtomicBool::new(false);
    let self_pid = std::process::id();

    let a_dests: Vec<SocketAddr> = calls.iter().map(|c| c.a_dest).collect();
    let b_dests: Vec<SocketAddr> = calls.iter().map(|c| c.b_dest).collect();
    let a_types = vec![0u8; calls.len()];
    let b_types: Vec<u8> = calls.iter().map(|c| c.b_payload_type).collect();
    let rounds = (timing.warmup + timing.measure).as_nanos() / PACKET_INTERVAL.as_nanos() + 2;
    let logs = audio.map(|_| {
        [
            SendLog::new(calls.len(), rounds as u64),
            SendLog::new(calls.len(), rounds as u64),
        ]
    });
    // Packets towards the caller's phones come from each call's A-leg port, and so on.
    let a_ports = PortIndex::new(calls.iter().map(|c| c.a_dest.port()));
    let b_ports = PortIndex::new(calls.iter().map(|c| c.b_dest.port()));
    let a_sender = Sender {
        dests: &a_dests,
        payload_types: &a_types,
        direction: Direction::AToB,
        audio: audio.map(|a| a.caller),
        log: logs.as_ref().map(|l| &l[0]),
    };
    let b_sender = Sender {
        dests: &b_dests,
        payload_types: &b_types,
        direction: Direction::BToA,
        audio: audio.map(|a| a.callee),
        log: logs.as_ref().map(|l| &l[1]),
    };
    // What arrives at each side is in that side's own codec, so its clock steps as the
    // phone's own packets do.
    let match_at_b = match (audio, &logs) {
        (Some(a), Some(l)) => Matching::Rtp {
            ports: &b_ports,
            timestamp_step: a.callee.timestamp_step,
            sent: &l[0],
        },
        _ => Matching::Stamps,
    };
    let match_at_a = match (audio, &logs) {
        (Some(a), Some(l)) => Matching::Rtp {
            ports: &a_ports,
            timestamp_step: a.caller.timestamp_step,
            sent: &l[1],
        },
        _ => Matching::Stamps,
    };
    std::thread::scope(|s| -> io::Result<Measurement> {
        let senders = [
            s.spawn(|| a_sender.run(&endpoints.a, epoch, window)),
            s.spawn(|| b_sender.run(&endpoints.b, epoch, window)),
        ];
        let receivers = [
            s.spawn(|| {
                receive_loop(
                    &endpoints.b,
                    calls.len(),
                    Direction::AToB,
                    &match_at_b,
                    epoch,
                    window,
                    &stop_receiving,
                )
            }),
            s.spawn(|| {
                receive_loop(
                    &endpoints.a,
                    calls.len(),
                    Direction::BToA,
                    &match_at_a,
                    epoch,
                    window,
                    &stop_receiving,
                )
            }),
        ];

        sleep_until(epoch + timing.warmup);
        let relay_cpu_start = procfs::cpu_seconds(relay_pid);
        let own_cpu_start = procfs::cpu_seconds(self_pid);
        let machine_start = procfs::machine_busy_seconds();
        sleep_until(epoch + timing.warmup + timing.measure);
        let relay_cpu_end = procfs::cpu_seconds(relay_pid);
        let own_cpu_end = procfs::cpu_seconds(self_pid);
        let machine_end = procfs::machine_busy_seconds();
        sleep_until(epoch + timing.warmup + timing.measure + timing.drain);
        stop_receiving.store(true, Ordering::Relaxed);

        let mut sent = SendCounts::default();
        for h in senders {
            let c = h
                .join()
                .map_err(|_| io::Error::other("sender thread panicked"))?;
            sent.in_window += c.in_window;
            sent.errors += c.errors;
        }
        let mut received = Reception::new(0);
        for h in receivers {
            let r = h
                .join()
                .map_err(|_| io::Error::other("receiver thread panicked"))?;
            received.merge(r);
        }
        let window_s = timing.measure.as_secs_f64();
        let relay_cpu_s = relay_cpu_end? - relay_cpu_start?;
        let own_cpu_s = own_cpu_end? - own_cpu_start?;
        let mut m = received.summarize(calls.len(), sent, window_s, relay_cpu_s, own_cpu_s);
        let others_s = machine_end? - machine_start? - relay_cpu_s - own_cpu_s;
        m.others_cpu_pct = (100.0 * others_s / window_s).max(0.0);
        if audio.is_some() {
            m.matched_by = "rtp timestamps";
        }
        Ok(m)
    })
}

/// The send time of every frame of every call in one direction, for matching what
/// comes out of a transcoder by frame number.
struct SendLog {
    rounds: u64,
    /// Nanoseconds since the epoch, per call and round; 0 while not sent.
    times: Vec<AtomicU64>,
}

impl SendLog {
    fn new(calls: usize, rounds: u64) -> SendLog {
        SendLog {
            rounds,
            times: (0..calls as u64 * rounds)
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    fn record(&self, call: u64, round: u64, sent_ns: u64) {
        if round < self.rounds
            && let Some(slot) = self.times.get((call * self.rounds + round) as usize)
        {
            slot.store(sent_ns.max(1), Ordering::Relaxed);
        }
    }

    fn get(&self, call: u64, round: u64) -> Option<u64> {
        if round >= self.rounds {
            return None;
        }
        let t = self
            .times
            .get((call * self.rounds + round) as usize)?
            .load(Ordering::Relaxed);
        (t != 0).then_some(t)
    }
}

/// Which call a relay port belongs to.
struct PortIndex {
    /// Call index + 1 per port; 0 for none.
    calls: Vec<u32>,
}

impl PortIndex {
    fn new(ports: impl Iterator<Item = u16>) -> PortIndex {
        let mut calls = vec![0u32; 65_536];
        for (i, port) in ports.enumerate() {
            calls[usize::from(port)] = i as u32 + 1;
        }
        PortIndex { calls }
    }

    fn call(&self, port: u16) -> Option<u32> {
        self.calls[usize::from(port)].checked_sub(1)
    }
}

/// How a receiver finds which packet it got.
enum Matching<'a> {
    Stamps,
    Rtp {
        ports: &'a PortIndex,
        /// RTP timestamp units per 20 ms frame of what arrives.
        timestamp_step: u32,
        /// The other side's send log.
        sent: &'a SendLog,
    },
}

/// The send times (ns since the run's epoch) whose packets are counted.
#[derive(Clone, Copy)]
struct Window {
    start_ns: u64,
    end_ns: u64,
}

impl Window {
    fn contains(&self, ns: u64) -> bool {
        (self.start_ns..self.end_ns).contains(&ns)
    }
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

#[derive(Default)]
struct SendCounts {
    in_window: u64,
    errors: u64,
}

/// One side's phones.
struct Sender<'a> {
    dests: &'a [SocketAddr],
    payload_types: &'a [u8],
    direction: Direction,
    /// Real audio to send; stamped PCMU without it.
    audio: Option<&'a EncodedLoop>,
    log: Option<&'a SendLog>,
}

impl Sender<'_> {
    /// Sends one packet per call every 20 ms, call `i` offset by `i/n` of the period,
    /// until the window ends.
    fn run(&self, sock: &UdpSocket, epoch: Instant, window: Window) -> SendCounts {
        let mut counts = SendCounts::default();
        let n = self.dests.len() as u64;
        if n == 0 {
            return counts;
        }
        let period_ns = PACKET_INTERVAL.as_nanos() as u64;
        let mut stamped = [0u8; PACKET_LEN];
        let mut audio_buf = [0u8; 12 + 1500];
        let mut slot: u64 = 0; // round * n + call
        loop {
            let now_ns = epoch.elapsed().as_nanos() as u64;
            if now_ns >= window.end_ns {
                return counts;
            }
            loop {
                let (round, call) = (slot / n, slot % n);
                let due_ns = round * period_ns + call * period_ns / n;
                if due_ns > now_ns {
                    break;
                }
                let sent_ns = epoch.elapsed().as_nanos() as u64;
                let packet: &[u8] = match self.audio {
                    None => {
                        let stamp = Stamp {
                            call: call as u32,
                            direction: self.direction,
                            seq: round as u32,
                            sent_ns,
                        };
                        rtp::write_packet(&mut stamped, &stamp);
                        &stamped
                    }
                    Some(audio) => {
                        // Calls start at different points of the prompt.
                        let len = rtp::write_audio_packet(
                            &mut audio_buf,
                            self.payload_types[call as usize],
                            call as u32,
                            self.direction,
                            round,
                            audio.timestamp_step,
                            audio.frame(round + 37 * call),
                        );
                        &audio_buf[..len]
                    }
                };
                // Logged before sending, so the receiver never sees a frame before its time.
                if let Some(log) = self.log {
                    log.record(call, round, sent_ns);
                }
                match sock.send_to(packet, self.dests[call as usize]) {
                    Ok(_) if window.contains(sent_ns) => counts.in_window += 1,
                    Ok(_) => {}
                    Err(_) => counts.errors += 1,
                }
                slot += 1;
            }
            std::thread::sleep(SEND_TICK);
        }
    }
}

/// Per stream (one call, one direction) receive state.
#[derive(Clone, Copy, Default)]
struct StreamState {
    received_in_window: u64,
    highest_seq: Option<u32>,
    /// RTP matching: the timestamp of the stream's first packet (frame 0).
    anchor: Option<u32>,
    last_transit_ns: Option<u64>,
    /// RFC 3550 §6.4.1 estimator, in nanoseconds.
    jitter_ns: f64,
}

struct Reception {
    streams: Vec<StreamState>,
    latency: Histogram,
    reordered: u64,
    misdirected: u64,
    foreign: u64,
    unmatched: u64,
    unanchored: u64,
}

impl Reception {
    fn new(calls: usize) -> Reception {
        Reception {
            streams: vec![StreamState::default(); calls],
            latency: Histogram::default(),
            reordered: 0,
            misdirected: 0,
            foreign: 0,
            unmatched: 0,
            unanchored: 0,
        }
    }

    fn on_packet(&mut self, stamp: &Stamp, expected: Direction, arrival_ns: u64, window: Window) {
        if stamp.call as usize >= self.streams.len() || stamp.direction != expected {
            self.misdirected += 1;
            return;
        }
        self.record(
            stamp.call as usize,
            stamp.seq,
            stamp.sent_ns,
            arrival_ns,
            window,
        );
    }

    /// A packet matched by RTP timestamp (see the module doc): `call` from the port it
    /// came from, its frame number from its timestamp.
    fn on_rtp(
        &mut self,
        call: usize,
        header: &Header,
        timestamp_step: u32,
        sent: &SendLog,
        arrival_ns: u64,
        window: Window,
    ) {
        let Some(stream) = self.streams.get_mut(call) else {
            self.misdirected += 1;
            return;
        };
        let anchor = match stream.anchor {
            Some(a) => a,
            None => {
                if !header.marker {
                    self.unanchored += 1;
                }
                stream.anchor = Some(header.timestamp);
                header.timestamp
            }
        };
        let Ok(offset) = u64::try_from(header.timestamp.wrapping_sub(anchor) as i32) else {
            // Older than the stream's first packet: it overtook this one.
            self.reordered += 1;
            return;
        };
        let step = u64::from(timestamp_step.max(1));
        let frame = (offset + step / 2) / step;
        let Some(sent_ns) = sent.get(call as u64, frame) else {
            self.unmatched += 1;
            return;
        };
        self.record(call, frame as u32, sent_ns, arrival_ns, window);
    }

    /// Frame `seq` of a stream, sent at `sent_ns`, arrived at `arrival_ns`.
    fn record(&mut self, call: usize, seq: u32, sent_ns: u64, arrival_ns: u64, window: Window) {
        let stream = &mut self.streams[call];
        let transit = arrival_ns.saturating_sub(sent_ns);
        if let Some(last) = stream.last_transit_ns {
            let d = transit.abs_diff(last) as f64;
            stream.jitter_ns += (d - stream.jitter_ns) / 16.0;
        }
        stream.last_transit_ns = Some(transit);
        match stream.highest_seq {
            Some(h) if seq < h => self.reordered += 1,
            _ => stream.highest_seq = Some(seq),
        }
        if window.contains(sent_ns) {
            stream.received_in_window += 1;
            self.latency.record(transit / 1_000);
        }
    }

    fn merge(&mut self, other: Reception) {
        self.streams.extend(other.streams);
        self.latency.merge(&other.latency);
        self.reordered += other.reordered;
        self.misdirected += other.misdirected;
        self.foreign += other.foreign;
        self.unmatched += other.unmatched;
        self.unanchored += other.unanchored;
    }

    fn summarize(
        self,
        calls: usize,
        sent: SendCounts,
        window_s: f64,
        relay_cpu_s: f64,
        own_cpu_s: f64,
    ) -> Measurement {
        let received: u64 = self.streams.iter().map(|s| s.received_in_window).sum();
        let mut jitters: Vec<f64> = self
            .streams
            .iter()
            .filter(|s| s.last_transit_ns.is_some())
            .map(|s| s.jitter_ns / 1_000.0)
            .collect();
        jitters.sort_by(f64::total_cmp);
        let jitter_at = |q: f64| -> f64 {
            if jitters.is_empty() {
                return 0.0;
            }
            let i = ((q * jitters.len() as f64).ceil() as usize).clamp(1, jitters.len()) - 1;
            jitters[i]
        };
        let loss_pct = if sent.in_window == 0 {
            100.0
        } else {
            100.0 * sent.in_window.saturating_sub(received) as f64 / sent.in_window as f64
        };
        Measurement {
            calls,
            window_s,
            sent: sent.in_window,
            received,
            loss_pct,
            send_errors: sent.errors,
            reordered: self.reordered,
            misdirected: self.misdirected,
            foreign: self.foreign,
            matched_by: "payload stamps",
            unmatched: self.unmatched,
            unanchored_streams: self.unanchored,
            latency_us: Percentiles {
                p50: self.latency.quantile(0.5),
                p90: self.latency.quantile(0.9),
                p99: self.latency.quantile(0.99),
                p999: self.latency.quantile(0.999),
                max: self.latency.max(),
            },
            jitter_us: JitterSummary {
                mean: jitters.iter().sum::<f64>() / jitters.len().max(1) as f64,
                p99: jitter_at(0.99),
                max: jitter_at(1.0),
            },
            relay_cpu_s,
            relay_cpu_us_per_packet: if received == 0 {
                0.0
            } else {
                relay_cpu_s * 1e6 / received as f64
            },
            relay_cpu_us_per_call_second: relay_cpu_s * 1e6 / (calls.max(1) as f64 * window_s),
            relay_cpu_pct: 100.0 * relay_cpu_s / window_s,
            generator_cpu_pct: 100.0 * own_cpu_s / window_s,
            others_cpu_pct: 0.0,
        }
    }
}

/// Receives one side's packets until told to stop.
fn receive_loop(
    sock: &UdpSocket,
    calls: usize,
    expected: Direction,
    matching: &Matching<'_>,
    epoch: Instant,
    window: Window,
    stop: &AtomicBool,
) -> Reception {
    let mut reception = Reception::new(calls);
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue; // the poll timeout, or an ICMP error from an earlier send
        };
        let arrival_ns = epoch.elapsed().as_nanos() as u64;
        match matching {
            Matching::Stamps => match rtp::read_packet(&buf[..n]) {
                Some(stamp) => reception.on_packet(&stamp, expected, arrival_ns, window),
                None => reception.foreign += 1,
            },
            Matching::Rtp {
                ports,
                timestamp_step,
                sent,
            } => match (
                ports.call(from.port()),
                switchboard::media::rtp::parse(&buf[..n]),
            ) {
                (Some(call), Some((header, _))) => reception.on_rtp(
                    call as usize,
                    &header,
                    *timestamp_step,
                    sent,
                    arrival_ns,
                    window,
                ),
                _ => reception.foreign += 1,
            },
        }
    }
    reception
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(call: u32, seq: u32, sent_ns: u64) -> Stamp {
        Stamp {
            call,
            direction: Direction::AToB,
            seq,
            sent_ns,
        }
    }

    const WINDOW: Window = Window {
        start_ns: 1_000_000_000,
        end_ns: 2_000_000_000,
    };

    #[test]
    fn constant_transit_has_no_jitter_and_only_window_packets_count() {
        let mut r = Reception::new(1);
        for seq in 0..100u32 {
            let sent = 20_000_000 * u64::from(seq);
            r.on_packet(
                &stamp(0, seq, sent),
                Direction::AToB,
                sent + 150_000,
                WINDOW,
            );
        }
        let m = r.summarize(
            1,
            SendCounts {
                in_window: 50,
                errors: 0,
            },
            1.0,
            0.01,
            0.02,
        );
        assert_eq!(m.received, 50, "sent 1.0 s .. 2.0 s: 50 of 100 packets");
        assert_eq!(m.loss_pct, 0.0);
        assert_eq!(m.jitter_us.max, 0.0);
        assert_eq!(m.latency_us.p50, 150);
        assert_eq!(m.latency_us.max, 150);
        assert!((m.relay_cpu_us_per_packet - 200.0).abs() < 1e-9);
    }

    #[test]
    fn alternating_transit_converges_to_the_rfc3550_jitter() {
        let mut r = Reception::new(1);
        for seq in 0..2_000u32 {
            let sent = 20_000_000 * u64::from(seq);
            let transit = if seq % 2 == 0 { 100_000 } else { 300_000 };
            r.on_packet(
                &stamp(0, seq, sent),
                Direction::AToB,
                sent + transit,
                WINDOW,
            );
        }
        let m = r.summarize(1, SendCounts::default(), 1.0, 0.0, 0.0);
        // |D| is always 200 µs, so J converges to 200 µs.
        assert!(
            (m.jitter_us.mean - 200.0).abs() < 0.5,
            "{}",
            m.jitter_us.mean
        );
    }

    fn header(seq: u16, timestamp: u32, marker: bool) -> Header {
        Header {
            payload_type: 0,
            marker,
            seq,
            timestamp,
            ssrc: 0xBEEF,
        }
    }

    #[test]
    fn transcoded_packets_are_matched_by_timestamp_from_the_stream_start() {
        // Call 1's frames 0..=60 sent every 20 ms from 0.9 s; frames 61.. never sent.
        let sent = SendLog::new(2, 100);
        let at = |frame: u64| 900_000_000 + 20_000_000 * frame;
        for frame in 0..=60 {
            sent.record(1, frame, at(frame));
        }
        let mut r = Reception::new(2);
        // The transcoder's own stream: a random first timestamp near the wrap, Opus's
        // 960 per frame, 45 ms behind the input; frame 12 never comes out.
        let base = u32::MAX - 5_000;
        for frame in (0..=65u64).filter(|&f| f != 12) {
            let ts = base.wrapping_add(960 * frame as u32);
            let h = header(frame as u16, ts, frame == 0);
            r.on_rtp(1, &h, 960, &sent, at(frame) + 45_000_000, WINDOW);
        }
        // Frames 5..=54 were sent inside the window (1.0 s .. 2.0 s): 50, one missing.
        let m = r.summarize(
            2,
            SendCounts {
                in_window: 50,
                errors: 0,
            },
            1.0,
            0.0,
            0.0,
        );
        assert_eq!(m.received, 49);
        assert!((m.loss_pct - 2.0).abs() < 1e-9);
        assert_eq!(m.latency_us.p50, 45_000);
        assert_eq!(m.jitter_us.max, 0.0);
        // The five frames after the last one sent are concealment, matched to nothing.
        assert_eq!((m.unmatched, m.unanchored_streams, m.reordered), (5, 0, 0));
    }

    #[test]
    fn a_stream_whose_start_was_lost_is_flagged_and_older_packets_count_as_reordered() {
        let sent = SendLog::new(1, 10);
        for frame in 0..10 {
            sent.record(0, frame, 1_000 + frame);
        }
        let mut r = Reception::new(1);
        r.on_rtp(0, &header(3, 480, false), 160, &sent, 5_000, WINDOW);
        r.on_rtp(0, &header(2, 320, false), 160, &sent, 5_000, WINDOW);
        r.on_rtp(0, &header(4, 640, false), 160, &sent, 5_000, WINDOW);
        assert_eq!((r.unanchored, r.reordered), (1, 1));
        assert_eq!(r.streams[0].highest_seq, Some(1));
        // A port that is no call's and a call number out of range are not ours.
        let ports = PortIndex::new([4000u16, 4002].into_iter());
        assert_eq!((ports.call(4002), ports.call(4001)), (Some(1), None));
        r.on_rtp(5, &header(0, 0, true), 160, &sent, 5_000, WINDOW);
        assert_eq!(r.misdirected, 1);
    }

    #[test]
    fn losses_reorders_and_strays_are_counted() {
        let mut r = Reception::new(2);
        let at = |seq: u32| 1_000_000_000 + 20_000_000 * u64::from(seq);
        for seq in [0u32, 1, 3, 2, 5] {
            r.on_packet(
                &stamp(1, seq, at(seq)),
                Direction::AToB,
                at(seq) + 1_000,
                WINDOW,
            );
        }
        r.on_packet(&stamp(7, 0, at(0)), Direction::AToB, at(0), WINDOW);
        let mut wrong_way = stamp(0, 0, at(0));
        wrong_way.direction = Direction::BToA;
        r.on_packet(&wrong_way, Direction::AToB, at(0), WINDOW);
        let m = r.summarize(
            2,
            SendCounts {
                in_window: 12,
                errors: 0,
            },
            1.0,
            0.0,
            0.0,
        );
        assert_eq!(m.received, 5);
        assert_eq!(m.reordered, 1);
        assert_eq!(m.misdirected, 2);
        assert!((m.loss_pct - 100.0 * 7.0 / 12.0).abs() < 1e-9);
    }
}
