//! Out-of-band DTMF: RFC 4733 telephone-event payloads (parse, generate, de-duplicate) and
//! SIP INFO DTMF bodies (`application/dtmf-relay`, `application/dtmf`).
//!
//! A key press travels as several RTP packets sharing one timestamp (start, continuations,
//! end retransmits), so the receiver keys presses by timestamp rather than by digit: that
//! reports each press exactly once, on the first packet seen, whatever was lost or reordered.
//! The sender caps durations at 0xFFFF clock units instead of splitting into §2.5.1.3
//! segments (1.36 s at 48 kHz, 8.2 s at 8 kHz): a longer press ends early but stays one press,
//! and every packet keeps the start timestamp, so the caller needs no timestamp bookkeeping.

/// DTMF events are 0-15; the payload's volume field is 6 bits.
const MAX_DTMF_EVENT: u8 = 15;
const VOLUME_MASK: u8 = 0x3F;
const END_BIT: u8 = 0x80;
/// Sent volume: -10 dBm0, the usual DTMF level.
const SEND_VOLUME: u8 = 10;
/// RFC 4733 §2.5.1.4: the end packet is sent three times.
const END_REPEATS: u8 = 3;
/// A packet whose timestamp lies up to this many clock units before the current event's
/// belongs to an older event (late or reordered) and is ignored. Two maximum event durations
/// cover any reordering; a bigger backwards jump is taken as a timestamp restart.
const STALE_WINDOW: u32 = 2 * 0x1_0000;

/// The 4-byte RFC 4733 §2.3 payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TelephoneEvent {
    pub event: u8,
    pub end: bool,
    /// 0-63, the power level in -dBm0 (only the low 6 bits are sent).
    pub volume: u8,
    pub duration: u16,
}

impl TelephoneEvent {
    /// Parses the first 4 bytes of a payload; None if shorter. The reserved bit is ignored.
    pub fn parse(payload: &[u8]) -> Option<TelephoneEvent> {
        let p: &[u8; 4] = payload.get(..4)?.try_into().ok()?;
        Some(TelephoneEvent {
            event: p[0],
            end: p[1] & END_BIT != 0,
            volume: p[1] & VOLUME_MASK,
            duration: u16::from_be_bytes([p[2], p[3]]),
        })
    }

    pub fn write(&self) -> [u8; 4] {
        let flags = if self.end { END_BIT } else { 0 } | (self.volume & VOLUME_MASK);
        let [d0, d1] = self.duration.to_be_bytes();
        [self.event, flags, d0, d1]
    }
}

/// RFC 4733 §3.2 event code to key: 0-9, * (10), # (11), A-D (12-15).
pub fn event_to_digit(event: u8) -> Option<char> {
    match event {
        0..=9 => Some(char::from(b'0' + event)),
        10 => Some('*'),
        11 => Some('#'),
        12..=MAX_DTMF_EVENT => Some(char::from(b'A' + event - 12)),
        _ => None,
    }
}

/// Key to RFC 4733 event code; accepts lowercase a-d.
pub fn digit_to_event(digit: char) -> Option<u8> {
    match digit {
        '0'..='9' => Some(digit as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(digit as u8 - b'A' + 12),
        'a'..='d' => Some(digit as u8 - b'a' + 12),
        _ => None,
    }
}

#[derive(Clone, Copy, Debug)]
struct CurrentEvent {
    timestamp: u32,
    event: u8,
    ended: bool,
}

/// Turns a received telephone-event stream into key presses: exactly one digit per press.
/// A press is identified by its RTP timestamp (all packets of one event share it, RFC 4733
/// §2.5.1.2); the digit is reported on the first packet seen of a new event, and never again
/// for continuations or end retransmits. Packets of an older event arriving late are ignored,
/// and a §2.5.1.3 continuation segment (new timestamp = previous + 0xFFFF, same event, not
/// ended) is not a new press. Non-DTMF events (flash, tones) are ignored.
///
/// One receiver per RTP stream: create a new one when the SSRC changes. If every end packet
/// of a press is lost, `key_down` stays set until the next event; the caller may time it out.
#[derive(Debug, Default)]
pub struct EventReceiver {
    current: Option<CurrentEvent>,
}

impl EventReceiver {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one received payload with its packet's RTP timestamp; returns the digit if this
    /// packet starts a press not seen before.
    pub fn on_packet(&mut self, rtp_timestamp: u32, ev: TelephoneEvent) -> Option<char> {
        let digit = event_to_digit(ev.event)?;
        if let Some(cur) = &mut self.current {
            let behind = cur.timestamp.wrapping_sub(rtp_timestamp);
            let is_next_segment = !cur.ended
                && cur.event == ev.event
                && rtp_timestamp.wrapping_sub(cur.timestamp) == 0xFFFF;
            // A different key under the same timestamp can only be a new press (from a
            // sender that does not advance the timestamp between events).
            if (behind == 0 && cur.event == ev.event) || is_next_segment {
                cur.timestamp = rtp_timestamp;
                cur.ended |= ev.end;
                return None;
            }
            if behind != 0 && behind <= STALE_WINDOW {
                return None;
            }
        }
        self.current = Some(CurrentEvent {
            timestamp: rtp_timestamp,
            event: ev.event,
            ended: ev.end,
        });
        Some(digit)
    }

    /// The key currently held (last press seen without its end packet).
    pub fn key_down(&self) -> Option<char> {
        self.current
            .filter(|c| !c.ended)
            .and_then(|c| event_to_digit(c.event))
    }
}

/// Generates the RTP payloads of one key press for a given RTP clock (8000 for G.711/G.722,
/// 48000 for Opus; durations are in that clock's units). The caller sends one payload per
/// packet interval, all with the RTP timestamp of the event start, the first with the marker
/// bit. Packet k reports (k+1) intervals (it covers the audio up to the end of its interval);
/// the packet reaching the full duration is the end packet, sent 3 times. Durations beyond
/// 0xFFFF units are capped (see the module doc).
#[derive(Debug)]
pub struct EventSender {
    event: u8,
    total: u32,
    step: u32,
    reported: u32,
    started: bool,
    ends_left: u8,
}

impl EventSender {
    /// None for a non-DTMF digit or a zero clock rate / packet interval. A duration shorter
    /// than one packet interval is raised to one interval.
    pub fn new(digit: char, duration_ms: u32, clock_rate: u32, packet_ms: u32) -> Option<Self> {
        let event = digit_to_event(digit)?;
        if clock_rate == 0 || packet_ms == 0 {
            return None;
        }
        let units = |ms: u32| (u64::from(ms) * u64::from(clock_rate) / 1000).min(0xFFFF) as u32;
        let step = units(packet_ms).max(1);
        Some(EventSender {
            event,
            total: units(duration_ms).max(step),
            step,
            reported: 0,
            started: false,
            ends_left: END_REPEATS,
        })
    }

    /// The next payload to send and whether it is the first (marker) packet; None when done.
    pub fn next_packet(&mut self) -> Option<(TelephoneEvent, bool)> {
        if self.ends_left == 0 {
            return None;
        }
        if !self.started {
            self.started = true;
            self.reported = self.step.min(self.total);
            return Some((self.payload(false), true));
        }
        if self.reported < self.total {
            self.reported = (self.reported + self.step).min(self.total);
            if self.reported < self.total {
                return Some((self.payload(false), false));
            }
        }
        self.ends_left -= 1;
        Some((self.payload(true), false))
    }

    fn payload(&self, end: bool) -> TelephoneEvent {
        TelephoneEvent {
            event: self.event,
            end,
            volume: SEND_VOLUME,
            // `total` is capped at 0xFFFF in `new`.
            duration: u16::try_from(self.reported).unwrap_or(u16::MAX),
        }
    }
}

/// Rescales an event's duration between RTP clocks (e.g. 48000 -> 8000), rounding to nearest
/// and saturating at 0xFFFF. A zero `from_clock` returns the duration unchanged.
pub fn rescale_duration(duration: u16, from_clock: u32, to_clock: u32) -> u16 {
    if from_clock == 0 {
        return duration;
    }
    let from = u64::from(from_clock);
    let scaled = (u64::from(duration) * u64::from(to_clock) + from / 2) / from;
    u16::try_from(scaled).unwrap_or(u16::MAX)
}

/// SIP INFO DTMF bodies: `application/dtmf-relay` (`Signal=5\r\nDuration=160\r\n`; keys
/// case-insensitive, `=` or `:`, whitespace and bare `\n` tolerated, Duration in ms) and
/// `application/dtmf` (the body is just the key or its event number). A signal may be a key
/// (0-9 * # A-D, any case) or an event number 0-15 (10/11 for * and #). Returns the digit
/// (uppercase) and the duration in ms if present and numeric.
pub fn parse_info(content_type: &str, body: &[u8]) -> Option<(char, Option<u32>)> {
    let mime = content_type.split(';').next().unwrap_or("").trim();
    let body = std::str::from_utf8(body).ok()?;
    if mime.eq_ignore_ascii_case("application/dtmf-relay") {
        let mut digit = None;
        let mut duration = None;
        for line in body.lines() {
            let Some((key, value)) = line.split_once(['=', ':']) else {
                continue;
            };
            let key = key.trim();
            if key.eq_ignore_ascii_case("signal") {
                digit = parse_signal(value);
            } else if key.eq_ignore_ascii_case("duration") {
                duration = value.trim().parse::<u32>().ok();
            }
        }
        digit.map(|d| (d, duration))
    } else if mime.eq_ignore_ascii_case("application/dtmf") {
        parse_signal(body).map(|d| (d, None))
    } else {
        None
    }
}

fn parse_signal(value: &str) -> Option<char> {
    let value = value.trim();
    let mut chars = value.chars();
    let event = match (chars.next(), chars.next()) {
        (Some(c), None) => digit_to_event(c)?,
        _ => value.parse::<u8>().ok()?,
    };
    event_to_digit(event)
}

/// The `application/dtmf-relay` body for a digit (letters uppercased).
pub fn info_body(digit: char, duration_ms: u32) -> String {
    format!(
        "Signal={}\r\nDuration={}\r\n",
        digit.to_ascii_uppercase(),
        duration_ms
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: u8, end: bool, duration: u16) -> TelephoneEvent {
        TelephoneEvent {
            event,
            end,
            volume: 10,
            duration,
        }
    }

    /// Feeds (timestamp, event) packets and collects the reported digits.
    fn digits(rx: &mut EventReceiver, packets: &[(u32, TelephoneEvent)]) -> String {
        packets
            .iter()
            .filter_map(|&(ts, e)| rx.on_packet(ts, e))
            .collect()
    }

    /// One press as a phone sends it: start, continuations, 3 end packets.
    fn press(ts: u32, event: u8) -> Vec<(u32, TelephoneEvent)> {
        let mut p: Vec<_> = [160, 320, 480, 640]
            .iter()
            .map(|&d| (ts, ev(event, false, d)))
            .collect();
        p.extend([(ts, ev(event, true, 800)); 3]);
        p
    }

    #[test]
    fn payload_fixtures() {
        let e = ev(5, true, 800);
        assert_eq!(e.write(), [0x05, 0x8A, 0x03, 0x20]);
        assert_eq!(TelephoneEvent::parse(&[0x05, 0x8A, 0x03, 0x20]), Some(e));
        // '#', not ended, volume 63, max duration; reserved bit set and trailing bytes ignored.
        let p = [0x0B, 0x7F, 0xFF, 0xFF, 0xAA];
        let want = TelephoneEvent {
            volume: 63,
            ..ev(11, false, 0xFFFF)
        };
        assert_eq!(TelephoneEvent::parse(&p), Some(want));
        // Volume beyond 6 bits does not leak into the E/R bits.
        let loud = TelephoneEvent {
            volume: 0xFF,
            ..ev(0, false, 0)
        };
        assert_eq!(loud.write(), [0x00, 0x3F, 0x00, 0x00]);
        assert_eq!(TelephoneEvent::parse(&[0x05, 0x8A, 0x03]), None);
        assert_eq!(TelephoneEvent::parse(&[]), None);
    }

    #[test]
    fn digit_mapping() {
        let all = "0123456789*#ABCD";
        for (i, c) in all.chars().enumerate() {
            assert_eq!(digit_to_event(c), Some(i as u8));
            assert_eq!(event_to_digit(i as u8), Some(c));
        }
        assert_eq!(digit_to_event('d'), Some(15));
        assert_eq!(digit_to_event('a'), Some(12));
        assert_eq!(digit_to_event('E'), None);
        assert_eq!(digit_to_event(' '), None);
        assert_eq!(event_to_digit(16), None);
        assert_eq!(event_to_digit(255), None);
    }

    #[test]
    fn one_press_one_digit() {
        let mut rx = EventReceiver::new();
        let p = press(1000, 5);
        assert_eq!(rx.on_packet(p[0].0, p[0].1), Some('5'));
        assert_eq!(rx.key_down(), Some('5'));
        assert_eq!(digits(&mut rx, &p[1..]), "");
        assert_eq!(rx.key_down(), None);
    }

    #[test]
    fn same_digit_twice_is_two_presses() {
        let mut rx = EventReceiver::new();
        let mut p = press(1000, 7);
        p.extend(press(3000, 7));
        assert_eq!(digits(&mut rx, &p), "77");
    }

    #[test]
    fn lost_first_packets() {
        let mut rx = EventReceiver::new();
        // Only continuations survive: reported on the first one.
        let p = press(1000, 3);
        assert_eq!(digits(&mut rx, &p[2..]), "3");
        // Only the end packets of the next press survive: reported once, key not down.
        let p = press(5000, 11);
        assert_eq!(rx.on_packet(p[4].0, p[4].1), Some('#'));
        assert_eq!(rx.key_down(), None);
        assert_eq!(digits(&mut rx, &p[5..]), "");
    }

    #[test]
    fn late_packet_of_old_event_is_ignored() {
        let mut rx = EventReceiver::new();
        let first = press(1000, 1);
        let second = press(2600, 2);
        assert_eq!(digits(&mut rx, &first[..4]), "1");
        // The second press starts before the first one's end packets arrive.
        assert_eq!(digits(&mut rx, &second[..2]), "2");
        assert_eq!(digits(&mut rx, &first[4..]), "");
        assert_eq!(rx.key_down(), Some('2'));
        assert_eq!(digits(&mut rx, &second[2..]), "");
        assert_eq!(rx.key_down(), None);
    }

    #[test]
    fn timestamp_wrap_and_restart() {
        let mut rx = EventReceiver::new();
        let mut p = press(u32::MAX - 100, 9);
        p.extend(press(700, 9)); // wrapped: newer
        p.extend(press(0x4000_0000, 0)); // stream restarted far away
        p.extend(press(0x1000, 4)); // far behind: a restart too, not a late packet
        assert_eq!(digits(&mut rx, &p), "9904");
    }

    #[test]
    fn long_event_segments_are_one_press() {
        let mut rx = EventReceiver::new();
        let p = [
            (0, ev(0, false, 0x8000)),
            (0, ev(0, false, 0xFFFF)),
            (0xFFFF, ev(0, false, 0x1000)),
            (0xFFFF, ev(0, true, 0x2000)),
            (0xFFFF, ev(0, true, 0x2000)),
        ];
        assert_eq!(digits(&mut rx, &p), "0");
        assert_eq!(rx.key_down(), None);
    }

    #[test]
    fn new_key_under_same_timestamp_is_a_new_press() {
        let mut rx = EventReceiver::new();
        let mut p = press(4000, 1);
        p.extend(press(4000, 2));
        assert_eq!(digits(&mut rx, &p), "12");
    }

    #[test]
    fn non_dtmf_events_ignored() {
        let mut rx = EventReceiver::new();
        assert_eq!(rx.on_packet(100, ev(16, false, 160)), None);
        assert_eq!(rx.key_down(), None);
        assert_eq!(rx.on_packet(100, ev(4, false, 160)), Some('4'));
    }

    fn sequence(s: &mut EventSender) -> Vec<(u16, bool, bool)> {
        std::iter::from_fn(|| s.next_packet())
            .map(|(e, marker)| (e.duration, e.end, marker))
            .collect()
    }

    #[test]
    fn sender_8k_20ms() {
        let mut s = EventSender::new('5', 100, 8000, 20).unwrap();
        let first = s.next_packet().unwrap();
        assert_eq!(first.0.write(), [0x05, 0x0A, 0x00, 0xA0]);
        assert!(first.1);
        assert_eq!(
            sequence(&mut s),
            [
                (320, false, false),
                (480, false, false),
                (640, false, false),
                (800, true, false),
                (800, true, false),
                (800, true, false),
            ]
        );
        assert!(s.next_packet().is_none());
    }

    #[test]
    fn sender_48k_50ms() {
        let mut s = EventSender::new('#', 200, 48000, 50).unwrap();
        assert_eq!(
            sequence(&mut s),
            [
                (2400, false, true),
                (4800, false, false),
                (7200, false, false),
                (9600, true, false),
                (9600, true, false),
                (9600, true, false),
            ]
        );
    }

    #[test]
    fn sender_short_and_capped() {
        // Shorter than a packet: start then the 3 ends, one interval long.
        let mut s = EventSender::new('1', 5, 8000, 20).unwrap();
        let d: Vec<_> = sequence(&mut s).iter().map(|p| (p.0, p.1)).collect();
        assert_eq!(d, [(160, false), (160, true), (160, true), (160, true)]);
        // 2 s at 48 kHz is 96000 units: capped at 0xFFFF, durations never decrease.
        let mut s = EventSender::new('1', 2000, 48000, 20).unwrap();
        let seq = sequence(&mut s);
        assert!(seq.windows(2).all(|w| w[0].0 <= w[1].0));
        // 68 intervals of 960 stay below the cap; the end packets report the cap.
        assert_eq!(seq.len(), 68 + 3);
        assert_eq!(seq[67], (65280, false, false));
        assert!(seq[68..].iter().all(|&p| p == (0xFFFF, true, false)));
    }

    #[test]
    fn sender_rejects_bad_arguments() {
        assert!(EventSender::new('x', 100, 8000, 20).is_none());
        assert!(EventSender::new('1', 100, 0, 20).is_none());
        assert!(EventSender::new('1', 100, 8000, 0).is_none());
        assert!(EventSender::new('d', 100, 8000, 20).is_some());
    }

    #[test]
    fn sender_output_gives_one_digit() {
        let mut s = EventSender::new('C', 160, 48000, 20).unwrap();
        let mut rx = EventReceiver::new();
        let got: String = std::iter::from_fn(|| s.next_packet())
            .filter_map(|(e, _)| {
                let wire = e.write();
                rx.on_packet(48_000, TelephoneEvent::parse(&wire).unwrap())
            })
            .collect();
        assert_eq!(got, "C");
        assert_eq!(rx.key_down(), None);
    }

    #[test]
    fn rescale() {
        assert_eq!(rescale_duration(4800, 48000, 8000), 800);
        assert_eq!(rescale_duration(800, 8000, 48000), 4800);
        assert_eq!(rescale_duration(20000, 8000, 48000), 0xFFFF);
        assert_eq!(rescale_duration(7, 48000, 8000), 1); // 1.17 rounds to 1
        assert_eq!(rescale_duration(9, 48000, 8000), 2); // 1.5 rounds up
        assert_eq!(rescale_duration(160, 8000, 16000), 320);
        assert_eq!(rescale_duration(160, 0, 8000), 160);
    }

    #[test]
    fn info_dtmf_relay_spellings() {
        let ct = "application/dtmf-relay";
        type Case<'a> = (&'a str, &'a str, Option<(char, Option<u32>)>);
        let cases: &[Case] = &[
            (ct, "Signal=5\r\nDuration=160\r\n", Some(('5', Some(160)))),
            (ct, "signal= 1\nduration= 250\n", Some(('1', Some(250)))),
            (ct, "Signal = *\r\nDuration = 100", Some(('*', Some(100)))),
            (ct, "SIGNAL=#\r\n", Some(('#', None))),
            (ct, "Signal=10\r\nDuration=120\r\n", Some(('*', Some(120)))),
            (ct, "Signal=11\r\n", Some(('#', None))),
            (ct, "Signal=a\r\nDuration=60", Some(('A', Some(60)))),
            (ct, "Duration=160\r\nSignal=9\r\n", Some(('9', Some(160)))),
            (ct, "Signal: 0\r\nDuration: 200\r\n", Some(('0', Some(200)))),
            (ct, "Signal=5\r\nDuration=abc\r\n", Some(('5', None))),
            (
                "Application/DTMF-Relay; charset=utf-8",
                "Signal=D",
                Some(('D', None)),
            ),
            (ct, "Signal=\r\nDuration=160", None),
            (ct, "Signal=X\r\n", None),
            (ct, "Signal=16\r\n", None),
            (ct, "Signal=55\r\n", None),
            (ct, "Duration=160\r\n", None),
            (ct, "hello world", None),
            (ct, "", None),
            ("text/plain", "Signal=5\r\n", None),
        ];
        for (ct, body, want) in cases {
            assert_eq!(parse_info(ct, body.as_bytes()), *want, "{ct:?} {body:?}");
        }
        assert_eq!(parse_info(ct, b"Signal=\xff\r\n"), None);
    }

    #[test]
    fn info_dtmf_plain() {
        let ct = "application/dtmf";
        assert_eq!(parse_info(ct, b"5"), Some(('5', None)));
        assert_eq!(parse_info(ct, b" # \r\n"), Some(('#', None)));
        assert_eq!(parse_info(ct, b"11"), Some(('#', None)));
        assert_eq!(parse_info(ct, b"b"), Some(('B', None)));
        assert_eq!(parse_info(ct, b""), None);
        assert_eq!(parse_info(ct, b"Signal=5"), None);
        assert_eq!(parse_info(ct, b"\xff"), None);
    }

    #[test]
    fn info_body_round_trip() {
        let body = info_body('b', 160);
        assert_eq!(body, "Signal=B\r\nDuration=160\r\n");
        assert_eq!(
            parse_info("application/dtmf-relay", body.as_bytes()),
            Some(('B', Some(160)))
        );
    }
}
