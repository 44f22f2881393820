//! Offer/answer across a bridge: each leg negotiates on its own (RFC 3264), and the
//! media engine transcodes when the two end up with different codecs.
//!
//! An offer received on one leg is offered on to the other with the offerer's codecs
//! first (in its order, with its payload types and fmtp, so the other phone can pick
//! the same codec and the packets can be relayed untouched), then the rest of ours.
//! When the other phone answers, the offerer is answered with the codec that phone
//! picked if the offerer offered it (the relay path), else with the offerer's own
//! favourite among ours (the transcoding path). Neither leg is refused for want of a
//! common codec any more.

use super::codec::{Codec, Format, supported_subset};
use super::model::{Attribute, Direction, Sdp};
use super::offer_answer::{OriginState, answer_sections};
use std::net::IpAddr;

/// The offer to send on the other leg for `offer` received on one leg, with `ours`
/// the codecs switchboard handles on that leg (preference order; telephone-event
/// included when DTMF events are wanted). Audio sections offer the offerer's codecs
/// that are ours, then the rest of ours (even when it had none of them: the call can
/// transcode from whatever the offerer's own leg negotiates); other sections are
/// rejected in place (port 0). `None` without an audio section. Addresses, ports and
/// o= are written afterwards by [`super::rewrite_for_leg`].
pub fn offer_across(offer: &Sdp, ours: &[Codec]) -> Option<Sdp> {
    let mut out = offer.clone();
    for media in out.media.iter_mut().filter(|m| !m.is_rejected()) {
        if !media.is_rtp() || media.kind != "audio" {
            media.port = 0;
            continue;
        }
        let mut formats = supported_subset(media, ours);
        for codec in ours {
            if formats.iter().any(|f| f.codec.same_codec(codec)) {
                continue;
            }
            let Some(payload_type) = free_payload_type(&formats, codec) else {
                continue;
            };
            formats.push(Format {
                payload_type,
                codec: codec.clone(),
            });
        }
        media.set_formats(&formats);
    }
    out.media.iter().any(|m| !m.is_rejected()).then_some(out)
}

/// Makes an offer that holds the other phone with `inactive` a `sendonly` one:
/// switchboard plays hold music to the held phone, which must then expect media.
pub fn hold_with_music(offer: &mut Sdp) {
    for index in 0..offer.media.len() {
        if offer.direction(index) != Some(Direction::Inactive) {
            continue;
        }
        let media = &mut offer.media[index];
        media
            .attributes
            .retain(|a| !matches!(a, Attribute::Direction(_)));
        media
            .attributes
            .push(Attribute::Direction(Direction::SendOnly));
    }
    offer
        .attributes
        .retain(|a| !matches!(a, Attribute::Direction(_)));
}

/// A payload type for `codec` not used by `taken`: its static number (RFC 3551) if
/// it has one and that is free, else the lowest free dynamic one.
fn free_payload_type(taken: &[Format], codec: &Codec) -> Option<u8> {
    let free = |pt: u8| !taken.iter().any(|f| f.payload_type == pt);
    let fixed = super::codec::offer_formats(std::slice::from_ref(codec))
        .first()
        .map(|f| f.payload_type)
        .filter(|&pt| pt < 96);
    match fixed {
        Some(pt) if free(pt) => Some(pt),
        Some(_) => None,
        None => (96..=127u8).find(|&pt| free(pt)),
    }
}

/// The answer for the leg that sent `offer`, once the other leg answered
/// `other_answer` to our [`offer_across`] of it. Each section is answered with the
/// codec the other phone chose when `offer` has it, else with the first of `ours` that
/// `offer` has (the call then transcodes), plus telephone-event when both `offer` and
/// `ours` have it. The direction is the other phone's (hold passes through) as far as
/// the offer allows; a section the other phone rejected is rejected here too.
pub fn answer_across(
    offer: &Sdp,
    other_answer: &Sdp,
    ours: &[Codec],
    our_addr: IpAddr,
    ports: &[u16],
    origin: &mut OriginState,
) -> Sdp {
    let mut out = answer_codecs(offer, other_answer, ours);
    for (index, media) in out.media.iter_mut().enumerate() {
        if media.is_rejected() {
            continue;
        }
        // The other phone's direction, within what this leg's offer allows.
        let theirs = other_answer.direction(index).unwrap_or(Direction::SendRecv);
        let allowed = offer
            .direction(index)
            .unwrap_or(Direction::SendRecv)
            .answer();
        let direction = Direction::from_flags(
            theirs.sends() && allowed.sends(),
            theirs.receives() && allowed.receives(),
        );
        media
            .attributes
            .retain(|a| !matches!(a, Attribute::Direction(_)));
        media.attributes.push(Attribute::Direction(direction));
    }
    let ports: Vec<u16> = ports
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            let rejected = other_answer.media.get(i).is_none_or(|m| m.is_rejected());
            if rejected { 0 } else { p }
        })
        .collect();
    super::rewrite_for_leg(&out, our_addr, &ports, origin)
}

/// The answer to `offer` with the codec list [`answer_across`] picks for its audio
/// stream (section 0; switchboard relays one stream, the others are rejected).
fn answer_codecs(offer: &Sdp, other_answer: &Sdp, ours: &[Codec]) -> Sdp {
    let Some(media) = offer.media.first() else {
        return answer_sections(offer, ours);
    };
    let chosen = other_answer
        .media
        .first()
        .filter(|m| !m.is_rejected())
        .and_then(|m| m.codecs().into_iter().find(|f| f.codec.carries_media()))
        .map(|f| f.codec);
    let offered = media.codecs();
    let has = |c: &Codec| offered.iter().any(|f| f.codec.same_codec(c));
    let codec = chosen.filter(|c| has(c)).or_else(|| {
        supported_subset(media, ours)
            .into_iter()
            .map(|f| f.codec)
            .find(Codec::carries_media)
    });
    let Some(codec) = codec else {
        return answer_sections(offer, &[]);
    };
    // Our own fmtp for the codec where we list it.
    let codec = ours
        .iter()
        .find(|c| c.same_codec(&codec))
        .cloned()
        .unwrap_or(codec);
    let mut wanted = vec![codec];
    wanted.extend(ours.iter().filter(|c| c.is_telephone_event()).cloned());
    answer_sections(offer, &wanted)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use std::net::Ipv4Addr;

    const OUR: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1));

    fn ours() -> Vec<Codec> {
        vec![
            Codec::new("PCMU", 8000, 1),
            Codec::new("PCMA", 8000, 1),
            Codec::new("G722", 8000, 1),
            Codec::new("opus", 48000, 2),
            Codec::new("telephone-event", 8000, 1).with_fmtp("0-16"),
        ]
    }

    fn names(sdp: &Sdp) -> Vec<(u8, String)> {
        sdp.media[0]
            .codecs()
            .into_iter()
            .map(|f| (f.payload_type, f.codec.name))
            .collect()
    }

    fn parse(text: &str) -> Sdp {
        Sdp::parse(text.replace('\n', "\r\n").as_bytes()).unwrap()
    }

    fn offer_of(formats: &str, rtpmaps: &str) -> Sdp {
        parse(&format!(
            "v=0\no=a 1 1 IN IP4 192.0.2.10\ns=-\nc=IN IP4 192.0.2.10\nt=0 0\n\
             m=audio 4000 RTP/AVP {formats}\n{rtpmaps}a=sendrecv\n"
        ))
    }

    #[test]
    fn the_offerers_codecs_come_first_then_ours() {
        let offer = offer_of(
            "8 101",
            "a=rtpmap:8 PCMA/8000\na=rtpmap:101 telephone-event/8000\n",
        );
        let across = offer_across(&offer, &ours()).unwrap();
        assert_eq!(
            names(&across),
            [
                (8, "PCMA".into()),
                (101, "telephone-event".into()),
                (0, "PCMU".into()),
                (9, "G722".into()),
                (96, "opus".into()),
            ]
        );
    }

    #[test]
    fn codecs_we_cannot_handle_are_left_out_and_payload_types_never_collide() {
        let sdp = sdp(BARESIP_OFFER);
        let across = offer_across(&sdp, &ours()).unwrap();
        // baresip offers opus 96, G722 9, PCMU 0, PCMA 8, telephone-event 101 already.
        assert_eq!(
            names(&across),
            [
                (96, "opus".into()),
                (9, "G722".into()),
                (0, "PCMU".into()),
                (8, "PCMA".into()),
                (101, "telephone-event".into()),
            ]
        );
        let gsm = offer_of("3 96", "a=rtpmap:96 opus/48000/2\n");
        let across = offer_across(&gsm, &ours()).unwrap();
        let pts: Vec<u8> = names(&across).iter().map(|(pt, _)| *pt).collect();
        assert_eq!(pts, [96, 0, 8, 9, 97]);
        // Nothing of ours offered: ours alone (the offerer's leg is refused elsewhere).
        let foreign = offer_across(&offer_of("3 18", ""), &ours()).unwrap();
        let pts: Vec<u8> = names(&foreign).iter().map(|(pt, _)| *pt).collect();
        assert_eq!(pts, [0, 8, 9, 96, 97]);
    }

    #[test]
    fn the_offerer_gets_the_other_phones_codec_when_it_offered_it() {
        let offer = offer_of(
            "0 8 101",
            "a=rtpmap:0 PCMU/8000\na=rtpmap:8 PCMA/8000\na=rtpmap:101 telephone-event/8000\n",
        );
        let other = offer_of("8", "a=rtpmap:8 PCMA/8000\n");
        let ans = answer_across(
            &offer,
            &other,
            &ours(),
            OUR,
            &[20000],
            &mut OriginState::new(7),
        );
        assert_eq!(
            names(&ans),
            [(8, "PCMA".into()), (101, "telephone-event".into())]
        );
        assert_eq!(ans.rtp_addr(0), Some("203.0.113.1:20000".parse().unwrap()));
    }

    #[test]
    fn otherwise_the_offerers_own_favourite_and_the_call_transcodes() {
        let offer = offer_of("8 0", "a=rtpmap:8 PCMA/8000\na=rtpmap:0 PCMU/8000\n");
        let other = offer_of("9", "a=rtpmap:9 G722/8000\n");
        let ans = answer_across(
            &offer,
            &other,
            &ours(),
            OUR,
            &[20000],
            &mut OriginState::new(7),
        );
        assert_eq!(names(&ans), [(8, "PCMA".into())]);
    }

    #[test]
    fn an_inactive_hold_becomes_sendonly_for_the_music() {
        let held_text = "v=0\no=a 1 1 IN IP4 192.0.2.10\ns=-\nc=IN IP4 192.0.2.10\nt=0 0\n\
             m=audio 4000 RTP/AVP 0\na=inactive\n";
        let mut held = parse(held_text);
        hold_with_music(&mut held);
        assert_eq!(held.direction(0), Some(Direction::SendOnly));
        // The holder offered inactive, so its answer says inactive, whatever the
        // held phone answered to our sendonly.
        let holder = parse(held_text);
        let other = parse(
            "v=0\no=b 1 1 IN IP4 192.0.2.20\ns=-\nc=IN IP4 192.0.2.20\nt=0 0\n\
             m=audio 5000 RTP/AVP 0\na=recvonly\n",
        );
        let ans = answer_across(
            &holder,
            &other,
            &ours(),
            OUR,
            &[20000],
            &mut OriginState::new(7),
        );
        assert_eq!(ans.direction(0), Some(Direction::Inactive));
    }

    #[test]
    fn hold_and_rejection_come_from_the_other_answer() {
        let offer = offer_of("0", "");
        let mut other = parse(
            "v=0\no=b 1 1 IN IP4 192.0.2.20\ns=-\nc=IN IP4 192.0.2.20\nt=0 0\n\
             m=audio 5000 RTP/AVP 0\na=recvonly\n",
        );
        let ans = answer_across(
            &offer,
            &other,
            &ours(),
            OUR,
            &[20000],
            &mut OriginState::new(7),
        );
        assert_eq!(ans.direction(0), Some(Direction::RecvOnly));
        other.media[0].port = 0;
        let ans = answer_across(
            &offer,
            &other,
            &ours(),
            OUR,
            &[20000],
            &mut OriginState::new(7),
        );
        assert!(ans.media[0].is_rejected());
    }
}
