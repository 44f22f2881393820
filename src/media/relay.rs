//! The media bridge between a call's two legs.
//!
//! Each leg has an RTP and an RTCP socket from the [`PortAllocator`](super::PortAllocator).
//! One task per call moves the packets of all four sockets: what arrives on leg A's RTP
//! socket from A's phone leaves by leg B's RTP socket towards B's phone, and so on. One
//! task rather than one per socket, because starting, waking and stopping tasks cost
//! more per call than the relaying itself. The relay path is recv, check the source,
//! renumber the payload type if the legs differ, rewrite the stream, send: a 2048-byte
//! buffer owned by the task, no allocation, no locks held across an await, no logging.
//! Counters are atomics anyone can read. A direction whose legs have different codecs
//! goes through a [`Transcoder`] instead, driven by a 20 ms clock in the same task.

use super::latch::Latch;
use super::plan::{DirectionPlan, PayloadMap};
use super::ports::RtpPortPair;
use super::rtp::{ReceiveStats, StreamRewriter};
use super::transcode::{FRAME, Transcoder};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::ReadBuf;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// Large enough for any RTP or RTCP packet on an Ethernet path.
const BUFFER_LEN: usize = 2048;

/// One of a call's two legs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

impl Side {
    fn index(self) -> usize {
        match self {
            Side::A => 0,
            Side::B => 1,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct RelayConfig {
    /// How long after start and after each [`Relay::set_remote`] a leg may latch to a
    /// new source address (see [`super::latch`]).
    pub latch_window: Duration,
}

impl Default for RelayConfig {
    fn default() -> RelayConfig {
        RelayConfig {
            latch_window: Duration::from_secs(5),
        }
    }
}

/// What happens to the RTP of one direction between the leg it came from and the leg
/// it goes to (see [`super::plan`]).
enum Mode {
    /// Relayed, payload types renumbered where the legs differ.
    Relay(PayloadMap),
    /// Decoded and encoded again on the media clock.
    Transcode(Box<Transcoder>),
}

/// A new mode for a direction, handed from the B2BUA to the relay task.
#[derive(Default)]
struct PendingMode {
    /// The mode and the RTP clock of what arrives.
    mode: Mutex<Option<(Mode, u32)>>,
    /// Bumped with each new mode, so the task notices one with a single atomic read.
    version: AtomicU64,
}

/// A snapshot of one leg's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LegStats {
    /// Received from the leg's phone and accepted.
    pub rtp_packets: u64,
    pub rtp_bytes: u64,
    pub rtcp_packets: u64,
    pub rtcp_bytes: u64,
    /// Sent towards the leg's phone (RTP and RTCP).
    pub sent_packets: u64,
    /// Received from a source the latch refused.
    pub refused_packets: u64,
    /// RTP from the phone lost on the way, and the interarrival jitter (RFC 3550).
    pub lost_packets: u64,
    pub jitter: Duration,
    /// Where RTP and RTCP for the leg currently go.
    pub rtp_remote: Option<SocketAddr>,
    pub rtcp_remote: Option<SocketAddr>,
}

#[derive(Default)]
struct Counters {
    rtp_packets: AtomicU64,
    rtp_bytes: AtomicU64,
    rtcp_packets: AtomicU64,
    rtcp_bytes: AtomicU64,
    sent_packets: AtomicU64,
    refused_packets: AtomicU64,
    /// Nanoseconds from the relay's start to the last accepted RTP or RTCP packet.
    last_heard: AtomicU64,
    /// RTP packets lost on the way from the phone, and the interarrival jitter in
    /// microseconds (RFC 3550 A.3, A.8).
    lost: AtomicU64,
    jitter_micros: AtomicU64,
}

impl Counters {
    fn publish(&self, received: &ReceiveStats, clock: u32) {
        self.lost.store(received.lost(), Ordering::Relaxed);
        let micros = received.jitter() * 1_000_000 / u64::from(clock.max(1));
        self.jitter_micros.store(micros, Ordering::Relaxed);
    }
}

#[derive(Clone, Copy)]
enum Channel {
    Rtp,
    Rtcp,
}

struct Leg {
    ports: RtpPortPair,
    rtp_latch: Mutex<Latch>,
    rtcp_latch: Mutex<Latch>,
    counters: Counters,
    /// The mode of the direction from this leg's phone to the other's.
    pending: PendingMode,
    transcoding: AtomicBool,
}

impl Leg {
    fn new(ports: RtpPortPair, now: Instant, config: RelayConfig) -> Leg {
        Leg {
            ports,
            rtp_latch: Mutex::new(Latch::new(now, config.latch_window)),
            rtcp_latch: Mutex::new(Latch::new(now, config.latch_window)),
            counters: Counters::default(),
            pending: PendingMode::default(),
            transcoding: AtomicBool::new(false),
        }
    }

    fn socket(&self, channel: Channel) -> &UdpSocket {
        let sockets = self.ports.sockets();
        match channel {
            Channel::Rtp => &sockets.rtp,
            Channel::Rtcp => &sockets.rtcp,
        }
    }

    fn latch(&self, channel: Channel) -> MutexGuard<'_, Latch> {
        let latch = match channel {
            Channel::Rtp => &self.rtp_latch,
            Channel::Rtcp => &self.rtcp_latch,
        };
        // A latch is a few plain fields; one left by a panicking holder is still usable.
        latch.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn count_received(&self, channel: Channel, len: usize, since_start: Duration) {
        let c = &self.counters;
        let len = len as u64;
        match channel {
            Channel::Rtp => {
                c.rtp_packets.fetch_add(1, Ordering::Relaxed);
                c.rtp_bytes.fetch_add(len, Ordering::Relaxed);
            }
            Channel::Rtcp => {
                c.rtcp_packets.fetch_add(1, Ordering::Relaxed);
                c.rtcp_bytes.fetch_add(len, Ordering::Relaxed);
            }
        }
        // RTCP counts as a sign of life too: a muted phone with silence suppression may
        // send no RTP for a long time but keeps reporting.
        let nanos = u64::try_from(since_start.as_nanos()).unwrap_or(u64::MAX);
        c.last_heard.store(nanos, Ordering::Relaxed);
    }
}

/// A running bridge. Dropping it stops the task; the sockets and ports are released
/// as the runtime drops it, shortly after. [`Relay::stop`] waits for that.
pub struct Relay {
    legs: [Arc<Leg>; 2],
    started: Instant,
    task: JoinHandle<()>,
}

impl Relay {
    /// Starts relaying between two legs' ports. No remote address is known yet: call
    /// [`Relay::set_remote`] as each leg's SDP arrives. Must run inside a tokio runtime.
    pub fn start(a: RtpPortPair, b: RtpPortPair, config: RelayConfig) -> Relay {
        let started = Instant::now();
        let legs = [
            Arc::new(Leg::new(a, started, config)),
            Arc::new(Leg::new(b, started, config)),
        ];
        let task = tokio::spawn(relay(legs.clone(), started));
        Relay {
            legs,
            started,
            task,
        }
    }

    /// Sets where a leg's phone said (in SDP) it receives RTP and RTCP, `None` when it
    /// gave no usable address, and reopens latching for that leg. Call it for every
    /// SDP the leg sends (offer, answer, re-INVITE) and for both legs when the call is
    /// answered, so a phone that only starts sending then can still be latched.
    pub fn set_remote(&self, side: Side, rtp: Option<SocketAddr>, rtcp: Option<SocketAddr>) {
        let leg = &self.legs[side.index()];
        let now = Instant::now();
        leg.latch(Channel::Rtp).set_sdp(rtp, now);
        leg.latch(Channel::Rtcp).set_sdp(rtcp, now);
    }

    /// Sets how audio from `from`'s phone reaches the other leg: relayed (the default,
    /// payload types as they come) or transcoded. The relay task takes it up at its
    /// next packet; a transcoder's stream continues the one the leg was sent before.
    pub fn set_plan(&self, from: Side, plan: &DirectionPlan) {
        let mode = match plan {
            DirectionPlan::Relay { map, .. } => Mode::Relay(map.clone()),
            DirectionPlan::Transcode {
                from: formats,
                to,
                events,
            } => match Transcoder::new(formats, *to, *events, rand::random()) {
                Ok(t) => Mode::Transcode(Box::new(t)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot transcode; relaying as is");
                    Mode::Relay(PayloadMap::identity())
                }
            },
        };
        let leg = &self.legs[from.index()];
        leg.transcoding
            .store(matches!(mode, Mode::Transcode(_)), Ordering::Relaxed);
        *leg.pending
            .mode
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((mode, plan.clock()));
        leg.pending.version.fetch_add(1, Ordering::Release);
    }

    /// Whether audio from `from`'s phone is being transcoded.
    pub fn is_transcoding(&self, from: Side) -> bool {
        self.legs[from.index()].transcoding.load(Ordering::Relaxed)
    }

    /// The leg's local RTP port (RTCP is the next one), for its SDP.
    pub fn rtp_port(&self, side: Side) -> u16 {
        self.legs[side.index()].ports.rtp_port()
    }

    pub fn stats(&self, side: Side) -> LegStats {
        let leg = &self.legs[side.index()];
        let c = &leg.counters;
        LegStats {
            rtp_packets: c.rtp_packets.load(Ordering::Relaxed),
            rtp_bytes: c.rtp_bytes.load(Ordering::Relaxed),
            rtcp_packets: c.rtcp_packets.load(Ordering::Relaxed),
            rtcp_bytes: c.rtcp_bytes.load(Ordering::Relaxed),
            sent_packets: c.sent_packets.load(Ordering::Relaxed),
            refused_packets: c.refused_packets.load(Ordering::Relaxed),
            lost_packets: c.lost.load(Ordering::Relaxed),
            jitter: Duration::from_micros(c.jitter_micros.load(Ordering::Relaxed)),
            rtp_remote: leg.latch(Channel::Rtp).destination(),
            rtcp_remote: leg.latch(Channel::Rtcp).destination(),
        }
    }

    /// When the leg's phone last sent RTP or RTCP that was accepted; the relay's start
    /// if it never did. The B2BUA's media timeout compares it with the clock.
    pub fn last_heard(&self, side: Side) -> Instant {
        let nanos = self.legs[side.index()]
            .counters
            .last_heard
            .load(Ordering::Relaxed);
        self.started + Duration::from_nanos(nanos)
    }

    /// Stops the task and returns once the sockets are closed and the ports free.
    pub async fn stop(mut self) {
        self.task.abort();
        // Cancelled is the expected outcome; the relay never ends on its own.
        let _ = (&mut self.task).await;
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One direction of one channel: packets arriving on leg `from`'s socket leave by the
/// other leg's.
struct Path {
    from: usize,
    channel: Channel,
    /// RTP only: keeps the stream the other phone receives continuous.
    rewriter: Option<StreamRewriter>,
    mode: Mode,
    /// The [`PendingMode::version`] taken up last.
    version: u64,
    /// RTP only: loss and jitter of what arrives, and its clock rate.
    received: ReceiveStats,
    clock: u32,
}

impl Path {
    fn new(from: Side, channel: Channel) -> Path {
        Path {
            from: from.index(),
            channel,
            rewriter: matches!(channel, Channel::Rtp).then(StreamRewriter::new),
            mode: Mode::Relay(PayloadMap::identity()),
            version: 0,
            received: ReceiveStats::default(),
            clock: 8000,
        }
    }

    /// Takes up a new mode the B2BUA set for this direction, if any.
    fn refresh_mode(&mut self, legs: &[Arc<Leg>; 2]) {
        if self.rewriter.is_none() {
            return;
        }
        let pending = &legs[self.from].pending;
        let version = pending.version.load(Ordering::Acquire);
        if version == self.version {
            return;
        }
        self.version = version;
        if let Some((mode, clock)) = pending
            .mode
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            self.mode = mode;
            self.clock = clock;
        }
    }

    fn is_transcoding(&self) -> bool {
        matches!(self.mode, Mode::Transcode(_))
    }

    /// Relays what is waiting on the path's socket. Returns when the socket has nothing
    /// more, or when the task has used its share of the runtime (tokio's budget),
    /// having asked to be woken again either way.
    fn poll_relay(
        &mut self,
        cx: &mut Context<'_>,
        legs: &[Arc<Leg>; 2],
        buf: &mut [u8],
        started: Instant,
    ) {
        self.refresh_mode(legs);
        let (from, to) = (&legs[self.from], &legs[1 - self.from]);
        let socket = from.socket(self.channel);
        loop {
            let mut read = ReadBuf::new(buf);
            let source = match socket.poll_recv_from(cx, &mut read) {
                Poll::Pending => return,
                // Errors here are per datagram (e.g. an ICMP error reported on some systems).
                Poll::Ready(Err(_)) => continue,
                Poll::Ready(Ok(source)) => source,
            };
            let len = read.filled().len();
            let now = Instant::now();
            // A dual-stack socket reports IPv4 sources as mapped IPv6; SDP has them plain.
            let source = SocketAddr::new(source.ip().to_canonical(), source.port());
            if !from.latch(self.channel).accept(source, now) {
                from.counters
                    .refused_packets
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let since_start = now.saturating_duration_since(started);
            from.count_received(self.channel, len, since_start);
            let packet = &mut buf[..len];
            if self.rewriter.is_some()
                && let Some((header, _)) = super::rtp::parse(packet)
            {
                self.received.on_packet(&header, since_start, self.clock);
                from.counters.publish(&self.received, self.clock);
            }
            let Some(destination) = to.latch(self.channel).destination() else {
                continue;
            };
            let mut out = Outgoing {
                to,
                channel: self.channel,
                destination,
                rewriter: self.rewriter.as_mut(),
            };
            match &mut self.mode {
                Mode::Relay(map) => {
                    if super::rtp::is_rtp(packet) && !map.is_identity() {
                        let pt = map.get(packet[1] & 0x7f);
                        super::rtp::set_payload_type(packet, pt);
                    }
                    out.send(packet);
                }
                Mode::Transcode(transcoder) => {
                    transcoder.on_packet(now, packet, &mut |p| out.send_copy(p));
                }
            }
        }
    }

    /// The media clock of a transcoding path: sends the frames that are due.
    fn tick(&mut self, legs: &[Arc<Leg>; 2], now: Instant) {
        let Mode::Transcode(transcoder) = &mut self.mode else {
            return;
        };
        let to = &legs[1 - self.from];
        let Some(destination) = to.latch(self.channel).destination() else {
            // Nobody to send to yet: keep the clock going, drop the frames.
            transcoder.on_tick(now, &mut |_| {});
            return;
        };
        let mut out = Outgoing {
            to,
            channel: self.channel,
            destination,
            rewriter: self.rewriter.as_mut(),
        };
        transcoder.on_tick(now, &mut |p| out.send_copy(p));
    }
}

/// Where a path's packets go: the other leg's socket, towards its phone.
struct Outgoing<'a> {
    to: &'a Leg,
    channel: Channel,
    destination: SocketAddr,
    rewriter: Option<&'a mut StreamRewriter>,
}

impl Outgoing<'_> {
    fn send(&mut self, packet: &mut [u8]) {
        if let Some(rewriter) = self.rewriter.as_deref_mut() {
            rewriter.rewrite(packet);
        }
        // Sent directly rather than through the runtime, which may not know yet that
        // a new socket is writable. A full send buffer drops the packet, as the
        // network would.
        if socket2::SockRef::from(self.to.socket(self.channel))
            .send_to(packet, &self.destination.into())
            .is_ok()
        {
            self.to
                .counters
                .sent_packets
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sends a packet made by a transcoder (copied to be rewritten on the stack).
    fn send_copy(&mut self, packet: &[u8]) {
        let mut copy = [0u8; BUFFER_LEN];
        let len = packet.len().min(BUFFER_LEN);
        copy[..len].copy_from_slice(&packet[..len]);
        self.send(&mut copy[..len]);
    }
}

/// Moves the packets of both legs' four sockets until aborted, and runs the media
/// clock while a direction transcodes.
async fn relay(legs: [Arc<Leg>; 2], started: Instant) {
    let mut buf = [0u8; BUFFER_LEN];
    let mut paths = [
        Path::new(Side::A, Channel::Rtp),
        Path::new(Side::A, Channel::Rtcp),
        Path::new(Side::B, Channel::Rtp),
        Path::new(Side::B, Channel::Rtcp),
    ];
    let mut clock: Option<tokio::time::Interval> = None;
    // Each wake-up starts at the next path, so a flood on one socket, which ends a
    // wake-up by using up the task's budget, cannot starve the others.
    let mut first = 0;
    std::future::poll_fn(|cx| {
        for i in 0..paths.len() {
            paths[(first + i) % paths.len()].poll_relay(cx, &legs, &mut buf, started);
        }
        first = (first + 1) % paths.len();
        if paths.iter().any(Path::is_transcoding) {
            let clock = clock.get_or_insert_with(|| {
                let mut clock = tokio::time::interval(FRAME);
                clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                clock
            });
            while clock.poll_tick(cx).is_ready() {
                let now = Instant::now();
                for path in &mut paths {
                    path.tick(&legs, now);
                }
            }
        } else {
            clock = None;
        }
        Poll::<()>::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::super::ports::{PortAllocator, PortRange};
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn allocator(range: &str) -> PortAllocator {
        PortAllocator::new(LOOPBACK, range.parse::<PortRange>().unwrap())
    }

    fn start(ports: &PortAllocator) -> Relay {
        Relay::start(
            ports.allocate().unwrap(),
            ports.allocate().unwrap(),
            RelayConfig::default(),
        )
    }

    async fn phone() -> UdpSocket {
        UdpSocket::bind((LOOPBACK, 0)).await.unwrap()
    }

    fn addr(socket: &UdpSocket) -> SocketAddr {
        socket.local_addr().unwrap()
    }

    fn rtp_addr(relay: &Relay, side: Side) -> SocketAddr {
        SocketAddr::new(LOOPBACK, relay.rtp_port(side))
    }

    fn rtcp_addr(relay: &Relay, side: Side) -> SocketAddr {
        SocketAddr::new(LOOPBACK, relay.rtp_port(side) + 1)
    }

    fn rtp(seq: u16, timestamp: u32, ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x80, 0x00];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&timestamp.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&[0xd5; 160]);
        p
    }

    async fn recv(socket: &UdpSocket) -> (Vec<u8>, SocketAddr) {
        let mut buf = [0u8; 2048];
        let (len, from) = socket.recv_from(&mut buf).await.unwrap();
        (buf[..len].to_vec(), from)
    }

    /// Waits for the relay to have done something observable in its counters.
    async fn until(condition: impl Fn() -> bool) {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test]
    async fn relays_rtp_and_rtcp_both_ways() {
        let ports = allocator("32000-32019");
        let relay = start(&ports);
        let (a_rtp, a_rtcp, b_rtp, b_rtcp) =
            (phone().await, phone().await, phone().await, phone().await);
        relay.set_remote(Side::A, Some(addr(&a_rtp)), Some(addr(&a_rtcp)));
        relay.set_remote(Side::B, Some(addr(&b_rtp)), Some(addr(&b_rtcp)));

        let from_a = rtp(1, 0, 0xA);
        a_rtp
            .send_to(&from_a, rtp_addr(&relay, Side::A))
            .await
            .unwrap();
        assert_eq!(
            recv(&b_rtp).await,
            (from_a.clone(), rtp_addr(&relay, Side::B))
        );
        let from_b = rtp(7, 800, 0xB);
        b_rtp
            .send_to(&from_b, rtp_addr(&relay, Side::B))
            .await
            .unwrap();
        assert_eq!(recv(&a_rtp).await, (from_b, rtp_addr(&relay, Side::A)));

        let sender_report = [0x80, 200, 0, 1, 0, 0, 0, 0xA];
        a_rtcp
            .send_to(&sender_report, rtcp_addr(&relay, Side::A))
            .await
            .unwrap();
        assert_eq!(
            recv(&b_rtcp).await,
            (sender_report.to_vec(), rtcp_addr(&relay, Side::B))
        );

        let a = relay.stats(Side::A);
        assert_eq!(
            (a.rtp_packets, a.rtp_bytes, a.rtcp_packets, a.rtcp_bytes),
            (1, 172, 1, 8)
        );
        assert_eq!((a.sent_packets, a.refused_packets), (1, 0));
        assert_eq!(relay.stats(Side::B).sent_packets, 2);
        assert_eq!(ports.in_use(), 2);
        relay.stop().await;
        assert_eq!(ports.in_use(), 0);
    }

    #[tokio::test]
    async fn latches_to_where_media_really_comes_from() {
        let ports = allocator("32020-32039");
        let relay = start(&ports);
        // The SDP names an address the phone doesn't send from (it is behind NAT).
        let (sdp_address, a, b, intruder) =
            (phone().await, phone().await, phone().await, phone().await);
        relay.set_remote(Side::A, Some(addr(&sdp_address)), None);
        relay.set_remote(Side::B, Some(addr(&b)), None);
        assert_eq!(relay.stats(Side::A).rtp_remote, Some(addr(&sdp_address)));

        a.send_to(&rtp(1, 0, 0xA), rtp_addr(&relay, Side::A))
            .await
            .unwrap();
        assert_eq!(recv(&b).await.0, rtp(1, 0, 0xA));
        assert_eq!(relay.stats(Side::A).rtp_remote, Some(addr(&a)));
        b.send_to(&rtp(1, 0, 0xB), rtp_addr(&relay, Side::B))
            .await
            .unwrap();
        assert_eq!(recv(&a).await.0, rtp(1, 0, 0xB));

        // Another source can't take the latched leg over.
        intruder
            .send_to(&rtp(99, 0, 0xE), rtp_addr(&relay, Side::A))
            .await
            .unwrap();
        until(|| relay.stats(Side::A).refused_packets == 1).await;
        a.send_to(&rtp(2, 160, 0xA), rtp_addr(&relay, Side::A))
            .await
            .unwrap();
        assert_eq!(recv(&b).await.0, rtp(2, 160, 0xA));
        assert_eq!(relay.stats(Side::A).rtp_remote, Some(addr(&a)));
        relay.stop().await;
    }

    #[tokio::test]
    async fn stream_stays_continuous_when_the_source_behind_a_leg_changes() {
        let ports = allocator("32040-32059");
        let relay = start(&ports);
        let (first, second, b) = (phone().await, phone().await, phone().await);
        relay.set_remote(Side::A, Some(addr(&first)), None);
        relay.set_remote(Side::B, Some(addr(&b)), None);
        for i in 0..3u16 {
            first
                .send_to(
                    &rtp(10 + i, 160 * u32::from(i), 0xA),
                    rtp_addr(&relay, Side::A),
                )
                .await
                .unwrap();
            assert_eq!(recv(&b).await.0, rtp(10 + i, 160 * u32::from(i), 0xA));
        }
        // A re-INVITE puts another phone behind leg A.
        relay.set_remote(Side::A, Some(addr(&second)), None);
        second
            .send_to(&rtp(5000, 99_999, 0xC), rtp_addr(&relay, Side::A))
            .await
            .unwrap();
        let mut expected = rtp(13, 480, 0xA);
        expected[1] |= 0x80;
        assert_eq!(recv(&b).await.0, expected);
        second
            .send_to(&rtp(5001, 100_159, 0xC), rtp_addr(&relay, Side::A))
            .await
            .unwrap();
        assert_eq!(recv(&b).await.0, rtp(14, 640, 0xA));
        // And leg A's media now goes to the new phone.
        b.send_to(&rtp(1, 0, 0xB), rtp_addr(&relay, Side::B))
            .await
            .unwrap();
        assert_eq!(recv(&second).await.0, rtp(1, 0, 0xB));
        relay.stop().await;
    }

    #[tokio::test]
    async fn last_heard_follows_rtp_and_rtcp_of_each_leg() {
        let ports = allocator("32060-32079");
        let relay = start(&ports);
        let (a, b) = (phone().await, phone().await);
        relay.set_remote(Side::A, Some(addr(&a)), Some(addr(&a)));
        relay.set_remote(Side::B, Some(addr(&b)), Some(addr(&b)));
        let started = relay.last_heard(Side::A);
        assert_eq!(relay.last_heard(Side::B), started, "nothing heard yet");
        a.send_to(&rtp(1, 0, 0xA), rtp_addr(&relay, Side::A))
            .await
            .unwrap();
        recv(&b).await;
        let after_rtp = relay.last_heard(Side::A);
        assert!(after_rtp > started);
        assert_eq!(relay.last_heard(Side::B), started, "B is still silent");
        // An RTCP report from B is a sign of life as well.
        b.send_to(&[0x80, 200, 0, 1, 0, 0, 0, 0xB], rtcp_addr(&relay, Side::B))
            .await
            .unwrap();
        recv(&a).await;
        assert!(relay.last_heard(Side::B) > started);
        assert_eq!(relay.last_heard(Side::A), after_rtp);
        relay.stop().await;
    }

    #[tokio::test]
    async fn a_thousand_relays_leave_no_port_reserved() {
        let ports = allocator("32100-32139");
        for _ in 0..1000 {
            start(&ports).stop().await;
        }
        assert_eq!(ports.in_use(), 0);
        // Dropping without stop releases them too, once the runtime drops the tasks.
        drop(start(&ports));
        until(|| ports.in_use() == 0).await;
    }
}
