//! RTP header facts (RFC 3550 §5.1) and the stream rewriter that keeps what a phone
//! receives looking like one continuous stream.

/// The fixed RTP header length.
const HEADER_LEN: usize = 12;

/// Timestamp advance assumed across a source switch before any frame size is seen:
/// 20 ms at 8 kHz, the common G.711 packet.
const DEFAULT_TIMESTAMP_STEP: u32 = 160;

/// True for an RTP packet: version 2, a full header, and not RTCP multiplexed onto
/// the RTP port (second byte 192..=223, RFC 5761 §4).
pub fn is_rtp(packet: &[u8]) -> bool {
    packet.len() >= HEADER_LEN && packet[0] >> 6 == 2 && !(192..=223).contains(&packet[1])
}

/// The fields of an RTP header a decoder needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub payload_type: u8,
    pub marker: bool,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
}

/// Splits an RTP packet into its header fields and payload, skipping CSRCs and a
/// header extension and dropping padding (RFC 3550 §5.1, §5.3.1). `None` for anything
/// malformed.
pub fn parse(packet: &[u8]) -> Option<(Header, &[u8])> {
    if !is_rtp(packet) {
        return None;
    }
    let csrcs = usize::from(packet[0] & 0x0f);
    let mut start = HEADER_LEN + 4 * csrcs;
    if packet[0] & 0x10 != 0 {
        let words = packet.get(start + 2..start + 4)?;
        start += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    let mut end = packet.len();
    if packet[0] & 0x20 != 0 {
        end = end.checked_sub(usize::from(*packet.last()?))?;
    }
    let payload = packet.get(start..end)?;
    let header = Header {
        payload_type: packet[1] & 0x7f,
        marker: packet[1] & 0x80 != 0,
        seq: u16::from_be_bytes([packet[2], packet[3]]),
        timestamp: u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]),
        ssrc: u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]),
    };
    Some((header, payload))
}

/// Writes a plain 12-byte RTP header (no CSRC, extension or padding) into `out`,
/// returning its length; the payload goes after it.
pub fn write_header(header: &Header, out: &mut [u8]) -> usize {
    out[0] = 0x80;
    out[1] = (header.payload_type & 0x7f) | if header.marker { 0x80 } else { 0 };
    out[2..4].copy_from_slice(&header.seq.to_be_bytes());
    out[4..8].copy_from_slice(&header.timestamp.to_be_bytes());
    out[8..12].copy_from_slice(&header.ssrc.to_be_bytes());
    HEADER_LEN
}

/// Rewrites the packet's payload type in place (a relayed stream whose two legs
/// numbered the same codec differently).
pub fn set_payload_type(packet: &mut [u8], payload_type: u8) {
    packet[1] = (packet[1] & 0x80) | (payload_type & 0x7f);
}

/// Loss and interarrival jitter of one received RTP stream, as RFC 3550 computes
/// them for reception reports (A.1 sequence tracking, A.3 packets lost, A.8 jitter):
/// a few integer operations per packet, so the relay path can afford it. A new SSRC
/// (another source behind the leg) starts the count again, keeping what was lost.
#[derive(Clone, Debug, Default)]
pub struct ReceiveStats {
    stream: Option<ReceivedStream>,
    /// Lost by streams before the current one.
    lost_before: u64,
}

#[derive(Clone, Debug)]
struct ReceivedStream {
    ssrc: u32,
    base_seq: u16,
    max_seq: u16,
    /// Sequence number wraps, in units of 2^16.
    cycles: u64,
    received: u64,
    /// Arrival time minus timestamp of the previous packet, in clock units.
    transit: i64,
    /// The jitter estimate times 16 (A.8 keeps it scaled to avoid rounding).
    jitter16: u64,
}

impl ReceiveStats {
    /// A packet arrived `arrival` after some fixed start, on a stream clocked at
    /// `clock_rate` Hz.
    pub fn on_packet(&mut self, header: &Header, arrival: std::time::Duration, clock_rate: u32) {
        let micros = u64::try_from(arrival.as_micros()).unwrap_or(u64::MAX);
        let arrival = (micros.saturating_mul(u64::from(clock_rate)) / 1_000_000) as i64;
        let transit = arrival - i64::from(header.timestamp);
        match &mut self.stream {
            Some(s) if s.ssrc == header.ssrc => {
                let delta = header.seq.wrapping_sub(s.max_seq);
                if delta != 0 && delta < 0x8000 {
                    if header.seq < s.max_seq {
                        s.cycles += 1;
                    }
                    s.max_seq = header.seq;
                }
                s.received += 1;
                let d = (transit - s.transit).unsigned_abs();
                s.transit = transit;
                // J += (|D| - J) / 16, kept as 16 J.
                s.jitter16 = s.jitter16 + d - ((s.jitter16 + 8) >> 4);
            }
            _ => {
                self.lost_before += self.stream.as_ref().map_or(0, ReceivedStream::lost);
                self.stream = Some(ReceivedStream {
                    ssrc: header.ssrc,
                    base_seq: header.seq,
                    max_seq: header.seq,
                    cycles: 0,
                    received: 1,
                    transit,
                    jitter16: 0,
                });
            }
        }
    }

    /// Packets expected but not received (duplicates can make a stream look better,
    /// never below zero).
    pub fn lost(&self) -> u64 {
        self.lost_before + self.stream.as_ref().map_or(0, ReceivedStream::lost)
    }

    /// The interarrival jitter in clock units.
    pub fn jitter(&self) -> u64 {
        self.stream.as_ref().map_or(0, |s| s.jitter16 >> 4)
    }
}

impl ReceivedStream {
    fn lost(&self) -> u64 {
        let extended_max = (self.cycles << 16) + u64::from(self.max_seq);
        let expected = extended_max + 1 - u64::from(self.base_seq);
        expected.saturating_sub(self.received)
    }
}

/// Rewrites the packets sent towards one phone so that a change of the source behind
/// the other leg (a re-INVITE to another phone, a transfer, later an injected prompt)
/// doesn't look like a new stream: the SSRC stays the first source's, and sequence
/// numbers and timestamps continue from the last packet sent. The first source passes
/// unchanged. At a switch the timestamp advances by one frame of the previous source
/// and the marker bit is set, which tells the receiver a new talkspurt starts so its
/// jitter buffer resynchronises (RFC 3551 §4.1). Non-RTP packets are left alone.
#[derive(Clone, Debug, Default)]
pub struct StreamRewriter {
    stream: Option<Stream>,
}

#[derive(Clone, Debug)]
struct Stream {
    out_ssrc: u32,
    in_ssrc: u32,
    seq_offset: u16,
    timestamp_offset: u32,
    /// The newest (by sequence number) packet sent, after rewriting.
    last_seq: u16,
    last_timestamp: u32,
    /// The timestamp advance between consecutive packets of the current source.
    timestamp_step: u32,
}

impl StreamRewriter {
    pub fn new() -> StreamRewriter {
        StreamRewriter::default()
    }

    /// Rewrites `packet` in place if it is RTP.
    pub fn rewrite(&mut self, packet: &mut [u8]) {
        if !is_rtp(packet) {
            return;
        }
        let seq = u16::from_be_bytes([packet[2], packet[3]]);
        let timestamp = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
        let ssrc = u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]);
        let marker = packet[1] & 0x80 != 0;
        let Some(s) = &mut self.stream else {
            self.stream = Some(Stream {
                out_ssrc: ssrc,
                in_ssrc: ssrc,
                seq_offset: 0,
                timestamp_offset: 0,
                last_seq: seq,
                last_timestamp: timestamp,
                timestamp_step: 0,
            });
            return;
        };
        let switched = s.in_ssrc != ssrc;
        if switched {
            let step = if s.timestamp_step == 0 {
                DEFAULT_TIMESTAMP_STEP
            } else {
                s.timestamp_step
            };
            s.in_ssrc = ssrc;
            s.seq_offset = s.last_seq.wrapping_add(1).wrapping_sub(seq);
            s.timestamp_offset = s.last_timestamp.wrapping_add(step).wrapping_sub(timestamp);
            s.timestamp_step = 0;
            packet[1] |= 0x80;
        }
        let out_seq = seq.wrapping_add(s.seq_offset);
        let out_timestamp = timestamp.wrapping_add(s.timestamp_offset);
        packet[2..4].copy_from_slice(&out_seq.to_be_bytes());
        packet[4..8].copy_from_slice(&out_timestamp.to_be_bytes());
        packet[8..12].copy_from_slice(&s.out_ssrc.to_be_bytes());

        let seq_advance = out_seq.wrapping_sub(s.last_seq);
        if seq_advance != 0 && seq_advance < 0x8000 {
            // Learn the frame size from consecutive packets, not across a silence gap
            // (marked) nor from events or video packets that share a timestamp.
            let timestamp_advance = out_timestamp.wrapping_sub(s.last_timestamp);
            if seq_advance == 1
                && !marker
                && !switched
                && timestamp_advance != 0
                && timestamp_advance < 0x8000_0000
            {
                s.timestamp_step = timestamp_advance;
            }
            s.last_seq = out_seq;
            s.last_timestamp = out_timestamp;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(seq: u16, timestamp: u32, ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x80, 0x00];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&timestamp.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(b"payload");
        p
    }

    /// (seq, timestamp, ssrc, marker) of a rewritten packet.
    fn fields(p: &[u8]) -> (u16, u32, u32, bool) {
        (
            u16::from_be_bytes([p[2], p[3]]),
            u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
            u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
            p[1] & 0x80 != 0,
        )
    }

    fn send(r: &mut StreamRewriter, seq: u16, timestamp: u32, ssrc: u32) -> (u16, u32, u32, bool) {
        let mut p = packet(seq, timestamp, ssrc);
        r.rewrite(&mut p);
        assert_eq!(&p[12..], b"payload");
        fields(&p)
    }

    #[test]
    fn first_source_passes_unchanged() {
        let mut r = StreamRewriter::new();
        for i in 0..5 {
            let original = packet(100 + i, 8000 + 160 * u32::from(i), 0xAAAA);
            let mut p = original.clone();
            r.rewrite(&mut p);
            assert_eq!(p, original);
        }
    }

    #[test]
    fn a_new_source_continues_the_stream() {
        let mut r = StreamRewriter::new();
        for i in 0..3u16 {
            send(
                &mut r,
                65534u16.wrapping_add(i),
                1000 + 320 * u32::from(i),
                0xAAAA,
            );
        }
        // Last sent: seq 0 (wrapped), timestamp 1640, frame 320.
        assert_eq!(send(&mut r, 7, 90_000, 0xBBBB), (1, 1960, 0xAAAA, true));
        assert_eq!(send(&mut r, 8, 90_160, 0xBBBB), (2, 2120, 0xAAAA, false));
        // Reordered packet of the new source keeps its place and doesn't rewind.
        assert_eq!(send(&mut r, 10, 90_480, 0xBBBB), (4, 2440, 0xAAAA, false));
        assert_eq!(send(&mut r, 9, 90_320, 0xBBBB), (3, 2280, 0xAAAA, false));
        // Switching back to the first source continues from the newest sent.
        assert_eq!(send(&mut r, 3, 1960, 0xAAAA), (5, 2600, 0xAAAA, true));
    }

    #[test]
    fn frame_size_is_learnt_from_consecutive_packets_only() {
        let mut r = StreamRewriter::new();
        send(&mut r, 1, 0, 1);
        // A switch before any frame size is known advances one G.711 frame.
        assert_eq!(send(&mut r, 50, 7, 2), (2, 160, 1, true));
        send(&mut r, 51, 967, 2); // 960: a 20 ms Opus frame
        let mut marked = packet(52, 50_967, 2); // after a silence gap
        marked[1] |= 0x80;
        r.rewrite(&mut marked);
        send(&mut r, 53, 50_967, 2); // a DTMF event repeats its timestamp
        assert_eq!(send(&mut r, 1, 0, 3).1, 160 + 960 + 50_000 + 960);
    }

    #[test]
    fn headers_parse_past_csrcs_extensions_and_padding() {
        let plain = packet(7, 160, 0xABCD);
        let (h, payload) = parse(&plain).unwrap();
        assert_eq!(
            h,
            Header {
                payload_type: 0,
                marker: false,
                seq: 7,
                timestamp: 160,
                ssrc: 0xABCD
            }
        );
        assert_eq!(payload, b"payload");
        // One CSRC, a one-word extension, two bytes of padding, marker and PT 101.
        let mut p = vec![0xB1, 0x80 | 101];
        p.extend_from_slice(&[0, 1, 0, 0, 0, 2, 0, 0, 0, 3]);
        p.extend_from_slice(&[0, 0, 0, 9]); // CSRC
        p.extend_from_slice(&[0xBE, 0xDE, 0, 1, 1, 2, 3, 4]); // extension
        p.extend_from_slice(&[5, 0x8A, 0, 160, 0, 2]); // event + padding
        let (h, payload) = parse(&p).unwrap();
        assert_eq!((h.payload_type, h.marker, h.seq), (101, true, 1));
        assert_eq!(payload, [5, 0x8A, 0, 160]);
        // Lengths that point past the end are refused, not trusted.
        let mut bad = plain.clone();
        bad[0] |= 0x0f;
        assert_eq!(parse(&bad), None);
        let mut bad = plain.clone();
        bad[0] |= 0x20;
        *bad.last_mut().unwrap() = 200;
        assert_eq!(parse(&bad), None);
        let mut out = [0u8; 12];
        assert_eq!(write_header(&h, &mut out), 12);
        assert_eq!(parse(&[&out[..], b"x"].concat()).unwrap().0, Header { ..h });
    }

    fn header(seq: u16, timestamp: u32, ssrc: u32) -> Header {
        Header {
            payload_type: 0,
            marker: false,
            seq,
            timestamp,
            ssrc,
        }
    }

    #[test]
    fn receive_stats_count_losses_across_wraps_and_sources() {
        let mut stats = ReceiveStats::default();
        let ms = |n: u64| std::time::Duration::from_millis(n);
        // 65530..=65535, 0..=9 with 65533 and 4 missing: 2 lost.
        let seqs = (65530u16..=65535)
            .chain(0..10)
            .filter(|&s| s != 65533 && s != 4);
        for (i, seq) in seqs.enumerate() {
            stats.on_packet(&header(seq, 160 * i as u32, 1), ms(20 * i as u64), 8000);
        }
        assert_eq!(stats.lost(), 2);
        assert_eq!(stats.jitter(), 0, "packets came exactly on time");
        // Another source: its count starts afresh, the 2 stay.
        stats.on_packet(&header(100, 0, 2), ms(1000), 8000);
        stats.on_packet(&header(103, 480, 2), ms(1060), 8000);
        assert_eq!(stats.lost(), 4);
    }

    #[test]
    fn receive_stats_jitter_follows_rfc_3550() {
        let mut stats = ReceiveStats::default();
        // Every other packet 10 ms late at 8 kHz: |D| alternates 80 ticks.
        for i in 0..200u32 {
            let late = if i % 2 == 1 { 10 } else { 0 };
            let at = std::time::Duration::from_millis(u64::from(20 * i + late));
            stats.on_packet(&header(i as u16, 160 * i, 7), at, 8000);
        }
        // J converges on the mean |D| = 80 ticks (10 ms).
        assert!((75..=80).contains(&stats.jitter()), "{}", stats.jitter());
    }

    #[test]
    fn non_rtp_is_left_alone() {
        let mut r = StreamRewriter::new();
        send(&mut r, 1, 0, 1);
        let rtcp_sr = [0x80u8, 200, 0, 6, 0, 0, 0, 2, 1, 2, 3, 4, 5, 6];
        let stun = [0x00u8, 0x01, 0, 0, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4];
        let short = [0x80u8, 0, 0, 1];
        for original in [&rtcp_sr[..], &stun[..], &short[..]] {
            let mut p = original.to_vec();
            r.rewrite(&mut p);
            assert_eq!(p, original);
        }
        // And it didn't count as a source switch.
        assert_eq!(send(&mut r, 2, 160, 1), (2, 160, 1, false));
    }
}
