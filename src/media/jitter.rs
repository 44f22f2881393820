//! Jitter buffer for the decode paths (transcoding, recording, prompts mixed into a
//! call). Relayed packets never pass through it: the phones' own buffers handle those.
//!
//! Design choices:
//! - Packets play by sequence number, one per [`JitterBuffer::pop`]. The packet duration
//!   is learned from the timestamp step between consecutive packets (see
//!   [`JitterBuffer::frame`]); the caller pops once per packet duration, i.e. whenever it
//!   has used up the audio of the previous packet (every 20 ms for 20 ms packets, every
//!   40 ms for 40 ms packets).
//! - Timestamps still matter: a packet whose timestamp is ahead of where playout stands
//!   (the sender stopped sending during silence, RFC 3551 DTX) waits, and the pops in
//!   between return [`Playout::Empty`], so pauses keep their length.
//! - A fixed ring of [`SLOTS`] slots indexed by `seq % SLOTS`, with payloads stored inline,
//!   so nothing is allocated after [`JitterBuffer::new`].
//! - Depth control: the interarrival jitter `J` (RFC 3550 §6.4.1) gives the target delay
//!   `clamp(3 J + frame, min, max)`. The measured delay is the smoothed time packets wait
//!   between arrival and playout. Below target, playout stretches by one frame at a time
//!   (a concealed frame, or a longer pause during silence); a late packet raises the target
//!   by a frame at once. Above target, a frame is dropped from a pause straight away, or
//!   from speech only after the delay has stayed high for a second. The target itself
//!   decays slowly (time constant ~5 s), so growth is fast and shrinking slow.
//! - When the buffer runs dry, playout conceals up to [`MAX_CONCEALED`] frames in a row
//!   (without giving up on the missing packet, so a merely late packet still plays and the
//!   delay grows by what it waited); after that the stream counts as stopped and `pop`
//!   returns `Empty` until a packet arrives, which resynchronises (buffers afresh).
//!   A marker bit or a timestamp jump beyond `max_delay` on a packet that finds the
//!   buffer empty resynchronises too, as does [`JitterBuffer::reset`] (SSRC change).

use std::time::{Duration, Instant};

/// The largest payload stored; larger ones are dropped.
pub const MAX_PAYLOAD: usize = 1500;

/// Slots in the ring: 640 ms of 20 ms packets, more than any sensible `max_delay`.
/// A power of two so `seq % SLOTS` stays consistent across the 16-bit wrap.
pub const SLOTS: usize = 32;

/// Frames concealed in a row with nothing buffered before the stream counts as stopped
/// (100 ms of 20 ms frames): after that `pop` returns silence, not concealment.
pub const MAX_CONCEALED: u32 = 5;

/// Target delay in multiples of the interarrival jitter.
const JITTER_FACTOR: f64 = 3.0;
/// Per-pop decay of the target towards the jitter-derived value (time constant 256 pops).
const TARGET_DECAY: f64 = 1.0 / 256.0;
/// Smoothing gain of the measured playout delay.
const DELAY_GAIN: f64 = 1.0 / 16.0;
/// Pops the delay must stay above target before a frame of speech (not silence) is dropped.
const SHRINK_AFTER_POPS: u32 = 50;

/// Jitter buffer settings.
#[derive(Clone, Copy, Debug)]
pub struct JitterConfig {
    /// Packet duration assumed until the timestamp steps show the real one.
    pub frame: Duration,
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// RTP timestamp rate of the payload (8000 for G.711, 48000 for Opus...).
    pub clock_rate: u32,
}

impl Default for JitterConfig {
    fn default() -> Self {
        JitterConfig {
            frame: Duration::from_millis(20),
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
            clock_rate: 8000,
        }
    }
}

/// What to decode now.
#[derive(Debug, PartialEq, Eq)]
pub enum Playout<'a> {
    /// The next packet in order.
    Packet {
        seq: u16,
        timestamp: u32,
        payload: &'a [u8],
        marker: bool,
    },
    /// The expected packet is missing (or playout is stretching to grow its delay):
    /// conceal one frame. `next` is the following packet if it is already here (Opus FEC
    /// can rebuild the lost frame from it); it stays queued and plays at the next pop.
    Lost { next: Option<&'a [u8]> },
    /// Nothing to play: buffering, a pause in the sender's stream, or the stream has
    /// stopped (after [`MAX_CONCEALED`] concealed frames in a row). Play silence.
    Empty,
}

/// Counters and the current depth.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct JitterStats {
    /// Packets pushed, including the ones dropped below.
    pub received: u64,
    /// Packets returned by `pop`.
    pub played: u64,
    /// Frames concealed because their packet was missing.
    pub lost: u64,
    /// Packets dropped because they arrived after their playout time.
    pub late: u64,
    pub duplicate: u64,
    /// Packets dropped because they were too far ahead to fit in the ring.
    pub overflow: u64,
    /// Packets dropped because their payload exceeded [`MAX_PAYLOAD`].
    pub oversized: u64,
    /// Frames inserted (concealed or added to a pause) to grow the delay.
    pub stretched: u64,
    /// Frames dropped (from a pause or from speech) to shrink the delay.
    pub shrunk: u64,
    /// Times playout started afresh (first packet, restart after a stop, marker, reset).
    pub resyncs: u64,
    pub target_delay: Duration,
    /// Smoothed time packets waited between arrival and playout.
    pub delay: Duration,
    /// RFC 3550 interarrival jitter, in milliseconds.
    pub jitter_ms: f64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum SlotState {
    Free,
    /// Waiting to play; arrived at this instant.
    Filled(Instant),
    Played,
    /// Its playout time (this instant) passed without it: a later arrival is late,
    /// not a duplicate.
    Concealed(Instant),
}

#[derive(Clone)]
struct Slot {
    state: SlotState,
    seq: u16,
    timestamp: u32,
    marker: bool,
    len: usize,
    data: [u8; MAX_PAYLOAD],
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    /// No stream: nothing received yet, or the stream stopped.
    Idle,
    /// Holding packets until the first has waited the target delay.
    Buffering {
        since: Instant,
    },
    Playing,
}

/// What the depth control asks for at a pop.
#[derive(PartialEq)]
enum Adjust {
    Keep,
    Grow,
    Shrink,
}

pub struct JitterBuffer {
    clock_rate: f64,
    min_delay: f64,
    max_delay: f64,
    slots: Box<[Slot]>,
    phase: Phase,
    /// The sequence number the next pop plays.
    next_seq: u16,
    /// The newest sequence number stored since the last resync.
    highest: u16,
    /// Filled slots (all within `next_seq .. next_seq + SLOTS`).
    pending: usize,
    /// The RTP timestamp playout stands at: the next packet is due when its timestamp
    /// reaches it.
    expected_ts: u32,
    /// Learned packet duration in timestamp units, and the step seen last: the first step
    /// of a stream is adopted at once, a change only when seen twice in a row (so one
    /// pause doesn't count as a frame length).
    frame_ts: u32,
    step_candidate: Option<u32>,
    last_received: Option<(u16, u32)>,
    /// RFC 3550 jitter state: the time reference, and the previous packet's arrival
    /// (in timestamp units since `epoch`) and timestamp.
    epoch: Option<Instant>,
    transit: Option<(f64, u32)>,
    /// Interarrival jitter in timestamp units.
    jitter: f64,
    /// Target and smoothed measured delay, in seconds.
    target: f64,
    delay: Option<f64>,
    above_pops: u32,
    concealed_run: u32,
    stats: JitterStats,
}

impl JitterBuffer {
    pub fn new(config: JitterConfig) -> Self {
        let clock_rate = config.clock_rate.max(1);
        let frame_ts = ((config.frame.as_secs_f64() * f64::from(clock_rate)).round() as u32).max(1);
        let min_delay = config.min_delay.as_secs_f64();
        let max_delay = config.max_delay.as_secs_f64().max(min_delay);
        let empty = Slot {
            state: SlotState::Free,
            seq: 0,
            timestamp: 0,
            marker: false,
            len: 0,
            data: [0; MAX_PAYLOAD],
        };
        let mut buffer = JitterBuffer {
            clock_rate: f64::from(clock_rate),
            min_delay,
            max_delay,
            slots: vec![empty; SLOTS].into_boxed_slice(),
            phase: Phase::Idle,
            next_seq: 0,
            highest: 0,
            pending: 0,
            expected_ts: 0,
            frame_ts,
            step_candidate: None,
            last_received: None,
            epoch: None,
            transit: None,
            jitter: 0.0,
            target: 0.0,
            delay: None,
            above_pops: 0,
            concealed_run: 0,
            stats: JitterStats::default(),
        };
        buffer.target = buffer.desired_target();
        buffer
    }

    /// Forgets the stream (its source changed: a new SSRC): the next packet starts
    /// playout afresh. Counters and the target delay are kept.
    pub fn reset(&mut self) {
        self.clear();
        self.phase = Phase::Idle;
        self.last_received = None;
        self.step_candidate = None;
        self.transit = None;
    }

    /// The packet duration in use (learned from the timestamp steps).
    pub fn frame(&self) -> Duration {
        Duration::from_secs_f64(self.frame_secs())
    }

    pub fn stats(&self) -> JitterStats {
        JitterStats {
            target_delay: Duration::from_secs_f64(self.target),
            delay: Duration::from_secs_f64(self.delay.unwrap_or(0.0).max(0.0)),
            jitter_ms: self.jitter / self.clock_rate * 1000.0,
            ..self.stats
        }
    }

    /// A received RTP packet. Duplicates, late packets (their playout time has passed),
    /// packets too far ahead for the ring and oversized payloads are dropped and counted.
    pub fn push(&mut self, now: Instant, seq: u16, timestamp: u32, marker: bool, payload: &[u8]) {
        self.stats.received += 1;
        if payload.len() > MAX_PAYLOAD {
            self.stats.oversized += 1;
            return;
        }
        if self.phase == Phase::Idle {
            self.observe(now, seq, timestamp);
            self.resync(now, seq, timestamp, marker, payload);
            return;
        }
        let slot = &self.slots[slot_index(seq)];
        let duplicate =
            slot.seq == seq && matches!(slot.state, SlotState::Filled(_) | SlotState::Played);
        if duplicate {
            self.stats.duplicate += 1;
            return;
        }
        self.observe(now, seq, timestamp);
        let ahead = seq.wrapping_sub(self.next_seq) as i16;
        if ahead < 0 {
            let buffering = matches!(self.phase, Phase::Buffering { .. });
            if buffering && usize::from(self.highest.wrapping_sub(seq)) < SLOTS {
                // Reordered before playout began: it simply becomes the first.
                self.next_seq = seq;
                self.store(now, seq, timestamp, marker, payload);
            } else {
                self.stats.late += 1;
                // Only jitter-sized lateness says the buffer is too shallow; a packet
                // older than the whole ring is a stray or a sender's sequence jump.
                if usize::from(ahead.unsigned_abs()) <= SLOTS {
                    self.grow_for_late(now, seq);
                }
            }
            return;
        }
        if usize::from(ahead.unsigned_abs()) >= SLOTS {
            self.stats.overflow += 1;
            return;
        }
        if self.phase == Phase::Playing && self.pending == 0 {
            // Arriving to an empty buffer: a marker (new talkspurt) or a timestamp far
            // ahead means the pause or jump has already been waited out in real time.
            let jump = f64::from(timestamp.wrapping_sub(self.expected_ts) as i32) / self.clock_rate;
            if marker || jump > self.max_delay {
                self.resync(now, seq, timestamp, marker, payload);
                return;
            }
        }
        self.store(now, seq, timestamp, marker, payload);
    }

    /// Called once per packet duration by the media clock: what to decode now.
    pub fn pop(&mut self, now: Instant) -> Playout<'_> {
        self.update_target();
        match self.phase {
            Phase::Idle => return Playout::Empty,
            Phase::Buffering { since } => {
                if now.saturating_duration_since(since).as_secs_f64() < self.target {
                    return Playout::Empty;
                }
                self.phase = Phase::Playing;
                self.expected_ts = self.slots[slot_index(self.next_seq)].timestamp;
            }
            Phase::Playing => {}
        }
        if self.is_filled(self.next_seq) {
            return self.play_due(now);
        }
        let frame_ts = self.frame_ts;
        if self.pending > 0 {
            // Later packets are here, so this one is lost (or so late it no longer counts).
            let index = slot_index(self.next_seq);
            self.slots[index].seq = self.next_seq;
            self.slots[index].state = SlotState::Concealed(now);
            self.next_seq = self.next_seq.wrapping_add(1);
            self.expected_ts = self.expected_ts.wrapping_add(frame_ts);
            self.concealed_run = 0;
            self.stats.lost += 1;
            let next = self.is_filled(self.next_seq).then(|| {
                let slot = &self.slots[slot_index(self.next_seq)];
                &slot.data[..slot.len]
            });
            return Playout::Lost { next };
        }
        // Dry: conceal while keeping the missing packet's place, until the stream counts
        // as stopped.
        if self.concealed_run >= MAX_CONCEALED {
            self.phase = Phase::Idle;
            return Playout::Empty;
        }
        self.concealed_run += 1;
        self.expected_ts = self.expected_ts.wrapping_add(frame_ts);
        self.stats.lost += 1;
        Playout::Lost { next: None }
    }

    /// The next packet is here: play it, or wait for its timestamp (a pause), adjusting
    /// the depth on the way.
    fn play_due(&mut self, now: Instant) -> Playout<'_> {
        let frame = self.frame_secs();
        let frame_ts = self.frame_ts;
        self.concealed_run = 0;
        let timestamp = self.slots[slot_index(self.next_seq)].timestamp;
        let gap = timestamp.wrapping_sub(self.expected_ts) as i32;
        let pause = 2 * i64::from(gap) >= i64::from(frame_ts)
            && f64::from(gap) / self.clock_rate <= self.max_delay;
        let adjust = self.adjust();
        if pause {
            // The sender was silent: pauses are where the delay changes for free.
            match adjust {
                Adjust::Grow => self.stretch(frame),
                Adjust::Shrink => {
                    self.expected_ts = self.expected_ts.wrapping_add(2 * frame_ts);
                    self.shrink(frame);
                }
                Adjust::Keep => self.expected_ts = self.expected_ts.wrapping_add(frame_ts),
            }
            return Playout::Empty;
        }
        match adjust {
            Adjust::Grow => {
                self.stretch(frame);
                return Playout::Lost { next: None };
            }
            Adjust::Shrink
                if self.above_pops >= SHRINK_AFTER_POPS
                    && self.is_filled(self.next_seq.wrapping_add(1)) =>
            {
                let index = slot_index(self.next_seq);
                self.slots[index].state = SlotState::Played;
                self.pending -= 1;
                self.next_seq = self.next_seq.wrapping_add(1);
                self.shrink(frame);
            }
            _ => {}
        }
        let index = slot_index(self.next_seq);
        let slot = &mut self.slots[index];
        if let SlotState::Filled(arrival) = slot.state {
            let wait = now.saturating_duration_since(arrival).as_secs_f64();
            self.delay = Some(match self.delay {
                None => wait,
                Some(delay) => delay + (wait - delay) * DELAY_GAIN,
            });
        }
        slot.state = SlotState::Played;
        self.pending -= 1;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.expected_ts = slot.timestamp.wrapping_add(frame_ts);
        self.stats.played += 1;
        Playout::Packet {
            seq: slot.seq,
            timestamp: slot.timestamp,
            payload: &slot.data[..slot.len],
            marker: slot.marker,
        }
    }

    /// Raises the target at once so that this packet would have played: the delay it
    /// missed by, plus a frame.
    fn grow_for_late(&mut self, now: Instant, seq: u16) {
        let slot = &self.slots[slot_index(seq)];
        let missed_by = match slot.state {
            SlotState::Concealed(due) if slot.seq == seq => {
                now.saturating_duration_since(due).as_secs_f64()
            }
            _ => 0.0,
        };
        let delay = self.delay.unwrap_or(self.target);
        self.target = (self.target.max(delay + missed_by) + self.frame_secs()).min(self.max_delay);
    }

    /// Compares the measured delay with the target, with a dead band of 1.5 frames so a
    /// one-frame step never overshoots into the opposite correction.
    fn adjust(&mut self) -> Adjust {
        let Some(delay) = self.delay else {
            return Adjust::Keep;
        };
        let frame = self.frame_secs();
        if delay < self.target - frame / 2.0 {
            self.above_pops = 0;
            Adjust::Grow
        } else if delay > self.target + frame {
            self.above_pops += 1;
            Adjust::Shrink
        } else {
            self.above_pops = 0;
            Adjust::Keep
        }
    }

    /// Playout holds back one frame: every packet still queued or coming will wait one
    /// frame longer, so the measured delay is credited now rather than after the lag of
    /// its smoothing (which would stretch again and overshoot).
    fn stretch(&mut self, frame: f64) {
        self.stats.stretched += 1;
        self.delay = self.delay.map(|delay| delay + frame);
    }

    fn shrink(&mut self, frame: f64) {
        self.stats.shrunk += 1;
        self.above_pops = 0;
        self.delay = self.delay.map(|delay| delay - frame);
    }

    /// Moves the target towards `3 J + frame`: up at once, down slowly.
    fn update_target(&mut self) {
        let desired = self.desired_target();
        if desired > self.target {
            self.target = desired;
        } else {
            self.target -= (self.target - desired) * TARGET_DECAY;
        }
        self.target = self.target.clamp(self.min_delay, self.max_delay);
    }

    fn desired_target(&self) -> f64 {
        let jitter = self.jitter / self.clock_rate;
        (JITTER_FACTOR * jitter + self.frame_secs()).clamp(self.min_delay, self.max_delay)
    }

    fn frame_secs(&self) -> f64 {
        f64::from(self.frame_ts) / self.clock_rate
    }

    /// Updates the jitter estimate and the learned frame length from an arrival.
    fn observe(&mut self, now: Instant, seq: u16, timestamp: u32) {
        let epoch = *self.epoch.get_or_insert(now);
        let arrival = now.saturating_duration_since(epoch).as_secs_f64() * self.clock_rate;
        if let Some((previous_arrival, previous_ts)) = self.transit {
            let d = (arrival - previous_arrival)
                - f64::from(timestamp.wrapping_sub(previous_ts) as i32);
            // A difference over a second is a timestamp jump by the sender, not jitter.
            if d.abs() <= self.clock_rate {
                self.jitter += (d.abs() - self.jitter) / 16.0;
            }
        }
        self.transit = Some((arrival, timestamp));

        if let Some((previous_seq, previous_ts)) = self.last_received
            && seq == previous_seq.wrapping_add(1)
        {
            let step = timestamp.wrapping_sub(previous_ts);
            // Up to 250 ms; the same step twice, so one pause isn't taken for a frame.
            if step > 0 && f64::from(step) <= self.clock_rate / 4.0 {
                if self
                    .step_candidate
                    .is_none_or(|candidate| candidate == step)
                {
                    self.frame_ts = step;
                }
                self.step_candidate = Some(step);
            }
        }
        self.last_received = Some((seq, timestamp));
    }

    /// Drops whatever is queued and starts buffering afresh from this packet.
    fn resync(&mut self, now: Instant, seq: u16, timestamp: u32, marker: bool, payload: &[u8]) {
        self.clear();
        self.stats.resyncs += 1;
        self.phase = Phase::Buffering { since: now };
        self.next_seq = seq;
        self.highest = seq;
        self.store(now, seq, timestamp, marker, payload);
    }

    fn clear(&mut self) {
        for slot in self.slots.iter_mut() {
            slot.state = SlotState::Free;
        }
        self.pending = 0;
        self.delay = None;
        self.above_pops = 0;
        self.concealed_run = 0;
    }

    fn store(&mut self, now: Instant, seq: u16, timestamp: u32, marker: bool, payload: &[u8]) {
        let slot = &mut self.slots[slot_index(seq)];
        slot.state = SlotState::Filled(now);
        slot.seq = seq;
        slot.timestamp = timestamp;
        slot.marker = marker;
        slot.len = payload.len();
        slot.data[..payload.len()].copy_from_slice(payload);
        self.pending += 1;
        if (seq.wrapping_sub(self.highest) as i16) > 0 {
            self.highest = seq;
        }
    }

    fn is_filled(&self, seq: u16) -> bool {
        let slot = &self.slots[slot_index(seq)];
        slot.seq == seq && matches!(slot.state, SlotState::Filled(_))
    }
}

fn slot_index(seq: u16) -> usize {
    usize::from(seq) % SLOTS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn config(min_ms: u64) -> JitterConfig {
        JitterConfig {
            min_delay: ms(min_ms),
            ..JitterConfig::default()
        }
    }

    fn payload(seq: u16) -> [u8; 3] {
        let [a, b] = seq.to_be_bytes();
        [a, b, 0x55]
    }

    /// A pop's outcome without the borrow: packets and FEC candidates by sequence number.
    #[derive(Debug, PartialEq, Eq, Clone, Copy)]
    enum Out {
        P(u16),
        L(Option<u16>),
        E,
    }
    use Out::{E, L, P};

    fn pop(jb: &mut JitterBuffer, now: Instant) -> Out {
        match jb.pop(now) {
            Playout::Packet {
                seq, payload: data, ..
            } => {
                assert_eq!(data, payload(seq));
                P(seq)
            }
            Playout::Lost { next } => L(next.map(|p| u16::from_be_bytes([p[0], p[1]]))),
            Playout::Empty => E,
        }
    }

    /// A virtual-time stream: `arrivals` are (ms after start, seq, timestamp, marker);
    /// pops come every 20 ms at 10 ms past each tick, after the arrivals due by then.
    struct Sim {
        start: Instant,
        arrivals: Vec<(u64, u16, u32, bool)>,
        next: usize,
        pops: u64,
    }

    impl Sim {
        fn new(arrivals: &[(u64, u16, u32, bool)]) -> Sim {
            let mut arrivals = arrivals.to_vec();
            arrivals.sort_by_key(|a| a.0);
            Sim {
                start: Instant::now(),
                arrivals,
                next: 0,
                pops: 0,
            }
        }

        fn run(&mut self, jb: &mut JitterBuffer, pops: u64) -> Vec<Out> {
            let mut out = Vec::new();
            for _ in 0..pops {
                let now_ms = 20 * self.pops + 10;
                self.pops += 1;
                while let Some(&(at, seq, ts, marker)) = self.arrivals.get(self.next)
                    && at <= now_ms
                {
                    jb.push(self.start + ms(at), seq, ts, marker, &payload(seq));
                    self.next += 1;
                }
                out.push(pop(jb, self.start + ms(now_ms)));
            }
            out
        }
    }

    fn run(jb: &mut JitterBuffer, arrivals: &[(u64, u16, u32, bool)], pops: u64) -> Vec<Out> {
        Sim::new(arrivals).run(jb, pops)
    }

    fn steady(seqs: impl IntoIterator<Item = u16>) -> Vec<(u64, u16, u32, bool)> {
        seqs.into_iter()
            .map(|s| (20 * u64::from(s), s, 160 * u32::from(s), false))
            .collect()
    }

    fn packets(out: &[Out]) -> Vec<u16> {
        out.iter()
            .filter_map(|o| if let P(s) = o { Some(*s) } else { None })
            .collect()
    }

    #[test]
    fn in_order_stream_plays_in_order_after_the_initial_delay() {
        let mut jb = JitterBuffer::new(config(40));
        let out = run(&mut jb, &steady(0..50), 60);
        // Pushed at 0, 20, 40 ms; the first pop at or after 40 ms of waiting plays.
        assert_eq!(&out[..3], &[E, E, P(0)]);
        assert_eq!(packets(&out), (0..50).collect::<Vec<_>>());
        assert!(out[2..52].iter().all(|o| matches!(o, P(_))), "{out:?}");
        let stats = jb.stats();
        assert_eq!(
            (stats.played, stats.lost, stats.late, stats.resyncs),
            (50, 5, 0, 1)
        );
        assert_eq!(stats.delay, ms(50));
        assert_eq!(stats.jitter_ms, 0.0);
    }

    #[test]
    fn reordered_packets_play_in_order() {
        let mut jb = JitterBuffer::new(config(60));
        let mut arrivals = steady(0..40);
        arrivals.swap(2, 3); // 2 and 3 swapped: seq 3 arrives at 40 ms, seq 2 at 60 ms
        // 10, 11, 12 shuffled to arrive as 12, 10, 11.
        let times = [arrivals[10].0, arrivals[11].0, arrivals[12].0];
        arrivals[12].0 = times[0];
        arrivals[10].0 = times[1];
        arrivals[11].0 = times[2];
        for (i, t) in [(2, 60), (3, 40)] {
            arrivals[i].0 = t;
        }
        let out = run(&mut jb, &arrivals, 50);
        assert_eq!(packets(&out), (0..40).collect::<Vec<_>>());
        let stats = jb.stats();
        assert_eq!((stats.lost, stats.late, stats.duplicate), (5, 0, 0));
    }

    #[test]
    fn first_packets_reordered_before_playout_still_start_with_the_lowest() {
        let mut jb = JitterBuffer::new(config(40));
        let mut arrivals = steady(0..10);
        arrivals[0].0 = 25; // seq 0 arrives after seq 1
        let out = run(&mut jb, &arrivals, 15);
        assert_eq!(packets(&out), (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn lost_packet_conceals_with_the_following_packet_for_fec() {
        let mut jb = JitterBuffer::new(config(40));
        let arrivals: Vec<_> = steady(0..20).into_iter().filter(|a| a.1 != 5).collect();
        let out = run(&mut jb, &arrivals, 12);
        assert_eq!(
            &out[2..10],
            &[P(0), P(1), P(2), P(3), P(4), L(Some(6)), P(6), P(7)]
        );
        assert_eq!(jb.stats().lost, 1);
    }

    #[test]
    fn late_packet_is_dropped_and_raises_the_target() {
        let mut jb = JitterBuffer::new(config(20));
        let mut arrivals = steady(0..30);
        arrivals[5].0 = 150; // due at 130 ms (played at 20 k + 30 ms)
        let mut sim = Sim::new(&arrivals);
        let out = sim.run(&mut jb, 7);
        assert_eq!(&out[1..7], &[P(0), P(1), P(2), P(3), P(4), L(Some(6))]);
        // Seq 5 arrives at 150 ms, before the pop of 150 ms.
        let out = sim.run(&mut jb, 1);
        let stats = jb.stats();
        assert_eq!(stats.late, 1);
        // The measured delay (30 ms) plus what it missed by (20 ms) plus a frame, and
        // the pop's slow decay towards 20 ms.
        assert!(
            stats.target_delay > ms(69) && stats.target_delay <= ms(70),
            "{stats:?}"
        );
        // Playout holds back two frames to get there, then goes on without seq 5.
        assert_eq!(out, [L(None)]);
        let out = sim.run(&mut jb, 4);
        assert_eq!(out, [L(None), P(6), P(7), P(8)]);
        assert_eq!(jb.stats().stretched, 2);
        assert!(jb.stats().delay >= ms(60), "{:?}", jb.stats());
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut jb = JitterBuffer::new(config(40));
        let seqs = [65533u16, 65534, 65535, 0, 1, 2];
        let mut arrivals: Vec<_> = seqs
            .iter()
            .enumerate()
            .map(|(i, &s)| (20 * i as u64, s, 1000 + 160 * i as u32, false))
            .collect();
        arrivals.swap(2, 3); // 65535 and 0 swapped across the wrap
        arrivals[2].0 = 40;
        arrivals[3].0 = 60;
        let out = run(&mut jb, &arrivals, 10);
        assert_eq!(packets(&out), seqs);
        assert_eq!(jb.stats().late, 0);
    }

    #[test]
    fn burst_overflows_the_ring_without_panicking() {
        let mut jb = JitterBuffer::new(config(20));
        let arrivals: Vec<_> = (0..100u16)
            .map(|s| (0, s, 160 * u32::from(s), false))
            .collect();
        let out = run(&mut jb, &arrivals, 60);
        assert_eq!(jb.stats().overflow, 100 - SLOTS as u64);
        assert_eq!(packets(&out), (0..SLOTS as u16).collect::<Vec<_>>());
        assert_eq!(*out.last().unwrap(), E);
    }

    #[test]
    fn oversized_payload_is_dropped() {
        let mut jb = JitterBuffer::new(config(20));
        let start = Instant::now();
        jb.push(start, 1, 0, false, &[0; MAX_PAYLOAD + 1]);
        jb.push(start, 2, 160, false, &[7; MAX_PAYLOAD]);
        assert_eq!(jb.stats().oversized, 1);
        match jb.pop(start + ms(20)) {
            Playout::Packet { seq, payload, .. } => {
                assert_eq!((seq, payload.len()), (2, MAX_PAYLOAD))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn duplicates_are_dropped() {
        let mut jb = JitterBuffer::new(config(40));
        let mut arrivals = steady(0..20);
        // Every packet twice: once at once, once 50 ms later (after some have played).
        arrivals.extend(
            steady(0..20)
                .into_iter()
                .map(|(t, s, ts, m)| (t + 50, s, ts, m)),
        );
        let out = run(&mut jb, &arrivals, 30);
        assert_eq!(packets(&out), (0..20).collect::<Vec<_>>());
        let stats = jb.stats();
        assert_eq!((stats.duplicate, stats.late), (20, 0));
    }

    #[test]
    fn stopped_stream_gives_silence_not_endless_concealment() {
        let mut jb = JitterBuffer::new(config(20));
        let out = run(&mut jb, &steady(0..10), 40);
        let after: Vec<_> = out
            .iter()
            .skip_while(|o| **o != P(9))
            .skip(1)
            .copied()
            .collect();
        assert_eq!(
            &after[..MAX_CONCEALED as usize],
            &[L(None); MAX_CONCEALED as usize]
        );
        assert!(after[MAX_CONCEALED as usize..].iter().all(|o| *o == E));
        assert_eq!(jb.stats().lost, u64::from(MAX_CONCEALED));
    }

    #[test]
    fn stream_resumes_after_a_long_pause() {
        let mut jb = JitterBuffer::new(config(20));
        let mut arrivals = steady(0..10);
        // A talkspurt after 1 s of silence (DTX): sequence continues, timestamp jumps.
        arrivals.extend((10..20u16).map(|s| {
            (
                1000 + 20 * u64::from(s),
                s,
                8000 + 160 * u32::from(s),
                s == 10,
            )
        }));
        let out = run(&mut jb, &arrivals, 80);
        assert_eq!(packets(&out), (0..20).collect::<Vec<_>>());
        assert_eq!(jb.stats().resyncs, 2);
    }

    #[test]
    fn short_pause_is_kept_as_silence() {
        let mut jb = JitterBuffer::new(config(100));
        let mut arrivals = steady(0..10);
        // Seq 10 starts a talkspurt after 60 ms of sender silence.
        arrivals.extend(
            (10..20u16).map(|s| (60 + 20 * u64::from(s), s, 480 + 160 * u32::from(s), s == 10)),
        );
        let out = run(&mut jb, &arrivals, 40);
        let from = out.iter().position(|o| *o == P(9)).unwrap();
        assert_eq!(&out[from..from + 5], &[P(9), E, E, E, P(10)]);
        assert_eq!(packets(&out), (0..20).collect::<Vec<_>>());
        assert_eq!(jb.stats().lost, u64::from(MAX_CONCEALED));
    }

    #[test]
    fn forty_ms_packets_play_in_order() {
        let mut jb = JitterBuffer::new(config(40));
        let start = Instant::now();
        let mut played = Vec::new();
        for k in 0..30u16 {
            let t = start + ms(40 * u64::from(k));
            jb.push(t, k, 320 * u32::from(k), false, &payload(k));
            if let P(seq) = pop(&mut jb, t + ms(10)) {
                played.push(seq);
            }
        }
        assert_eq!(jb.frame(), ms(40));
        assert_eq!(played, (0..29).collect::<Vec<_>>());
        assert_eq!(jb.stats().lost, 0);
    }

    #[test]
    fn sequence_jump_recovers_after_the_stream_counts_as_stopped() {
        let mut jb = JitterBuffer::new(config(20));
        let mut arrivals = steady(0..20);
        // The sender restarts its numbering (same SSRC, no marker): far behind, then
        // too far ahead for the ring.
        for (base, from) in [(40000u16, 20u16), (40100, 40)] {
            arrivals.extend((from..from + 20).map(|k| {
                (
                    20 * u64::from(k),
                    base.wrapping_add(k),
                    160 * u32::from(k),
                    false,
                )
            }));
        }
        let out = run(&mut jb, &arrivals, 70);
        let played = packets(&out);
        assert_eq!(&played[..20], (0..20).collect::<Vec<_>>());
        // Each jump costs the stopped-stream timeout plus a resync, then playout follows.
        let after: Vec<u16> = played[20..].to_vec();
        let breaks = after
            .windows(2)
            .filter(|w| w[1] != w[0].wrapping_add(1))
            .count();
        assert_eq!(breaks, 1, "{after:?}");
        assert!(
            after.contains(&40039) && after.contains(&40159),
            "{after:?}"
        );
        let stats = jb.stats();
        assert!(stats.late > 0 && stats.overflow > 0, "{stats:?}");
        assert_eq!(jb.stats().resyncs, 3);
    }

    #[test]
    fn reset_starts_a_new_stream() {
        let mut jb = JitterBuffer::new(config(20));
        let start = Instant::now();
        jb.push(start, 100, 0, false, &payload(100));
        assert_eq!(pop(&mut jb, start + ms(20)), P(100));
        jb.reset();
        jb.push(start + ms(40), 7, 999_999, false, &payload(7));
        assert_eq!(pop(&mut jb, start + ms(40)), E);
        assert_eq!(pop(&mut jb, start + ms(60)), P(7));
    }

    /// Tiny deterministic generator for arrival jitter.
    fn lcg(state: &mut u64) -> u64 {
        *state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *state >> 33
    }

    #[test]
    fn sustained_jitter_deepens_and_calm_shallows() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let mut rng = 7;
        // 10 s with up to 80 ms of extra delay per packet, then 40 s without.
        let arrivals: Vec<_> = (0..2500u16)
            .map(|s| {
                let extra = if s < 500 { lcg(&mut rng) % 80 } else { 0 };
                (20 * u64::from(s) + extra, s, 160 * u32::from(s), false)
            })
            .collect();
        let mut sim = Sim::new(&arrivals);
        let mut out = sim.run(&mut jb, 500);
        let jittery = jb.stats();
        out.extend(sim.run(&mut jb, 2000));
        let played = packets(&out);
        assert!(played.windows(2).all(|w| w[0] < w[1]), "out of order");
        let calm = jb.stats();
        assert!(jittery.jitter_ms > 10.0, "{jittery:?}");
        assert!(jittery.target_delay >= ms(80), "{jittery:?}");
        assert!(jittery.delay >= ms(70), "{jittery:?}");
        assert!(calm.target_delay <= ms(25), "{calm:?}");
        assert!(calm.delay <= ms(45), "{calm:?}");
        assert!(calm.shrunk > 0 && calm.stretched > 0, "{calm:?}");
    }
}
