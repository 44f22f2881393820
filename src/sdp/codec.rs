//! Codecs named by SDP formats, and codec negotiation (RFC 3264 §6.1).

use super::model::{Attribute, Media, Rtpmap};

/// A codec as SDP names it. Two formats carry the same codec when name (any case),
/// clock rate and channel count agree; fmtp parameters don't change identity here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Codec {
    pub name: String,
    pub clock_rate: u32,
    pub channels: u16,
    /// The fmtp parameters the holder of this codec list wants to receive.
    pub fmtp: Option<String>,
}

/// A payload type bound to a codec, as one `m=` format with its rtpmap and fmtp.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Format {
    pub payload_type: u8,
    pub codec: Codec,
}

impl Codec {
    pub fn new(name: &str, clock_rate: u32, channels: u16) -> Codec {
        Codec {
            name: name.to_string(),
            clock_rate,
            channels,
            fmtp: None,
        }
    }

    pub fn with_fmtp(self, fmtp: &str) -> Codec {
        Codec {
            fmtp: Some(fmtp.to_string()),
            ..self
        }
    }

    pub fn same_codec(&self, other: &Codec) -> bool {
        self.name.eq_ignore_ascii_case(&other.name)
            && self.clock_rate == other.clock_rate
            && self.channels == other.channels
    }

    /// RFC 4733 events ride along with a codec; they carry no audio by themselves.
    pub fn is_telephone_event(&self) -> bool {
        self.name.eq_ignore_ascii_case("telephone-event")
    }

    /// True for codecs that carry media, not comfort noise or DTMF events.
    pub fn carries_media(&self) -> bool {
        !self.is_telephone_event() && !self.name.eq_ignore_ascii_case("CN")
    }
}

/// The static audio payload types of RFC 3551 §6 that may appear without an rtpmap.
fn static_payload_type(payload_type: u8) -> Option<Codec> {
    let (name, rate, channels) = match payload_type {
        0 => ("PCMU", 8000, 1),
        3 => ("GSM", 8000, 1),
        4 => ("G723", 8000, 1),
        5 => ("DVI4", 8000, 1),
        6 => ("DVI4", 16000, 1),
        7 => ("LPC", 8000, 1),
        8 => ("PCMA", 8000, 1),
        9 => ("G722", 8000, 1),
        10 => ("L16", 44100, 2),
        11 => ("L16", 44100, 1),
        12 => ("QCELP", 8000, 1),
        13 => ("CN", 8000, 1),
        15 => ("G728", 8000, 1),
        16 => ("DVI4", 11025, 1),
        17 => ("DVI4", 22050, 1),
        18 => ("G729", 8000, 1),
        _ => return None,
    };
    Some(Codec::new(name, rate, channels))
}

impl Media {
    /// The RTP formats of this section with the codec each names (rtpmap, else the
    /// static table), in the section's order; formats naming no known codec are
    /// left out.
    pub fn codecs(&self) -> Vec<Format> {
        if !self.is_rtp() {
            return Vec::new();
        }
        self.formats
            .iter()
            .filter_map(|f| f.parse::<u8>().ok().filter(|pt| *pt < 128))
            .filter_map(|pt| {
                let codec = match self.rtpmap(pt) {
                    Some(m) => Codec {
                        name: m.encoding.clone(),
                        clock_rate: m.clock_rate,
                        channels: m.params.unwrap_or(1),
                        fmtp: None,
                    },
                    None => static_payload_type(pt)?,
                };
                let fmtp = self.fmtp(pt).map(str::to_string);
                Some(Format {
                    payload_type: pt,
                    codec: Codec { fmtp, ..codec },
                })
            })
            .collect()
    }

    /// Makes `formats` the section's format list, replacing its rtpmap and fmtp lines
    /// (written where the first of the old ones was) and keeping other attributes.
    pub fn set_formats(&mut self, formats: &[Format]) {
        let at = self
            .attributes
            .iter()
            .position(|a| matches!(a, Attribute::Rtpmap(_) | Attribute::Fmtp { .. }))
            .unwrap_or(0);
        self.attributes
            .retain(|a| !matches!(a, Attribute::Rtpmap(_) | Attribute::Fmtp { .. }));
        let mut block = Vec::with_capacity(formats.len() * 2);
        for f in formats {
            let c = &f.codec;
            block.push(Attribute::Rtpmap(Rtpmap {
                payload_type: f.payload_type,
                encoding: c.name.clone(),
                clock_rate: c.clock_rate,
                params: (c.channels != 1).then_some(c.channels),
            }));
            if let Some(params) = &c.fmtp {
                block.push(Attribute::Fmtp {
                    payload_type: f.payload_type,
                    params: params.clone(),
                });
            }
        }
        self.formats = formats.iter().map(|f| f.payload_type.to_string()).collect();
        self.attributes.splice(at..at, block);
    }
}

/// The formats an answerer supporting `supported` (its preference order) puts in its
/// answer to `offer`: RFC 3264 §6.1 lets the answer list them in the answerer's order,
/// and keeps the offer's payload type numbers so both sides agree on dynamic ones.
/// Each format carries the answerer's fmtp. Empty when no codec that carries media is
/// common (telephone-event alone doesn't make a stream).
pub fn negotiate(offer: &Media, supported: &[Codec]) -> Vec<Format> {
    let offered = offer.codecs();
    let mut answer: Vec<Format> = Vec::new();
    for wanted in supported {
        let found = offered.iter().find(|f| {
            f.codec.same_codec(wanted) && !answer.iter().any(|a| a.payload_type == f.payload_type)
        });
        if let Some(f) = found {
            let codec = Codec {
                fmtp: wanted.fmtp.clone(),
                ..f.codec.clone()
            };
            answer.push(Format {
                payload_type: f.payload_type,
                codec,
            });
        }
    }
    if !answer.iter().any(|f| f.codec.carries_media()) {
        answer.clear();
    }
    answer
}

/// Payload types for an offer of `supported` (preference order): the RFC 3551 static
/// number where the codec has one, else dynamic numbers from 96 (RFC 3551 §3).
pub fn offer_formats(supported: &[Codec]) -> Vec<Format> {
    let mut dynamic = 96..=127u8;
    supported
        .iter()
        .filter_map(|codec| {
            let payload_type = (0..96u8)
                .find(|&pt| static_payload_type(pt).is_some_and(|c| c.same_codec(codec)))
                .or_else(|| dynamic.next())?;
            Some(Format {
                payload_type,
                codec: codec.clone(),
            })
        })
        .collect()
}

/// The formats of `offer` whose codec is in `supported`, in the offerer's order and
/// with its fmtp: what may be offered on to a leg when only `supported` can be carried.
/// Empty when none of them carries media.
pub fn supported_subset(offer: &Media, supported: &[Codec]) -> Vec<Format> {
    let kept: Vec<Format> = offer
        .codecs()
        .into_iter()
        .filter(|f| supported.iter().any(|s| s.same_codec(&f.codec)))
        .collect();
    if kept.iter().any(|f| f.codec.carries_media()) {
        kept
    } else {
        Vec::new()
    }
}

/// Whether two media sections have a codec that carries media in common; when two
/// legs don't, the call can't be bridged without transcoding (488 until then).
pub fn shares_codec(a: &Media, b: &Media) -> bool {
    let theirs = b.codecs();
    a.codecs()
        .iter()
        .filter(|f| f.codec.carries_media())
        .any(|f| theirs.iter().any(|t| t.codec.same_codec(&f.codec)))
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    fn pts(formats: &[Format]) -> Vec<u8> {
        formats.iter().map(|f| f.payload_type).collect()
    }

    fn pcmu() -> Codec {
        Codec::new("PCMU", 8000, 1)
    }

    fn dtmf() -> Codec {
        Codec::new("telephone-event", 8000, 1).with_fmtp("0-16")
    }

    #[test]
    fn codecs_come_from_rtpmap_or_the_static_table() {
        let offer = sdp(BARESIP_OFFER);
        let codecs = offer.media[0].codecs();
        assert_eq!(pts(&codecs), [96, 9, 0, 8, 101]);
        assert_eq!(
            codecs[0].codec,
            Codec::new("opus", 48000, 2).with_fmtp("stereo=1;sprop-stereo=1")
        );
        assert_eq!(
            codecs[4].codec,
            Codec::new("telephone-event", 8000, 1).with_fmtp("0-15")
        );
        let old = sdp(b"v=0\r\no=- 1 1 IN IP4 h\r\nm=audio 1 RTP/AVP 18 8 99 x\r\n");
        let codecs = old.media[0].codecs();
        assert_eq!(
            pts(&codecs),
            [18, 8],
            "99 has no rtpmap, x is no payload type"
        );
        assert_eq!(codecs[0].codec, Codec::new("G729", 8000, 1));
        let t38 = sdp(b"v=0\r\no=- 1 1 IN IP4 h\r\nm=image 1 udptl t38\r\n");
        assert!(t38.media[0].codecs().is_empty());
    }

    #[test]
    fn answer_follows_the_answerers_order_and_keeps_offered_numbers() {
        let offer = sdp(BARESIP_OFFER);
        let supported = [
            Codec::new("PCMA", 8000, 1),
            Codec::new("OPUS", 48000, 2).with_fmtp("useinbandfec=1"),
            pcmu(),
            dtmf(),
        ];
        let answer = negotiate(&offer.media[0], &supported);
        assert_eq!(pts(&answer), [8, 96, 0, 101]);
        assert_eq!(
            answer[1].codec,
            Codec::new("opus", 48000, 2).with_fmtp("useinbandfec=1")
        );
        assert_eq!(answer[3].codec, dtmf());
    }

    #[test]
    fn dynamic_numbers_differ_between_offer_and_answerer() {
        // The answerer knows telephone-event as 101 elsewhere; the offer's 97 is used.
        let offer = sdp(b"v=0\r\no=- 1 1 IN IP4 h\r\nm=audio 1 RTP/AVP 0 97\r\na=rtpmap:97 telephone-event/8000\r\n");
        assert_eq!(pts(&negotiate(&offer.media[0], &[pcmu(), dtmf()])), [0, 97]);
        // Without events on the answerer side they are dropped.
        assert_eq!(pts(&negotiate(&offer.media[0], &[pcmu()])), [0]);
    }

    #[test]
    fn no_common_codec_gives_nothing() {
        let offer = sdp(SIPP_UAC);
        assert!(negotiate(&offer.media[0], &[Codec::new("PCMA", 8000, 1), dtmf()]).is_empty());
        // Telephone-event alone is no stream.
        let events_only =
            sdp(b"v=0\r\no=- 1 1 IN IP4 h\r\nm=audio 1 RTP/AVP 8 101\r\na=rtpmap:101 telephone-event/8000\r\n");
        assert!(negotiate(&events_only.media[0], &[pcmu(), dtmf()]).is_empty());
        // Same name at another clock rate is another codec.
        assert!(negotiate(&offer.media[0], &[Codec::new("PCMU", 16000, 1)]).is_empty());
    }

    #[test]
    fn legs_sharing_a_codec() {
        let baresip = sdp(BARESIP_OFFER);
        let sipp = sdp(SIPP_UAC);
        let pcma_only = sdp(HOLD_OLD_STYLE);
        let pcmu_events = sdp(HOLD_SENDONLY);
        assert!(shares_codec(&baresip.media[0], &sipp.media[0]));
        assert!(shares_codec(&sipp.media[0], &baresip.media[0]));
        assert!(shares_codec(&baresip.media[0], &pcma_only.media[0]));
        assert!(!shares_codec(&sipp.media[0], &pcma_only.media[0]));
        // Both have telephone-event, but it carries no audio.
        let g729_events =
            sdp(b"v=0\r\no=- 1 1 IN IP4 h\r\nm=audio 1 RTP/AVP 18 101\r\na=rtpmap:101 telephone-event/8000\r\n");
        assert!(!shares_codec(&pcmu_events.media[0], &g729_events.media[0]));
    }

    #[test]
    fn set_formats_replaces_rtpmap_and_fmtp_in_place() {
        let mut offer = sdp(BARESIP_OFFER);
        let media = &mut offer.media[0];
        let answer = negotiate(media, &[pcmu(), dtmf()]);
        media.set_formats(&answer);
        assert_eq!(media.formats, ["0", "101"]);
        let names: Vec<String> = media.attributes.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            names,
            [
                "rtpmap:0 PCMU/8000",
                "rtpmap:101 telephone-event/8000",
                "fmtp:101 0-16",
                "rtcp-rsize",
                "sendrecv",
                "label:1",
                "ssrc:3425617405 cname:a1b2c3d4-e5f6",
                "ptime:20"
            ]
        );
    }
}
