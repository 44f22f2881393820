//! The media load: every call's two phones send G.711 at 50 packets per second towards
//! the relay, and everything the relay forwards is received and measured.
//!
//! All caller-side phones share one UDP socket and all callee-side phones another, so
//! the generator costs four threads and two sockets whatever the number of calls; the
//! relay still sees one latched address per leg, as with real phones. Packets are
//! paced evenly over each 20 ms period (in 1 ms batches) rather than sent in bursts.

use crate::histogram::Histogram;
use crate::procfs;
use crate::rtp::{self, Direction, PACKET_LEN, Stamp};
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const PACKET_INTERVAL: Duration = Duration::from_millis(20);
/// Senders wake at most this often; packets due meanwhile go out together.
const SEND_TICK: Duration = Duration::from_millis(1);
/// How long a receiver blocks before checking whether the run is over.
const RECV_POLL: Duration = Duration::from_millis(50);
/// Generator sockets take bursts from many relay sockets at once.
const SOCKET_BUFFER: usize = 4 << 20;

/// Where each of a call's two phones sends its RTP: the relay's address for that leg.
#[derive(Clone, Copy, Debug)]
pub struct CallMedia {
    pub a_dest: SocketAddr,
    pub b_dest: SocketAddr,
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
    pub latency_us: Percentiles,
    /// RFC 3550 interarrival jitter per stream (call and direction), over the streams.
    pub jitter_us: JitterSummary,
    pub relay_cpu_s: f64,
    /// Relay CPU time divided by the packets it relayed in the window.
    pub relay_cpu_us_per_packet: f64,
    pub relay_cpu_pct: f64,
    pub generator_cpu_pct: f64,
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
    std::thread::scope(|s| -> io::Result<Measurement> {
        let senders = [
            s.spawn(|| send_loop(&endpoints.a, &a_dests, Direction::AToB, epoch, window)),
            s.spawn(|| send_loop(&endpoints.b, &b_dests, Direction::BToA, epoch, window)),
        ];
        let receivers = [
            s.spawn(|| {
                receive_loop(
                    &endpoints.b,
                    calls.len(),
                    Direction::AToB,
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
                    epoch,
                    window,
                    &stop_receiving,
                )
            }),
        ];

        sleep_until(epoch + timing.warmup);
        let relay_cpu_start = procfs::cpu_seconds(relay_pid);
        let own_cpu_start = procfs::cpu_seconds(self_pid);
        sleep_until(epoch + timing.warmup + timing.measure);
        let relay_cpu_end = procfs::cpu_seconds(relay_pid);
        let own_cpu_end = procfs::cpu_seconds(self_pid);
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
        Ok(received.summarize(calls.len(), sent, window_s, relay_cpu_s, own_cpu_s))
    })
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

/// Sends one packet per call every 20 ms, call `i` offset by `i/n` of the period, until
/// the window ends.
fn send_loop(
    sock: &UdpSocket,
    dests: &[SocketAddr],
    direction: Direction,
    epoch: Instant,
    window: Window,
) -> SendCounts {
    let mut counts = SendCounts::default();
    let n = dests.len() as u64;
    if n == 0 {
        return counts;
    }
    let period_ns = PACKET_INTERVAL.as_nanos() as u64;
    let mut buf = [0u8; PACKET_LEN];
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
            let stamp = Stamp {
                call: call as u32,
                direction,
                seq: round as u32,
                sent_ns,
            };
            rtp::write_packet(&mut buf, &stamp);
            match sock.send_to(&buf, dests[call as usize]) {
                Ok(_) if window.contains(sent_ns) => counts.in_window += 1,
                Ok(_) => {}
                Err(_) => counts.errors += 1,
            }
            slot += 1;
        }
        std::thread::sleep(SEND_TICK);
    }
}

/// Per stream (one call, one direction) receive state.
#[derive(Clone, Copy, Default)]
struct StreamState {
    received_in_window: u64,
    highest_seq: Option<u32>,
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
}

impl Reception {
    fn new(calls: usize) -> Reception {
        Reception {
            streams: vec![StreamState::default(); calls],
            latency: Histogram::default(),
            reordered: 0,
            misdirected: 0,
            foreign: 0,
        }
    }

    fn on_packet(&mut self, stamp: &Stamp, expected: Direction, arrival_ns: u64, window: Window) {
        let Some(stream) = self.streams.get_mut(stamp.call as usize) else {
            self.misdirected += 1;
            return;
        };
        if stamp.direction != expected {
            self.misdirected += 1;
            return;
        }
        let transit = arrival_ns.saturating_sub(stamp.sent_ns);
        if let Some(last) = stream.last_transit_ns {
            let d = transit.abs_diff(last) as f64;
            stream.jitter_ns += (d - stream.jitter_ns) / 16.0;
        }
        stream.last_transit_ns = Some(transit);
        match stream.highest_seq {
            Some(h) if stamp.seq < h => self.reordered += 1,
            _ => stream.highest_seq = Some(stamp.seq),
        }
        if window.contains(stamp.sent_ns) {
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
            relay_cpu_pct: 100.0 * relay_cpu_s / window_s,
            generator_cpu_pct: 100.0 * own_cpu_s / window_s,
        }
    }
}

/// Receives one side's packets until told to stop.
fn receive_loop(
    sock: &UdpSocket,
    calls: usize,
    expected: Direction,
    epoch: Instant,
    window: Window,
    stop: &AtomicBool,
) -> Reception {
    let mut reception = Reception::new(calls);
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, _)) = sock.recv_from(&mut buf) else {
            continue; // the poll timeout, or an ICMP error from an earlier send
        };
        let arrival_ns = epoch.elapsed().as_nanos() as u64;
        match rtp::read_packet(&buf[..n]) {
            Some(stamp) => reception.on_packet(&stamp, expected, arrival_ns, window),
            None => reception.foreign += 1,
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
