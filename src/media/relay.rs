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
//!
//! The same task is where switchboard speaks and listens: a [`Speaker`] towards a leg
//! (prompts, tones, hold music) mutes the other leg's audio to it while it plays; a
//! [`Listener`] on a leg turns its key presses into [`MediaEvent`]s and feeds a
//! [`Recording`]. A call answered by the dialplan alone has only leg A; leg B joins
//! when a callee answers ([`Relay::attach`]).

use super::dtmf::EventSender;
use super::latch::Latch;
use super::listener::Listener;
use super::plan::{DirectionPlan, EventFormat, PayloadMap};
use super::ports::RtpPortPair;
use super::recording::{Outcome, Recording, Stopped};
use super::rtp::{ReceiveStats, StreamRewriter};
use super::speaker::Voice;
use super::transcode::{FRAME, Transcoder};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::io::ReadBuf;
use tokio::net::UdpSocket;
use tokio::sync::oneshot;
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

/// Something the media task reports to the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MediaEvent {
    pub side: Side,
    /// A key pressed on that leg's phone.
    pub digit: char,
}

/// Where a relay reports [`MediaEvent`]s (called on the media task: must not block).
pub type MediaEvents = Arc<dyn Fn(MediaEvent) + Send + Sync>;

/// How a recording ended, once its file is complete.
pub type RecordingDone = oneshot::Sender<std::io::Result<Outcome>>;

/// An instruction from the B2BUA to the relay task.
enum Command {
    Mode {
        from: Side,
        mode: Mode,
        clock: u32,
    },
    /// Starts (or with `None` stops) what switchboard says to a leg; `done` hears
    /// true when it played to the end, false when it was stopped.
    Speak {
        to: Side,
        speaker: Option<Box<dyn Voice>>,
        done: Option<oneshot::Sender<bool>>,
    },
    Listen {
        side: Side,
        listener: Box<Listener>,
    },
    Record {
        recording: Box<Recording>,
        done: RecordingDone,
    },
    StopRecording,
    /// Sends a key press to leg `to` as RFC 4733 events.
    Key {
        to: Side,
        key: Box<KeySender>,
    },
}

/// What the B2BUA and the relay task share.
struct Shared {
    a: Arc<Leg>,
    b: OnceLock<Arc<Leg>>,
    commands: Mutex<Vec<Command>>,
    /// Bumped with each command, so the task notices them with one atomic read.
    version: AtomicU64,
    /// Wakes the task for a command when no packet would.
    waker: Mutex<Option<Waker>>,
    transcoding: [AtomicBool; 2],
}

impl Shared {
    fn leg(&self, side: Side) -> Option<&Arc<Leg>> {
        match side {
            Side::A => Some(&self.a),
            Side::B => self.b.get(),
        }
    }

    fn send(&self, command: Command) {
        self.commands
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(command);
        self.version.fetch_add(1, Ordering::Release);
        if let Some(waker) = self
            .waker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            waker.wake_by_ref();
        }
    }
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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Channel {
    Rtp,
    Rtcp,
}

struct Leg {
    ports: RtpPortPair,
    rtp_latch: Mutex<Latch>,
    rtcp_latch: Mutex<Latch>,
    counters: Counters,
}

impl Leg {
    fn new(ports: RtpPortPair, now: Instant, config: RelayConfig) -> Leg {
        Leg {
            ports,
            rtp_latch: Mutex::new(Latch::new(now, config.latch_window)),
            rtcp_latch: Mutex::new(Latch::new(now, config.latch_window)),
            counters: Counters::default(),
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

    fn stats(&self) -> LegStats {
        let c = &self.counters;
        LegStats {
            rtp_packets: c.rtp_packets.load(Ordering::Relaxed),
            rtp_bytes: c.rtp_bytes.load(Ordering::Relaxed),
            rtcp_packets: c.rtcp_packets.load(Ordering::Relaxed),
            rtcp_bytes: c.rtcp_bytes.load(Ordering::Relaxed),
            sent_packets: c.sent_packets.load(Ordering::Relaxed),
            refused_packets: c.refused_packets.load(Ordering::Relaxed),
            lost_packets: c.lost.load(Ordering::Relaxed),
            jitter: Duration::from_micros(c.jitter_micros.load(Ordering::Relaxed)),
            rtp_remote: self.latch(Channel::Rtp).destination(),
            rtcp_remote: self.latch(Channel::Rtcp).destination(),
        }
    }
}

/// A running media task. Dropping it stops the task; the sockets and ports are
/// released as the runtime drops it, shortly after. [`Relay::stop`] waits for that.
pub struct Relay {
    shared: Arc<Shared>,
    started: Instant,
    config: RelayConfig,
    task: JoinHandle<()>,
}

impl Relay {
    /// Starts the media of a call with leg A's ports, and leg B's when it has one.
    /// No remote address is known yet: call [`Relay::set_remote`] as each leg's SDP
    /// arrives. Key presses go to `events`. Must run inside a tokio runtime.
    pub fn start(
        a: RtpPortPair,
        b: Option<RtpPortPair>,
        config: RelayConfig,
        events: Option<MediaEvents>,
    ) -> Relay {
        let started = Instant::now();
        let shared = Arc::new(Shared {
            a: Arc::new(Leg::new(a, started, config)),
            b: OnceLock::new(),
            commands: Mutex::new(Vec::new()),
            version: AtomicU64::new(0),
            waker: Mutex::new(None),
            transcoding: [AtomicBool::new(false), AtomicBool::new(false)],
        });
        let relay = Relay {
            task: tokio::spawn(run(shared.clone(), started, events)),
            shared,
            started,
            config,
        };
        if let Some(b) = b {
            relay.attach(b);
        }
        relay
    }

    /// Gives leg B its ports (once; later calls are ignored).
    pub fn attach(&self, b: RtpPortPair) {
        let leg = Arc::new(Leg::new(b, Instant::now(), self.config));
        if self.shared.b.set(leg).is_ok()
            && let Some(waker) = self
                .shared
                .waker
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
        {
            waker.wake_by_ref();
        }
    }

    /// Whether leg B has joined.
    pub fn has(&self, side: Side) -> bool {
        self.shared.leg(side).is_some()
    }

    /// Sets where a leg's phone said (in SDP) it receives RTP and RTCP, `None` when it
    /// gave no usable address, and reopens latching for that leg. Call it for every
    /// SDP the leg sends (offer, answer, re-INVITE) and for both legs when the call is
    /// answered, so a phone that only starts sending then can still be latched.
    pub fn set_remote(&self, side: Side, rtp: Option<SocketAddr>, rtcp: Option<SocketAddr>) {
        let Some(leg) = self.shared.leg(side) else {
            return;
        };
        let now = Instant::now();
        leg.latch(Channel::Rtp).set_sdp(rtp, now);
        leg.latch(Channel::Rtcp).set_sdp(rtcp, now);
    }

    /// Sets how audio from `from`'s phone reaches the other leg: relayed (the default,
    /// payload types as they come) or transcoded. A transcoder's stream continues the
    /// one the leg was sent before.
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
        self.shared.transcoding[from.index()]
            .store(matches!(mode, Mode::Transcode(_)), Ordering::Relaxed);
        self.shared.send(Command::Mode {
            from,
            mode,
            clock: plan.clock(),
        });
    }

    /// Whether audio from `from`'s phone is being transcoded.
    pub fn is_transcoding(&self, from: Side) -> bool {
        self.shared.transcoding[from.index()].load(Ordering::Relaxed)
    }

    /// Plays `speaker` to leg `to` instead of what the other leg says, replacing what
    /// played before (whose `done` then hears false). `done` hears true at the end.
    pub fn speak(
        &self,
        to: Side,
        speaker: impl Voice + 'static,
        done: Option<oneshot::Sender<bool>>,
    ) {
        self.shared.send(Command::Speak {
            to,
            speaker: Some(Box::new(speaker)),
            done,
        });
    }

    /// Stops what switchboard says to leg `to`; the other leg is heard again.
    pub fn stop_speaking(&self, to: Side) {
        self.shared.send(Command::Speak {
            to,
            speaker: None,
            done: None,
        });
    }

    /// Listens to leg `side` for key presses (and audio to record).
    pub fn listen(&self, side: Side, listener: Listener) {
        self.shared.send(Command::Listen {
            side,
            listener: Box::new(listener),
        });
    }

    /// Starts a recording (replacing one in progress, which ends as asked to).
    pub fn record(&self, recording: Recording, done: RecordingDone) {
        self.shared.send(Command::Record {
            recording: Box::new(recording),
            done,
        });
    }

    pub fn stop_recording(&self) {
        self.shared.send(Command::StopRecording);
    }

    /// Presses `digit` for `duration` towards leg `to`, which takes RFC 4733 events as
    /// `events` (a key that came by SIP INFO). The other leg's audio to it pauses
    /// meanwhile, so the events and the audio do not interleave in its stream.
    pub fn press(&self, to: Side, digit: char, duration: Duration, events: EventFormat) {
        let millis = u32::try_from(duration.as_millis()).unwrap_or(u32::MAX);
        let Some(sender) = EventSender::new(digit, millis, events.clock, 20) else {
            return;
        };
        self.shared.send(Command::Key {
            to,
            key: Box::new(KeySender {
                sender,
                payload_type: events.send,
                ssrc: rand::random(),
                timestamp: rand::random(),
                seq: 0,
            }),
        });
    }

    /// The leg's local RTP port (RTCP is the next one), for its SDP; 0 without it.
    pub fn rtp_port(&self, side: Side) -> u16 {
        self.shared.leg(side).map_or(0, |l| l.ports.rtp_port())
    }

    pub fn stats(&self, side: Side) -> LegStats {
        self.shared.leg(side).map(|l| l.stats()).unwrap_or_default()
    }

    /// When the leg's phone last sent RTP or RTCP that was accepted; the relay's start
    /// if it never did. The B2BUA's media timeout compares it with the clock.
    pub fn last_heard(&self, side: Side) -> Instant {
        let nanos = self
            .shared
            .leg(side)
            .map_or(0, |l| l.counters.last_heard.load(Ordering::Relaxed));
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
    channel: Channel,
    /// RTP only: keeps the stream the other phone receives continuous.
    rewriter: Option<StreamRewriter>,
    mode: Mode,
    /// RTP only: loss and jitter of what arrives, and its clock rate.
    received: ReceiveStats,
    clock: u32,
}

impl Path {
    fn new(channel: Channel) -> Path {
        Path {
            channel,
            rewriter: matches!(channel, Channel::Rtp).then(StreamRewriter::new),
            mode: Mode::Relay(PayloadMap::identity()),
            received: ReceiveStats::default(),
            clock: 8000,
        }
    }

    fn is_transcoding(&self) -> bool {
        matches!(self.mode, Mode::Transcode(_))
    }
}

/// Where packets for a leg go: its socket, towards its phone.
struct Outgoing<'a> {
    to: &'a Leg,
    channel: Channel,
    destination: SocketAddr,
    rewriter: Option<&'a mut StreamRewriter>,
}

impl Outgoing<'_> {
    /// Where RTP for `to` goes now, if anywhere.
    fn rtp<'a>(to: &'a Leg, rewriter: &'a mut Option<StreamRewriter>) -> Option<Outgoing<'a>> {
        let destination = to.latch(Channel::Rtp).destination()?;
        Some(Outgoing {
            to,
            channel: Channel::Rtp,
            destination,
            rewriter: rewriter.as_mut(),
        })
    }

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

    /// Sends a packet made here (copied to be rewritten on the stack).
    fn send_copy(&mut self, packet: &[u8]) {
        let mut copy = [0u8; BUFFER_LEN];
        let len = packet.len().min(BUFFER_LEN);
        copy[..len].copy_from_slice(&packet[..len]);
        self.send(&mut copy[..len]);
    }
}

/// A key press being sent to a leg as RFC 4733 events, one packet per clock tick.
struct KeySender {
    sender: EventSender,
    payload_type: u8,
    ssrc: u32,
    /// Every packet of one event carries its start's timestamp (RFC 4733 §2.5.1.2).
    timestamp: u32,
    seq: u16,
}

impl KeySender {
    /// The next packet into `out`, its length; `None` once the press is over.
    fn next(&mut self, out: &mut [u8]) -> Option<usize> {
        let (event, first) = self.sender.next_packet()?;
        let header = super::rtp::Header {
            payload_type: self.payload_type,
            marker: first,
            seq: self.seq,
            timestamp: self.timestamp,
            ssrc: self.ssrc,
        };
        self.seq = self.seq.wrapping_add(1);
        let len = super::rtp::write_header(&header, out);
        out[len..len + 4].copy_from_slice(&event.write());
        Some(len + 4)
    }
}

/// What switchboard is saying to one leg.
struct Speaking {
    speaker: Box<dyn Voice>,
    done: Option<oneshot::Sender<bool>>,
}

impl Drop for Speaking {
    /// Stopped before its end (replaced, or the call is over).
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            let _ = done.send(false);
        }
    }
}

/// A recording and who waits for its end.
struct Recorded {
    recording: Option<Box<Recording>>,
    done: Option<RecordingDone>,
}

impl Recorded {
    fn finish(&mut self, stopped: Stopped) {
        if let (Some(recording), Some(done)) = (self.recording.take(), self.done.take()) {
            recording.finish(stopped, move |outcome| {
                let _ = done.send(outcome);
            });
        }
    }
}

impl Drop for Recorded {
    /// The call ended while recording: the file is finished all the same.
    fn drop(&mut self) {
        self.finish(Stopped::Hangup);
    }
}

/// The media task's own state.
struct Task {
    shared: Arc<Shared>,
    started: Instant,
    events: Option<MediaEvents>,
    version: u64,
    /// RTP and RTCP from A, then from B.
    paths: [Path; 4],
    /// Indexed by the leg spoken to or listened to.
    speaking: [Option<Speaking>; 2],
    /// Key presses being sent, by the leg they go to.
    keys: [Option<Box<KeySender>>; 2],
    listeners: [Option<Box<Listener>>; 2],
    recording: Option<Recorded>,
    clock: Option<tokio::time::Interval>,
}

impl Task {
    fn take_commands(&mut self) {
        let version = self.shared.version.load(Ordering::Acquire);
        if version == self.version {
            return;
        }
        self.version = version;
        let commands = std::mem::take(
            &mut *self
                .shared
                .commands
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for command in commands {
            match command {
                Command::Mode { from, mode, clock } => {
                    let path = &mut self.paths[2 * from.index()];
                    path.mode = mode;
                    path.clock = clock;
                }
                Command::Speak { to, speaker, done } => {
                    self.speaking[to.index()] = speaker.map(|speaker| Speaking { speaker, done });
                }
                Command::Listen { side, listener } => {
                    self.listeners[side.index()] = Some(listener);
                }
                Command::Record { recording, done } => {
                    if let Some(mut old) = self.recording.take() {
                        old.finish(Stopped::Asked);
                    }
                    self.recording = Some(Recorded {
                        recording: Some(recording),
                        done: Some(done),
                    });
                }
                Command::StopRecording => {
                    if let Some(mut old) = self.recording.take() {
                        old.finish(Stopped::Asked);
                    }
                }
                Command::Key { to, key } => self.keys[to.index()] = Some(key),
            }
        }
    }

    fn needs_clock(&self) -> bool {
        self.paths.iter().any(Path::is_transcoding)
            || self.speaking.iter().any(Option::is_some)
            || self.keys.iter().any(Option::is_some)
            || self
                .recording
                .as_ref()
                .and_then(|r| r.recording.as_ref())
                .is_some_and(|r| r.needs_clock())
    }

    /// Handles what is waiting on path `i`'s socket. Returns when the socket has
    /// nothing more, or when the task has used its share of the runtime (tokio's
    /// budget), having asked to be woken again either way.
    fn poll_path(&mut self, i: usize, cx: &mut Context<'_>, buf: &mut [u8]) {
        let shared = self.shared.clone();
        let from_side = if i < 2 { Side::A } else { Side::B };
        let Some(from) = shared.leg(from_side) else {
            return;
        };
        let to = shared.leg(other(from_side));
        let path = &mut self.paths[i];
        let socket = from.socket(path.channel);
        let listener = &mut self.listeners[from_side.index()];
        let to_index = other(from_side).index();
        let muted = self.speaking[to_index].is_some() || self.keys[to_index].is_some();
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
            if !from.latch(path.channel).accept(source, now) {
                from.counters
                    .refused_packets
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let since_start = now.saturating_duration_since(self.started);
            from.count_received(path.channel, len, since_start);
            let packet = &mut buf[..len];
            if path.channel == Channel::Rtp {
                if let Some((header, _)) = super::rtp::parse(packet) {
                    path.received.on_packet(&header, since_start, path.clock);
                    from.counters.publish(&path.received, path.clock);
                }
                if let Some(listener) = listener.as_mut() {
                    let recorded = &mut self.recording;
                    let decode = recorded.as_ref().is_some_and(|r| r.recording.is_some());
                    let mut stop = None;
                    let digit = listener.on_packet(packet, decode, &mut |pcm| {
                        if let Some(r) = recorded.as_mut().and_then(|r| r.recording.as_mut()) {
                            stop = stop.or(r.on_audio(from_side.index(), pcm));
                        }
                    });
                    if let (Some(stopped), Some(r)) = (stop, recorded.as_mut()) {
                        r.finish(stopped);
                    }
                    if let (Some(digit), Some(events)) = (digit, &self.events) {
                        events(MediaEvent {
                            side: from_side,
                            digit,
                        });
                    }
                }
            }
            let Some(to) = to else { continue };
            match &mut path.mode {
                Mode::Transcode(transcoder) if path.channel == Channel::Rtp => {
                    // Fed even while muted, so its buffer stays in step with the phone.
                    let out = Outgoing::rtp(to, &mut path.rewriter).filter(|_| !muted);
                    let mut out = out;
                    transcoder.on_packet(now, packet, &mut |p| {
                        if let Some(out) = out.as_mut() {
                            out.send_copy(p);
                        }
                    });
                }
                _ if muted && path.channel == Channel::Rtp => {}
                mode => {
                    if let Mode::Relay(map) = mode
                        && path.channel == Channel::Rtp
                        && super::rtp::is_rtp(packet)
                        && !map.is_identity()
                    {
                        let pt = map.get(packet[1] & 0x7f);
                        super::rtp::set_payload_type(packet, pt);
                    }
                    let Some(destination) = to.latch(path.channel).destination() else {
                        continue;
                    };
                    Outgoing {
                        to,
                        channel: path.channel,
                        destination,
                        rewriter: path.rewriter.as_mut(),
                    }
                    .send(packet);
                }
            }
        }
    }

    /// One tick of the media clock.
    fn tick(&mut self, now: Instant) {
        let shared = self.shared.clone();
        for side in [Side::A, Side::B] {
            let (Some(_), Some(to)) = (shared.leg(side), shared.leg(other(side))) else {
                continue;
            };
            let to_index = other(side).index();
            let muted = self.speaking[to_index].is_some() || self.keys[to_index].is_some();
            let path = &mut self.paths[2 * side.index()];
            if let Mode::Transcode(transcoder) = &mut path.mode {
                let mut out = Outgoing::rtp(to, &mut path.rewriter).filter(|_| !muted);
                transcoder.on_tick(now, &mut |p| {
                    if let Some(out) = out.as_mut() {
                        out.send_copy(p);
                    }
                });
            }
        }
        for side in [Side::A, Side::B] {
            let Some(to) = shared.leg(side) else { continue };
            let Some(speaking) = self.speaking[side.index()].as_mut() else {
                continue;
            };
            // Towards `side`, the stream is the one its RTP from the other leg has.
            let path = &mut self.paths[2 * other(side).index()];
            let mut out = Outgoing::rtp(to, &mut path.rewriter);
            let going = speaking.speaker.on_tick(&mut |p| {
                if let Some(out) = out.as_mut() {
                    out.send_copy(p);
                }
            });
            if !going
                && let Some(mut finished) = self.speaking[side.index()].take()
                && let Some(done) = finished.done.take()
            {
                let _ = done.send(true);
            }
        }
        for side in [Side::A, Side::B] {
            let (Some(to), Some(key)) = (shared.leg(side), self.keys[side.index()].as_mut()) else {
                continue;
            };
            let mut packet = [0u8; 32];
            match key.next(&mut packet) {
                Some(len) => {
                    let path = &mut self.paths[2 * other(side).index()];
                    if let Some(mut out) = Outgoing::rtp(to, &mut path.rewriter) {
                        out.send(&mut packet[..len]);
                    }
                }
                None => self.keys[side.index()] = None,
            }
        }
        if let Some(recording) = self.recording.as_mut().and_then(|r| r.recording.as_mut()) {
            recording.on_tick();
        }
    }
}

fn other(side: Side) -> Side {
    match side {
        Side::A => Side::B,
        Side::B => Side::A,
    }
}

/// Moves the packets of the legs' sockets until aborted, and runs the media clock
/// while anything needs it.
async fn run(shared: Arc<Shared>, started: Instant, events: Option<MediaEvents>) {
    let mut buf = [0u8; BUFFER_LEN];
    let mut task = Task {
        shared,
        started,
        events,
        version: 0,
        paths: [
            Path::new(Channel::Rtp),
            Path::new(Channel::Rtcp),
            Path::new(Channel::Rtp),
            Path::new(Channel::Rtcp),
        ],
        speaking: [None, None],
        keys: [None, None],
        listeners: [None, None],
        recording: None,
        clock: None,
    };
    // Each wake-up starts at the next path, so a flood on one socket, which ends a
    // wake-up by using up the task's budget, cannot starve the others.
    let mut first = 0;
    std::future::poll_fn(|cx| {
        {
            let mut waker = task
                .shared
                .waker
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *waker = Some(cx.waker().clone());
            }
        }
        task.take_commands();
        for i in 0..4 {
            task.poll_path((first + i) % 4, cx, &mut buf);
        }
        first = (first + 1) % 4;
        if task.needs_clock() {
            if task.clock.is_none() {
                let mut clock = tokio::time::interval(FRAME);
                clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                task.clock = Some(clock);
            }
            while task
                .clock
                .as_mut()
                .is_some_and(|c| c.poll_tick(cx).is_ready())
            {
                task.tick(Instant::now());
            }
        } else {
            task.clock = None;
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
            Some(ports.allocate().unwrap()),
            RelayConfig::default(),
            None,
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

    fn leg_formats(text: &str) -> crate::media::plan::LegFormats {
        let sdp = format!(
            "v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n{text}"
        );
        let sdp = crate::sdp::Sdp::parse(sdp.as_bytes()).unwrap();
        crate::media::plan::LegFormats::negotiated(&sdp, &sdp)
    }

    /// Payload type, sequence number and marker of a packet.
    fn fields(p: &[u8]) -> (u8, u16, bool) {
        (
            p[1] & 0x7f,
            u16::from_be_bytes([p[2], p[3]]),
            p[1] & 0x80 != 0,
        )
    }

    #[tokio::test]
    async fn a_direction_moves_between_transcoding_and_relaying_in_one_stream() {
        let ports = allocator("32140-32159");
        let relay = start(&ports);
        let (a, b) = (phone().await, phone().await);
        relay.set_remote(Side::A, Some(addr(&a)), None);
        relay.set_remote(Side::B, Some(addr(&b)), None);
        let pcmu = leg_formats("m=audio 4000 RTP/AVP 0\r\n");
        let pcma = leg_formats("m=audio 4000 RTP/AVP 8\r\n");
        relay.set_plan(Side::A, &DirectionPlan::between(&pcmu, &pcma).unwrap());
        assert!(relay.is_transcoding(Side::A));
        // Transcoded on the media clock: PCMA comes out.
        let mut seqs = Vec::new();
        for i in 0..10u16 {
            a.send_to(&rtp(i, 160 * u32::from(i), 0xA), rtp_addr(&relay, Side::A))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        while seqs.len() < 5 {
            let (p, _) = recv(&b).await;
            assert_eq!(fields(&p).0, 8, "PCMA towards B");
            seqs.push(fields(&p).1);
        }
        // Back to relaying: PCMU again, the numbering continuing.
        relay.set_plan(Side::A, &DirectionPlan::between(&pcmu, &pcmu).unwrap());
        assert!(!relay.is_transcoding(Side::A));
        let last = loop {
            a.send_to(&rtp(100, 16000, 0xA), rtp_addr(&relay, Side::A))
                .await
                .unwrap();
            let (p, _) = recv(&b).await;
            let (pt, seq, _) = fields(&p);
            if pt == 0 {
                break seq;
            }
            seqs.push(seq);
        };
        let previous = *seqs.last().unwrap();
        assert!(
            last.wrapping_sub(previous) < 20,
            "relayed packet {last} does not follow transcoded {previous}"
        );
        relay.stop().await;
    }

    #[tokio::test]
    async fn what_switchboard_says_mutes_the_other_leg_until_it_is_done() {
        use crate::media::plan::AudioFormat;
        use crate::media::speaker::{Item, Speaker};
        let ports = allocator("32160-32179");
        let relay = start(&ports);
        let (a, b) = (phone().await, phone().await);
        relay.set_remote(Side::A, Some(addr(&a)), None);
        relay.set_remote(Side::B, Some(addr(&b)), None);
        let format = AudioFormat {
            payload_type: 0,
            kind: crate::media::codec::CodecKind::Pcmu,
        };
        let speaker =
            Speaker::new(vec![Item::Silence(Duration::from_millis(100))], format, 0x5).unwrap();
        let (tx, done) = oneshot::channel();
        relay.speak(Side::B, speaker, Some(tx));
        // While it speaks, B hears only it: 5 frames of silence.
        a.send_to(&rtp(1, 0, 0xA), rtp_addr(&relay, Side::A))
            .await
            .unwrap();
        let mut spoken = 0;
        while spoken < 5 {
            let (p, _) = recv(&b).await;
            assert_eq!(&p[12..], &[0xff; 160][..], "silence, not A's packet");
            spoken += 1;
        }
        assert_eq!(done.await, Ok(true));
        // Then A is heard again.
        a.send_to(&rtp(2, 160, 0xA), rtp_addr(&relay, Side::A))
            .await
            .unwrap();
        let (p, _) = recv(&b).await;
        assert_eq!(&p[12..], &[0xd5; 160][..]);
        relay.stop().await;
    }

    #[tokio::test]
    async fn keys_are_reported_once_and_can_be_pressed_towards_a_leg() {
        use crate::media::dtmf::TelephoneEvent;
        use crate::media::listener::Listener;
        let ports = allocator("32180-32199");
        let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
        let sink: MediaEvents = Arc::new(move |e| {
            let _ = events_tx.send(e);
        });
        let relay = Relay::start(
            ports.allocate().unwrap(),
            Some(ports.allocate().unwrap()),
            RelayConfig::default(),
            Some(sink),
        );
        let (a, b) = (phone().await, phone().await);
        relay.set_remote(Side::A, Some(addr(&a)), None);
        relay.set_remote(Side::B, Some(addr(&b)), None);
        let te = leg_formats("m=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n");
        relay.listen(Side::A, Listener::new(&te, false).unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
        for (i, end) in [false, false, true, true, true].into_iter().enumerate() {
            let event = TelephoneEvent {
                event: 9,
                end,
                volume: 10,
                duration: 160 * (i as u16 + 1),
            };
            let mut p = rtp(i as u16, 8000, 0xA);
            p[1] = 101;
            p.truncate(12);
            p.extend_from_slice(&event.write());
            a.send_to(&p, rtp_addr(&relay, Side::A)).await.unwrap();
        }
        let first = events.recv().await.unwrap();
        assert_eq!(
            first,
            MediaEvent {
                side: Side::A,
                digit: '9'
            }
        );
        // Pressed towards B (a key that came by INFO): start, updates, three ends.
        let format = te.events.unwrap();
        relay.press(Side::B, '4', Duration::from_millis(100), format);
        let mut ends = 0;
        let mut first_packet = true;
        while ends < 3 {
            let (p, _) = recv(&b).await;
            if p[1] & 0x7f != 101 {
                continue; // A's event packets relayed before the press
            }
            let event = TelephoneEvent::parse(&p[12..]).unwrap();
            if event.event != 4 {
                continue;
            }
            assert_eq!(p[1] & 0x80 != 0, first_packet, "marker on the first only");
            first_packet = false;
            ends += usize::from(event.end);
        }
        assert!(events.try_recv().is_err(), "the key counted once");
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
