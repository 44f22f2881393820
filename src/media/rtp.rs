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
