//! The load generator's RTP packets.
//!
//! Relayed runs send stamped packets: a 12-byte RTP header and a 160-byte G.711 (PCMU)
//! payload, 20 ms of audio, whose payload carries what the receiver needs to measure
//! the relay (which call and direction, a sequence number, and when it was sent),
//! because a B2BUA may rewrite the RTP header's SSRC, sequence and timestamp.
//!
//! Transcoded runs send audio packets: real encoded speech, since a transcoder decodes
//! the payload and sends new audio, so nothing in it survives. The receiver then
//! measures by the RTP header of what arrives (see `traffic`).

/// 20 ms of 8 kHz G.711.
pub const PAYLOAD_LEN: usize = 160;
pub const PACKET_LEN: usize = 12 + PAYLOAD_LEN;
/// Marks a payload as ours; anything else arriving at a generator socket is counted as
/// foreign and otherwise ignored.
const MAGIC: [u8; 4] = *b"SBLG";
/// PCMU silence, for the bytes after the measurement fields.
const SILENCE: u8 = 0xFF;

/// Which way a packet travels: from the caller's phone to the callee's or back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    AToB = 0,
    BToA = 1,
}

/// The measurement fields carried in the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub call: u32,
    pub direction: Direction,
    pub seq: u32,
    /// Nanoseconds since the generator's clock origin (one process, one monotonic clock).
    pub sent_ns: u64,
}

/// Writes a whole packet into `buf`. The RTP header is what a phone would send: PT 0,
/// sequence and timestamp advancing by 1 and 160, an SSRC per call and direction.
pub fn write_packet(buf: &mut [u8; PACKET_LEN], stamp: &Stamp) {
    let ssrc = ssrc(stamp.call, stamp.direction);
    buf[0] = 0x80;
    buf[1] = 0; // PCMU, no marker
    buf[2..4].copy_from_slice(&(stamp.seq as u16).to_be_bytes());
    buf[4..8].copy_from_slice(&stamp.seq.wrapping_mul(PAYLOAD_LEN as u32).to_be_bytes());
    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
    let payload = &mut buf[12..];
    payload[0..4].copy_from_slice(&MAGIC);
    payload[4..8].copy_from_slice(&stamp.call.to_be_bytes());
    payload[8] = stamp.direction as u8;
    payload[9..12].fill(0);
    payload[12..16].copy_from_slice(&stamp.seq.to_be_bytes());
    payload[16..24].copy_from_slice(&stamp.sent_ns.to_be_bytes());
    payload[24..].fill(SILENCE);
}

/// The SSRC of one call's phone on one side.
fn ssrc(call: u32, direction: Direction) -> u32 {
    call.wrapping_mul(2).wrapping_add(direction as u32) ^ 0x5B0A_0000
}

/// Writes a packet of real audio into `buf` and returns its length: frame `round` of
/// the call's stream, sequence number `round`, timestamp `round * timestamp_step`,
/// the marker bit on the first frame (the start of a talkspurt, as phones send it).
pub fn write_audio_packet(
    buf: &mut [u8],
    payload_type: u8,
    call: u32,
    direction: Direction,
    round: u64,
    timestamp_step: u32,
    payload: &[u8],
) -> usize {
    let marker = if round == 0 { 0x80 } else { 0 };
    buf[0] = 0x80;
    buf[1] = marker | (payload_type & 0x7f);
    buf[2..4].copy_from_slice(&(round as u16).to_be_bytes());
    buf[4..8].copy_from_slice(&((round as u32).wrapping_mul(timestamp_step)).to_be_bytes());
    buf[8..12].copy_from_slice(&ssrc(call, direction).to_be_bytes());
    let len = payload.len().min(buf.len() - 12);
    buf[12..12 + len].copy_from_slice(&payload[..len]);
    12 + len
}

/// Reads the measurement fields of a received packet; `None` for anything that is not
/// a whole packet of ours.
pub fn read_packet(packet: &[u8]) -> Option<Stamp> {
    if packet.len() != PACKET_LEN || packet[0] >> 6 != 2 {
        return None;
    }
    let payload = &packet[12..];
    if payload[0..4] != MAGIC {
        return None;
    }
    let direction = match payload[8] {
        0 => Direction::AToB,
        1 => Direction::BToA,
        _ => return None,
    };
    Some(Stamp {
        call: u32::from_be_bytes(payload[4..8].try_into().ok()?),
        direction,
        seq: u32::from_be_bytes(payload[12..16].try_into().ok()?),
        sent_ns: u64::from_be_bytes(payload[16..24].try_into().ok()?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packet_reads_back_what_was_written() {
        let stamp = Stamp {
            call: 1499,
            direction: Direction::BToA,
            seq: 70_000,
            sent_ns: 12_345_678_901,
        };
        let mut buf = [0u8; PACKET_LEN];
        write_packet(&mut buf, &stamp);
        assert_eq!(read_packet(&buf), Some(stamp));
        // The RTP header is a valid PCMU header whose sequence wraps at 16 bits.
        assert_eq!(buf[0], 0x80);
        assert_eq!(buf[1], 0);
        assert_eq!(
            u16::from_be_bytes([buf[2], buf[3]]),
            (70_000u32 % 65_536) as u16
        );
        assert_eq!(
            u32::from_be_bytes(buf[4..8].try_into().unwrap()),
            70_000 * 160
        );
        assert!(buf[12 + 24..].iter().all(|&b| b == SILENCE));
    }

    #[test]
    fn an_audio_packet_is_plain_rtp_of_its_codec_and_clock() {
        let mut buf = [0u8; 1500];
        let payload = [7u8; 61];
        let len = write_audio_packet(&mut buf, 96, 3, Direction::BToA, 0, 960, &payload);
        let (header, body) = switchboard::media::rtp::parse(&buf[..len]).unwrap();
        assert_eq!(body, payload);
        assert!(header.marker, "the first frame starts a talkspurt");
        assert_eq!(
            (header.payload_type, header.seq, header.timestamp),
            (96, 0, 0)
        );
        let len = write_audio_packet(&mut buf, 9, 3, Direction::BToA, 70_001, 160, &payload);
        let (header, _) = switchboard::media::rtp::parse(&buf[..len]).unwrap();
        assert!(!header.marker);
        assert_eq!(header.payload_type, 9);
        assert_eq!(header.seq, (70_001u32 % 65_536) as u16);
        assert_eq!(header.timestamp, 70_001 * 160);
        assert_eq!(header.ssrc, ssrc(3, Direction::BToA));
    }

    #[test]
    fn foreign_or_truncated_packets_are_not_read() {
        let mut buf = [0u8; PACKET_LEN];
        write_packet(
            &mut buf,
            &Stamp {
                call: 1,
                direction: Direction::AToB,
                seq: 1,
                sent_ns: 1,
            },
        );
        assert!(read_packet(&buf[..PACKET_LEN - 1]).is_none());
        let mut other = buf;
        other[12] = b'X';
        assert!(read_packet(&other).is_none());
        let mut rtcp_like = buf;
        rtcp_like[0] = 0x40;
        assert!(read_packet(&rtcp_like).is_none());
    }
}
