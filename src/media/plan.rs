//! Which path each direction of a call's media takes: relayed packets or decoded
//! frames. Chosen from what each leg negotiated, again whenever a leg's SDP changes.
//!
//! Two legs that ended up with the same codec are joined directly: packets are relayed
//! with only the payload type renumbered where the legs numbered it differently (the
//! fast path, no decoding). Otherwise the direction transcodes: its packets are
//! decoded, resampled and encoded for the other leg (see [`super::transcode`]).

use super::codec::CodecKind;
use crate::sdp::{Format, Sdp};

/// A payload type negotiated for a codec switchboard can decode and encode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AudioFormat {
    pub payload_type: u8,
    pub kind: CodecKind,
}

/// RFC 4733 telephone-events negotiated on a leg.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventFormat {
    /// The payload type the leg's phone expects (from its SDP).
    pub send: u8,
    /// The payload type it was told to send (from our SDP to it).
    pub receive: u8,
    pub clock: u32,
}

/// What one leg negotiated, seen from switchboard.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LegFormats {
    /// Codecs both sides listed, in the phone's order, with the payload type the phone
    /// wants to receive each with. The first is what we send it.
    pub accepts: Vec<AudioFormat>,
    /// Payload types the phone may send us, by either side's numbering.
    pub receives: Vec<AudioFormat>,
    pub events: Option<EventFormat>,
}

impl LegFormats {
    /// From our latest description to the leg and its latest one to us (offer and
    /// answer in either order). Media section 0 is the relayed stream.
    pub fn negotiated(ours: &Sdp, theirs: &Sdp) -> LegFormats {
        let (Some(ours), Some(theirs)) = (ours.media.first(), theirs.media.first()) else {
            return LegFormats::default();
        };
        if ours.is_rejected() || theirs.is_rejected() {
            return LegFormats::default();
        }
        let (ours, theirs) = (ours.codecs(), theirs.codecs());
        let in_both =
            |f: &&Format, other: &[Format]| other.iter().any(|o| o.codec.same_codec(&f.codec));
        let audio = |f: &Format| {
            let kind = CodecKind::from_sdp(&f.codec.name, f.codec.clock_rate, f.codec.channels)?;
            Some(AudioFormat {
                payload_type: f.payload_type,
                kind,
            })
        };
        let accepts: Vec<AudioFormat> = theirs
            .iter()
            .filter(|f| in_both(f, &ours))
            .filter_map(audio)
            .collect();
        let mut receives: Vec<AudioFormat> = ours
            .iter()
            .filter(|f| in_both(f, &theirs))
            .filter_map(audio)
            .collect();
        for f in &accepts {
            if !receives.iter().any(|r| r.payload_type == f.payload_type) {
                receives.push(*f);
            }
        }
        let event = |list: &[Format]| {
            list.iter()
                .find(|f| f.codec.is_telephone_event())
                .map(|f| (f.payload_type, f.codec.clock_rate))
        };
        let events = match (event(&ours), event(&theirs)) {
            (Some((receive, _)), Some((send, clock))) => Some(EventFormat {
                send,
                receive,
                clock,
            }),
            _ => None,
        };
        LegFormats {
            accepts,
            receives,
            events,
        }
    }

    /// The codec switchboard sends this leg.
    pub fn send(&self) -> Option<AudioFormat> {
        self.accepts.first().copied()
    }
}

/// Payload type renumbering for a relayed direction: the number to write for each
/// incoming one, or the same number where nothing changes (so packets of formats the
/// plan does not know, comfort noise say, pass as they came).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayloadMap {
    map: [u8; 128],
}

impl PayloadMap {
    pub fn identity() -> PayloadMap {
        let mut map = [0u8; 128];
        for (i, slot) in map.iter_mut().enumerate() {
            *slot = i as u8;
        }
        PayloadMap { map }
    }

    pub fn get(&self, payload_type: u8) -> u8 {
        self.map[usize::from(payload_type & 0x7f)]
    }

    pub fn is_identity(&self) -> bool {
        *self == PayloadMap::identity()
    }
}

/// How one direction (from one leg's phone to the other's) carries audio.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirectionPlan {
    /// Packets relayed with payload types renumbered; `clock` is the codec's RTP
    /// clock (for jitter figures).
    Relay { map: PayloadMap, clock: u32 },
    /// Packets decoded and encoded again for the receiving leg.
    Transcode {
        from: LegFormats,
        to: AudioFormat,
        /// Telephone-events towards the receiving leg, when it takes them.
        events: Option<EventFormat>,
    },
}

impl DirectionPlan {
    /// The path from the leg that negotiated `from` to the one that negotiated `to`.
    /// `None` while either has no codec yet (the relay then passes packets as they are).
    pub fn between(from: &LegFormats, to: &LegFormats) -> Option<DirectionPlan> {
        let (sent, wanted) = (from.send()?, to.send()?);
        if sent.kind != wanted.kind {
            return Some(DirectionPlan::Transcode {
                from: from.clone(),
                to: wanted,
                events: to.events,
            });
        }
        let mut map = PayloadMap::identity();
        for f in &from.receives {
            if let Some(out) = to.accepts.iter().find(|t| t.kind == f.kind) {
                map.map[usize::from(f.payload_type)] = out.payload_type;
            }
        }
        if let (Some(a), Some(b)) = (from.events, to.events)
            && a.clock == b.clock
        {
            map.map[usize::from(a.receive)] = b.send;
        }
        Some(DirectionPlan::Relay {
            map,
            clock: sent.kind.rtp_clock(),
        })
    }

    /// The RTP clock of what arrives on this direction.
    pub fn clock(&self) -> u32 {
        match self {
            DirectionPlan::Relay { clock, .. } => *clock,
            DirectionPlan::Transcode { from, .. } => {
                from.send().map_or(8000, |f| f.kind.rtp_clock())
            }
        }
    }

    pub fn is_transcoding(&self) -> bool {
        matches!(self, DirectionPlan::Transcode { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sdp(formats: &str, rtpmaps: &str) -> Sdp {
        let text = format!(
            "v=0\r\no=a 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
             m=audio 4000 RTP/AVP {formats}\r\n{rtpmaps}"
        );
        Sdp::parse(text.as_bytes()).unwrap()
    }

    fn leg(ours: &Sdp, theirs: &Sdp) -> LegFormats {
        LegFormats::negotiated(ours, theirs)
    }

    #[test]
    fn the_phones_order_decides_what_it_is_sent() {
        let ours = sdp("0 8 9", "");
        let theirs = sdp("8 0", "");
        let f = leg(&ours, &theirs);
        assert_eq!(
            f.send(),
            Some(AudioFormat {
                payload_type: 8,
                kind: CodecKind::Pcma
            })
        );
        assert_eq!(f.receives.len(), 2);
        assert_eq!(f.events, None);
    }

    #[test]
    fn same_codec_relays_with_payload_types_renumbered() {
        let a_ours = sdp(
            "111 101",
            "a=rtpmap:111 opus/48000/2\r\na=rtpmap:101 telephone-event/48000\r\n",
        );
        let b_ours = sdp(
            "96 100",
            "a=rtpmap:96 opus/48000/2\r\na=rtpmap:100 telephone-event/48000\r\n",
        );
        let (a, b) = (leg(&a_ours, &a_ours), leg(&b_ours, &b_ours));
        let Some(DirectionPlan::Relay { map, clock: 48000 }) = DirectionPlan::between(&a, &b)
        else {
            panic!("expected a relay");
        };
        assert_eq!((map.get(111), map.get(101), map.get(13)), (96, 100, 13));
        let same = sdp("0", "");
        let c = leg(&same, &same);
        let Some(DirectionPlan::Relay { map, clock: 8000 }) = DirectionPlan::between(&c, &c) else {
            panic!("expected a relay");
        };
        assert!(map.is_identity());
    }

    #[test]
    fn different_codecs_transcode_and_take_the_receivers_events() {
        let a = leg(&sdp("0", ""), &sdp("0", ""));
        let b_sdp = sdp("9 101", "a=rtpmap:101 telephone-event/8000\r\n");
        let b = leg(&b_sdp, &b_sdp);
        let plan = DirectionPlan::between(&a, &b).unwrap();
        assert!(plan.is_transcoding());
        let DirectionPlan::Transcode { to, events, .. } = plan else {
            unreachable!()
        };
        assert_eq!(to.kind, CodecKind::G722);
        assert_eq!(
            events,
            Some(EventFormat {
                send: 101,
                receive: 101,
                clock: 8000
            })
        );
        assert_eq!(DirectionPlan::between(&a, &LegFormats::default()), None);
    }
}
