//! No heap allocation per packet on the media paths, counted.
//!
//! A counting global allocator counts every allocation and reallocation made by the
//! thread that is measuring; frees are not counted (freeing what was allocated before
//! the measurement is not a new allocation, and anything allocated inside it is counted
//! anyway). The counter is per thread, so the test harness's other threads (other
//! tests, output capture) cannot disturb a measurement.
//!
//! Measured after a warm-up, which is when buffers that grow once (the runtime's queues,
//! a path's first interval timer) have grown:
//! - the pure [`Transcoder`], fed packets and ticks in virtual time: PCMU to G.722, PCMU
//!   to Opus and Opus to PCMA, with a telephone-event, a lost packet and a reordered
//!   pair in the measured stretch;
//! - the relay task over loopback, first relaying and then transcoding both ways, in a
//!   current-thread tokio runtime: the relay's task, the runtime's I/O and timer
//!   drivers and the test's phones all run on the measuring thread, so everything a
//!   packet costs is counted, and nothing is left out by running elsewhere.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use switchboard::media::codec::{CodecKind, Encoder};
use switchboard::media::dtmf::TelephoneEvent;
use switchboard::media::plan::{AudioFormat, DirectionPlan, EventFormat, LegFormats};
use switchboard::media::rtp::{self, Header};
use switchboard::media::transcode::{FRAME, Transcoder};
use switchboard::media::{PortAllocator, PortRange, Relay, RelayConfig, Side};
use tokio::net::UdpSocket;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: the allocator also runs while a thread's locals are being torn down.
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: every call is passed on unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn the_counter_sees_this_threads_allocations_and_not_other_threads() {
    let before = allocations();
    let boxed = std::hint::black_box(Box::new([0u8; 64]));
    assert_eq!(allocations() - before, 1);
    drop(boxed);
    let before = allocations();
    std::thread::spawn(|| std::hint::black_box(vec![1u8; 4096]))
        .join()
        .unwrap();
    // Spawning allocates here (the thread's handle); the vector, over there, is not ours.
    let spawn_only = allocations() - before;
    let before = allocations();
    std::thread::spawn(|| ()).join().unwrap();
    assert_eq!(allocations() - before, spawn_only);
}

// ---- the pure transcoder ----

const EVENTS_8K: EventFormat = EventFormat {
    send: 101,
    receive: 101,
    clock: 8000,
};

fn leg(format: AudioFormat, events: Option<EventFormat>) -> LegFormats {
    LegFormats {
        accepts: vec![format],
        receives: vec![format],
        events,
    }
}

fn format(payload_type: u8, kind: CodecKind) -> AudioFormat {
    AudioFormat { payload_type, kind }
}

/// 20 ms frames of a tone at `kind`'s rate, encoded as `kind`.
fn encoded_tone(kind: CodecKind, frames: usize) -> Vec<Vec<u8>> {
    let mut encoder = Encoder::new(kind).unwrap();
    let rate = kind.pcm_rate() as usize;
    let frame = rate / 50;
    let mut out = [0u8; 1500];
    (0..frames)
        .map(|i| {
            let pcm: Vec<i16> = (i * frame..(i + 1) * frame)
                .map(|n| {
                    let t = n as f64 / rate as f64;
                    (8000.0 * (2.0 * std::f64::consts::PI * 700.0 * t).sin()) as i16
                })
                .collect();
            let len = encoder.encode(&pcm, &mut out).unwrap();
            out[..len].to_vec()
        })
        .collect()
}

fn rtp_packet(payload_type: u8, seq: u16, timestamp: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
    let mut packet = vec![0u8; 12 + payload.len()];
    rtp::write_header(
        &Header {
            payload_type,
            marker,
            seq,
            timestamp,
            ssrc: 0x5EED,
        },
        &mut packet,
    );
    packet[12..].copy_from_slice(payload);
    packet
}

/// What a leg sends in frame `i` of a test stream: audio, with a key press (start,
/// continuation, three ends) on frames 200..205 and frame 230 lost on the way.
/// Returns the packets, in the order they arrive, for frames `range`.
fn stream(
    from: AudioFormat,
    events: Option<EventFormat>,
    frames: &[Vec<u8>],
    range: std::ops::Range<usize>,
) -> Vec<(usize, Vec<u8>)> {
    let step = from.kind.rtp_ticks(from.kind.pcm_rate() / 50);
    let mut packets = Vec::new();
    let mut seq = range.start as u16;
    for i in range {
        let timestamp = step * i as u32;
        if i != 230 {
            packets.push((
                i,
                rtp_packet(
                    from.payload_type,
                    seq,
                    timestamp,
                    i == 0,
                    &frames[i % frames.len()],
                ),
            ));
        }
        seq = seq.wrapping_add(1);
        if let (Some(e), 200..205) = (events, i) {
            let event = TelephoneEvent {
                event: 5,
                end: i >= 202,
                volume: 10,
                duration: (e.clock / 50) as u16 * (i as u16 - 199),
            };
            packets.push((
                i,
                rtp_packet(e.receive, seq, step * 200, i == 200, &event.write()),
            ));
            seq = seq.wrapping_add(1);
        }
    }
    // Frames 250 and 251 arrive the wrong way round.
    if let Some(p) = packets.iter().position(|(i, _)| *i == 250)
        && packets.get(p + 1).is_some_and(|(i, _)| *i == 251)
    {
        packets.swap(p, p + 1);
    }
    packets
}

/// Feeds `packets` (frame number, bytes) to `t`, one tick per frame, in virtual time.
/// Returns the audio and event packets the transcoder sent.
fn feed(
    t: &mut Transcoder,
    start: Instant,
    packets: &[(usize, Vec<u8>)],
    event_pt: Option<u8>,
) -> (usize, usize) {
    let (mut audio, mut events) = (0usize, 0usize);
    let mut emit = |p: &[u8]| {
        if event_pt == Some(p[1] & 0x7f) {
            events += 1;
        } else {
            audio += 1;
        }
    };
    let mut ticked = None;
    for (frame, packet) in packets {
        let now = start + FRAME * *frame as u32;
        t.on_packet(now, packet, &mut emit);
        if ticked != Some(*frame) {
            t.on_tick(now, &mut emit);
            ticked = Some(*frame);
        }
    }
    (audio, events)
}

fn transcoder_allocates_nothing_per_packet(
    from: AudioFormat,
    from_events: Option<EventFormat>,
    to: AudioFormat,
    to_events: Option<EventFormat>,
) {
    let frames = encoded_tone(from.kind, 50);
    let warm_up = stream(from, from_events, &frames, 0..100);
    let measured = stream(from, from_events, &frames, 100..400);
    let mut t = Transcoder::new(&leg(from, from_events), to, to_events, 0xC0DEC).unwrap();
    let start = Instant::now();
    let event_pt = to_events.map(|e| e.send);
    feed(&mut t, start, &warm_up, event_pt);
    let before = allocations();
    let (audio, events) = feed(&mut t, start, &measured, event_pt);
    let allocated = allocations() - before;
    assert_eq!(
        allocated,
        0,
        "{} -> {}: {allocated} allocations for {} packets in",
        from.kind,
        to.kind,
        measured.len()
    );
    // The measured stretch really went through every path: audio out, the key press
    // passed on, the lost frame concealed.
    assert!(
        audio >= 290,
        "{} -> {}: {audio} frames out",
        from.kind,
        to.kind
    );
    assert_eq!(events, 5, "{} -> {}", from.kind, to.kind);
    assert!(t.jitter().stats().lost >= 1, "{:?}", t.jitter().stats());
}

#[test]
fn transcoding_pcmu_to_g722_allocates_nothing_per_packet() {
    transcoder_allocates_nothing_per_packet(
        format(0, CodecKind::Pcmu),
        Some(EVENTS_8K),
        format(9, CodecKind::G722),
        Some(EVENTS_8K),
    );
}

#[test]
fn transcoding_pcmu_to_opus_allocates_nothing_per_packet() {
    transcoder_allocates_nothing_per_packet(
        format(0, CodecKind::Pcmu),
        Some(EVENTS_8K),
        format(111, CodecKind::Opus),
        Some(EventFormat {
            send: 100,
            receive: 100,
            clock: 48_000,
        }),
    );
}

#[test]
fn transcoding_opus_to_pcma_allocates_nothing_per_packet() {
    transcoder_allocates_nothing_per_packet(
        format(96, CodecKind::Opus),
        Some(EventFormat {
            send: 101,
            receive: 101,
            clock: 48_000,
        }),
        format(8, CodecKind::Pcma),
        Some(EVENTS_8K),
    );
}

// ---- the relay task over loopback ----

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A phone: sends from one socket and takes whatever the relay sent it.
struct Phone {
    socket: UdpSocket,
    received: usize,
    buf: [u8; 2048],
}

impl Phone {
    async fn new() -> Phone {
        Phone {
            socket: UdpSocket::bind((LOOPBACK, 0)).await.unwrap(),
            received: 0,
            buf: [0; 2048],
        }
    }

    fn addr(&self) -> SocketAddr {
        self.socket.local_addr().unwrap()
    }

    fn send(&self, packet: &[u8], to: SocketAddr) {
        // A full send buffer on loopback would be the test's problem, not the relay's.
        self.socket.try_send_to(packet, to).unwrap();
    }

    /// Takes what has arrived, without waiting.
    fn drain(&mut self) {
        while self.socket.try_recv_from(&mut self.buf).is_ok() {
            self.received += 1;
        }
    }
}

/// Runs `frames` 20 ms frames of both phones talking through the relay, in real time,
/// draining what comes back as it goes. Returns the allocations made meanwhile.
async fn talk(
    a: &mut Phone,
    b: &mut Phone,
    (to_a_leg, to_b_leg): (SocketAddr, SocketAddr),
    (from_a, from_b): (&[Vec<u8>], &[Vec<u8>]),
    frames: std::ops::Range<usize>,
) -> u64 {
    let mut clock = tokio::time::interval(FRAME);
    clock.tick().await;
    let before = allocations();
    for i in frames {
        clock.tick().await;
        a.send(&from_a[i], to_a_leg);
        b.send(&from_b[i], to_b_leg);
        // Lets the relay task run, then takes what it sent.
        tokio::task::yield_now().await;
        a.drain();
        b.drain();
    }
    let allocated = allocations() - before;
    // The last frames' way through (outside the count).
    tokio::time::sleep(Duration::from_millis(100)).await;
    a.drain();
    b.drain();
    allocated
}

/// Both legs' packets for frames 0..n: A sends `a` (payload type `a_pt`), B `b`.
fn both_streams(
    a: (AudioFormat, &[Vec<u8>]),
    b: (AudioFormat, &[Vec<u8>]),
    n: usize,
) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let make = |(f, payloads): (AudioFormat, &[Vec<u8>])| -> Vec<Vec<u8>> {
        let step = f.kind.rtp_ticks(f.kind.pcm_rate() / 50);
        (0..n)
            .map(|i| {
                rtp_packet(
                    f.payload_type,
                    i as u16,
                    step * i as u32,
                    i == 0,
                    &payloads[i % payloads.len()],
                )
            })
            .collect()
    };
    (make(a), make(b))
}

#[test]
fn the_relay_task_allocates_nothing_per_packet_relaying_or_transcoding() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // Tasks spawned on this runtime run on this thread, so the counter sees them.
        let before = allocations();
        tokio::spawn(async { std::hint::black_box(Box::new(1u64)) })
            .await
            .unwrap();
        assert!(
            allocations() - before >= 2,
            "the task and its box are counted"
        );

        let ports = PortAllocator::new(LOOPBACK, "33400-33419".parse::<PortRange>().unwrap());
        let relay = Relay::start(
            ports.allocate().unwrap(),
            Some(ports.allocate().unwrap()),
            RelayConfig::default(),
            None,
        );
        let (mut a, mut b) = (Phone::new().await, Phone::new().await);
        relay.set_remote(Side::A, Some(a.addr()), None);
        relay.set_remote(Side::B, Some(b.addr()), None);
        let legs = (
            SocketAddr::new(LOOPBACK, relay.rtp_port(Side::A)),
            SocketAddr::new(LOOPBACK, relay.rtp_port(Side::B)),
        );

        // Relayed: both legs PCMU.
        let pcmu = format(0, CodecKind::Pcmu);
        let pcmu_frames = encoded_tone(CodecKind::Pcmu, 50);
        let (from_a, from_b) = both_streams((pcmu, &pcmu_frames), (pcmu, &pcmu_frames), 300);
        talk(&mut a, &mut b, legs, (&from_a, &from_b), 0..50).await;
        let relayed = talk(&mut a, &mut b, legs, (&from_a, &from_b), 50..150).await;
        assert_eq!((a.received, b.received), (150, 150), "every packet relayed");
        assert_eq!(relayed, 0, "{relayed} allocations relaying 200 packets");

        // Transcoded both ways: leg B now speaks G.722.
        let g722 = format(9, CodecKind::G722);
        let g722_frames = encoded_tone(CodecKind::G722, 50);
        let (a_leg, b_leg) = (leg(pcmu, Some(EVENTS_8K)), leg(g722, Some(EVENTS_8K)));
        relay.set_plan(Side::A, &DirectionPlan::between(&a_leg, &b_leg).unwrap());
        relay.set_plan(Side::B, &DirectionPlan::between(&b_leg, &a_leg).unwrap());
        assert!(relay.is_transcoding(Side::A) && relay.is_transcoding(Side::B));
        let (from_a, from_b) = both_streams((pcmu, &pcmu_frames), (g722, &g722_frames), 300);
        let (a_before, b_before) = (a.received, b.received);
        talk(&mut a, &mut b, legs, (&from_a, &from_b), 0..50).await;
        let (a_warm, b_warm) = (a.received, b.received);
        let transcoded = talk(&mut a, &mut b, legs, (&from_a, &from_b), 50..150).await;
        // About a frame out per frame in, each way: the transcoding path really ran.
        // (Not a timing check: a loaded machine may stall the clock a few frames.)
        assert!(
            a.received - a_warm >= 80,
            "{} frames to A",
            a.received - a_warm
        );
        assert!(
            b.received - b_warm >= 80,
            "{} frames to B",
            b.received - b_warm
        );
        assert!(a_warm > a_before && b_warm > b_before);
        assert_eq!(
            transcoded, 0,
            "{transcoded} allocations transcoding 200 packets"
        );
        relay.stop().await;
    });
}
