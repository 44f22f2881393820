//! Offer/answer for a B2BUA that terminates both legs (RFC 3264): each leg sees
//! switchboard's address and ports, switchboard's own o= line, and explicit
//! directions.

use super::codec::{Codec, negotiate, offer_formats, supported_subset};
use super::model::{Address, Attribute, Connection, Direction, Line, Media, Origin, Sdp};
use std::net::IpAddr;

/// The o= line switchboard writes on one leg. RFC 3264 §8 (and §5 for the first
/// offer) wants one session id per leg for the dialog's lifetime and a version that
/// grows by one exactly when the description changes, so the last one sent is kept.
#[derive(Clone, Debug)]
pub struct OriginState {
    session_id: u64,
    version: u64,
    last_sent: Option<Sdp>,
}

impl OriginState {
    /// `session_id` should be random per leg (RFC 8866 §5.2 suggests an NTP time);
    /// the caller picks it so this module stays deterministic.
    pub fn new(session_id: u64) -> OriginState {
        OriginState {
            session_id,
            version: 1,
            last_sent: None,
        }
    }

    /// Writes our o= into `sdp`, bumping the version if anything differs from the
    /// description sent last on this leg.
    fn stamp(&mut self, sdp: &mut Sdp, our_addr: IpAddr) {
        sdp.origin = self.origin(our_addr);
        if let Some(last) = &self.last_sent
            && last != sdp
        {
            self.version += 1;
            sdp.origin = self.origin(our_addr);
        }
        self.last_sent = Some(sdp.clone());
    }

    /// The description sent last on this leg, o= line included: offered again as
    /// is, it changes nothing (RFC 3264 §8), as a session refresh by re-INVITE needs.
    pub fn last_sent(&self) -> Option<&Sdp> {
        self.last_sent.as_ref()
    }

    fn origin(&self, our_addr: IpAddr) -> Origin {
        Origin {
            username: "switchboard".to_string(),
            session_id: self.session_id.to_string(),
            session_version: self.version.to_string(),
            address: Address::Ip(our_addr),
        }
    }
}

/// ICE attributes describe the other leg's candidates; with switchboard relaying
/// every packet they would steer the phone around the relay.
fn is_ice_attribute(a: &Attribute) -> bool {
    let name = a.name();
    name.starts_with("ice-")
        || matches!(
            name,
            "candidate" | "remote-candidates" | "end-of-candidates"
        )
}

/// The description to send on a leg, derived from `sdp` (the other leg's offer or
/// answer): switchboard's `our_addr` in c= and o=, `ports[i]` as media section i's
/// RTP port (its RTCP port being the next one), a=rtcp pointing there, each section's
/// direction written explicitly (session-level direction and RFC 2543 `c=0.0.0.0`
/// hold are folded into it, since our c= is never 0.0.0.0), ICE attributes removed.
/// Sections rejected in `sdp` (port 0), or without an entry in `ports`, get port 0,
/// keeping their place.
pub fn rewrite_for_leg(
    sdp: &Sdp,
    our_addr: IpAddr,
    ports: &[u16],
    origin: &mut OriginState,
) -> Sdp {
    let mut out = sdp.clone();
    for (index, media) in out.media.iter_mut().enumerate() {
        let direction = sdp.direction(index).unwrap_or(Direction::SendRecv);
        let port = match ports.get(index) {
            Some(&port) if !media.is_rejected() => port,
            _ => 0,
        };
        rewrite_media(media, port, direction);
    }
    out.connection = Some(Connection::ip(our_addr));
    out.attributes
        .retain(|a| !matches!(a, Attribute::Direction(_)) && !is_ice_attribute(a));
    origin.stamp(&mut out, our_addr);
    out
}

fn rewrite_media(media: &mut Media, port: u16, direction: Direction) {
    media.port = port;
    media.port_count = None;
    media.connection = None;
    media.attributes.retain(|a| !is_ice_attribute(a));
    if port == 0 {
        return;
    }
    let mut wrote_direction = false;
    for a in &mut media.attributes {
        match a {
            Attribute::Rtcp {
                port: rtcp,
                connection,
            } => {
                *rtcp = port.saturating_add(1);
                *connection = None;
            }
            Attribute::Direction(d) => {
                *d = direction;
                wrote_direction = true;
            }
            _ => {}
        }
    }
    if !wrote_direction {
        media.attributes.push(Attribute::Direction(direction));
    }
}

/// The answer switchboard itself gives to `offer` on a leg where it terminates
/// media with the codecs in `supported` (preference order). Each offered section is
/// answered in place: with the negotiated formats and the answering direction, or
/// rejected with port 0 (RFC 3264 §6) when the offer rejected it or no codec is
/// common. Addresses, ports and o= are written as by [`rewrite_for_leg`].
pub fn answer(
    offer: &Sdp,
    supported: &[Codec],
    our_addr: IpAddr,
    ports: &[u16],
    origin: &mut OriginState,
) -> Sdp {
    rewrite_for_leg(&answer_sections(offer, supported), our_addr, ports, origin)
}

/// [`answer`] before addresses, ports and o= are written.
pub(super) fn answer_sections(offer: &Sdp, supported: &[Codec]) -> Sdp {
    let mut out = offer.clone();
    out.session_name = "-".to_string();
    out.lines.retain(|l| l.kind == 't');
    out.connection = None;
    out.attributes.clear();
    for (index, media) in out.media.iter_mut().enumerate() {
        let formats = if media.is_rejected() {
            Vec::new()
        } else {
            negotiate(media, supported)
        };
        media.lines.clear();
        media.connection = None;
        media.attributes.clear();
        if formats.is_empty() {
            media.port = 0;
            continue;
        }
        media.set_formats(&formats);
        let direction = offer
            .direction(index)
            .unwrap_or(Direction::SendRecv)
            .answer();
        media.attributes.push(Attribute::Direction(direction));
    }
    out
}

/// `offer`, received on one leg, cut down to an offer switchboard can make on the
/// other when it relays only `supported` codecs (a late offer: the callee's 2xx offer
/// goes on to the caller). RTP sections keep the offered formats of supported codecs,
/// in the offerer's order with its fmtp, so any answer to the result also answers
/// `offer`; other sections, and those left without a codec that carries media, are
/// rejected in place (port 0). `None` when no section is left. Addresses, ports and
/// o= are then written by [`rewrite_for_leg`].
pub fn restrict_offer(offer: &Sdp, supported: &[Codec]) -> Option<Sdp> {
    let mut out = offer.clone();
    for media in out.media.iter_mut().filter(|m| !m.is_rejected()) {
        let formats = supported_subset(media, supported);
        if formats.is_empty() {
            media.port = 0;
        } else {
            media.set_formats(&formats);
        }
    }
    out.media.iter().any(|m| !m.is_rejected()).then_some(out)
}

/// Switchboard's own offer on a leg where it terminates media: one sendrecv audio
/// stream of the `supported` codecs at `our_addr`:`port`. Used when the dialplan
/// answers a call whose INVITE had no offer, so our 2xx must carry one.
pub fn own_offer(
    supported: &[Codec],
    our_addr: IpAddr,
    port: u16,
    origin: &mut OriginState,
) -> Sdp {
    let mut media = Media {
        kind: "audio".to_string(),
        port,
        port_count: None,
        proto: "RTP/AVP".to_string(),
        formats: Vec::new(),
        lines: Vec::new(),
        connection: None,
        attributes: vec![Attribute::Direction(Direction::SendRecv)],
    };
    media.set_formats(&offer_formats(supported));
    let sdp = Sdp {
        origin: origin.origin(our_addr),
        session_name: "-".to_string(),
        lines: vec![Line {
            kind: 't',
            value: "0 0".to_string(),
        }],
        connection: None,
        attributes: Vec::new(),
        media: vec![media],
    };
    rewrite_for_leg(&sdp, our_addr, &[port], origin)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use std::net::Ipv4Addr;

    const OUR: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1));

    fn text(sdp: &Sdp) -> String {
        sdp.to_string().replace("\r\n", "\n")
    }

    #[test]
    fn rewrites_address_ports_and_origin() {
        let out = rewrite_for_leg(&sdp(SIPP_UAC), OUR, &[20000], &mut OriginState::new(42));
        assert_eq!(
            text(&out),
            "v=0\no=switchboard 42 1 IN IP4 203.0.113.1\ns=-\nc=IN IP4 203.0.113.1\nt=0 0\n\
             m=audio 20000 RTP/AVP 0\na=rtpmap:0 PCMU/8000\na=sendrecv\n"
        );
    }

    #[test]
    fn rtcp_attribute_follows_our_port_and_direction_is_kept() {
        let out = rewrite_for_leg(&sdp(HOLD_SENDONLY), OUR, &[20010], &mut OriginState::new(1));
        assert_eq!(out.media[0].port, 20010);
        assert_eq!(out.rtcp_addr(0), Some("203.0.113.1:20011".parse().unwrap()));
        assert_eq!(out.direction(0), Some(Direction::SendOnly));
        assert!(out.to_string().ends_with("a=rtcp:20011\r\na=sendonly\r\n"));
    }

    #[test]
    fn old_style_hold_becomes_an_explicit_sendonly() {
        let out = rewrite_for_leg(
            &sdp(HOLD_OLD_STYLE),
            OUR,
            &[20000],
            &mut OriginState::new(1),
        );
        assert_eq!(out.connection, Some(Connection::ip(OUR)));
        assert_eq!(out.direction(0), Some(Direction::SendOnly));
        assert_eq!(
            out.media[0].attributes.last(),
            Some(&Attribute::Direction(Direction::SendOnly))
        );
    }

    #[test]
    fn ipv6_leg_rewritten_for_an_ipv4_leg_and_media_level_c_dropped() {
        for message in [RFC5118_IPV6_IN_SDP, RFC5118_MULT_IP_IN_SDP] {
            let out = rewrite_for_leg(
                &sdp(body(message)),
                OUR,
                &[20000, 20002],
                &mut OriginState::new(7),
            );
            assert_eq!(out.origin.address, Address::Ip(OUR));
            assert_eq!(out.rtp_addr(0), Some("203.0.113.1:20000".parse().unwrap()));
            assert_eq!(out.rtp_addr(1), Some("203.0.113.1:20002".parse().unwrap()));
            assert!(out.media.iter().all(|m| m.connection.is_none()));
            assert!(!out.to_string().contains("IP6"));
        }
        let v6: IpAddr = "2001:db8::99".parse().unwrap();
        let out = rewrite_for_leg(&sdp(SIPP_UAC), v6, &[20000], &mut OriginState::new(7));
        assert!(
            out.to_string().contains(
                "o=switchboard 7 1 IN IP6 2001:db8::99\r\ns=-\r\nc=IN IP6 2001:db8::99\r\n"
            )
        );
    }

    #[test]
    fn rejected_streams_stay_rejected_in_place() {
        let out = rewrite_for_leg(
            &sdp(TWO_STREAMS_LF),
            OUR,
            &[20000, 20002],
            &mut OriginState::new(1),
        );
        assert_eq!(
            out.media.iter().map(|m| m.port).collect::<Vec<_>>(),
            [20000, 0]
        );
        assert_eq!(out.media[1].kind, "video");
        // The session-level inactive moved onto the active section.
        assert!(out.attributes.is_empty());
        assert_eq!(out.direction(0), Some(Direction::Inactive));
        // A section without a port of ours is rejected.
        let out = rewrite_for_leg(
            &sdp(body(RFC5118_IPV6_IN_SDP)),
            OUR,
            &[20000],
            &mut OriginState::new(1),
        );
        assert_eq!(
            out.media.iter().map(|m| m.port).collect::<Vec<_>>(),
            [20000, 0]
        );
    }

    #[test]
    fn ice_attributes_are_removed() {
        let offer = sdp(
            b"v=0\r\no=- 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n\
            a=ice-lite\r\na=ice-ufrag:abcd\r\nm=audio 4000/2 RTP/AVP 0\r\nc=IN IP4 10.0.0.3\r\n\
            a=ice-pwd:secret\r\na=candidate:1 1 UDP 2130706431 10.0.0.2 4000 typ host\r\n\
            a=end-of-candidates\r\na=rtcp-mux\r\na=recvonly\r\n",
        );
        let out = rewrite_for_leg(&offer, OUR, &[20000], &mut OriginState::new(1));
        assert_eq!(
            text(&out),
            "v=0\no=switchboard 1 1 IN IP4 203.0.113.1\ns=-\nc=IN IP4 203.0.113.1\nt=0 0\n\
             m=audio 20000 RTP/AVP 0\na=rtcp-mux\na=recvonly\n"
        );
    }

    #[test]
    fn origin_version_grows_only_when_the_content_changes() {
        let mut origin = OriginState::new(5);
        let version = |s: &Sdp| s.origin.session_version.clone();
        let first = rewrite_for_leg(&sdp(RESUME), OUR, &[20000], &mut origin);
        assert_eq!(version(&first), "1");
        // A session refresh: the other leg bumped its own version, nothing else changed.
        let mut refreshed = sdp(RESUME);
        refreshed.origin.session_version = "999".into();
        assert_eq!(
            version(&rewrite_for_leg(&refreshed, OUR, &[20000], &mut origin)),
            "1"
        );
        let hold = rewrite_for_leg(&sdp(HOLD_SENDONLY), OUR, &[20000], &mut origin);
        assert_eq!(version(&hold), "2");
        let resumed = rewrite_for_leg(&sdp(RESUME), OUR, &[20000], &mut origin);
        assert_eq!(version(&resumed), "3");
        assert_eq!(resumed.origin.session_id, "5");
        // What a refresh by re-INVITE offers again: the last description, o= and all.
        assert_eq!(origin.last_sent(), Some(&resumed));
        assert_eq!(
            version(&rewrite_for_leg(&sdp(RESUME), OUR, &[20004], &mut origin)),
            "4"
        );
    }

    fn supported() -> [Codec; 2] {
        [
            Codec::new("PCMU", 8000, 1),
            Codec::new("telephone-event", 8000, 1).with_fmtp("0-15"),
        ]
    }

    #[test]
    fn answers_with_negotiated_formats() {
        let out = answer(
            &sdp(BARESIP_OFFER),
            &supported(),
            OUR,
            &[20000],
            &mut OriginState::new(9),
        );
        assert_eq!(
            text(&out),
            "v=0\no=switchboard 9 1 IN IP4 203.0.113.1\ns=-\nc=IN IP4 203.0.113.1\nt=0 0\n\
             m=audio 20000 RTP/AVP 0 101\na=rtpmap:0 PCMU/8000\na=rtpmap:101 telephone-event/8000\n\
             a=fmtp:101 0-15\na=sendrecv\n"
        );
    }

    #[test]
    fn answer_directions_for_hold_offers() {
        let mut origin = OriginState::new(1);
        for (offer, expected) in [
            (HOLD_SENDONLY, Direction::RecvOnly),
            (HOLD_OLD_STYLE, Direction::RecvOnly),
            (RESUME, Direction::SendRecv),
            (TWO_STREAMS_LF, Direction::Inactive),
        ] {
            let pcma = Codec::new("PCMA", 8000, 1);
            let out = answer(
                &sdp(offer),
                &[pcma, Codec::new("PCMU", 8000, 1)],
                OUR,
                &[20000, 20002],
                &mut origin,
            );
            assert_eq!(
                out.direction(0),
                Some(expected),
                "{}",
                String::from_utf8_lossy(offer)
            );
            assert_eq!(out.connection, Some(Connection::ip(OUR)));
        }
    }

    #[test]
    fn answer_rejects_streams_in_place() {
        let out = answer(
            &sdp(TWO_STREAMS_LF),
            &supported(),
            OUR,
            &[20000, 20002],
            &mut OriginState::new(1),
        );
        assert_eq!(
            text(&out),
            "v=0\no=switchboard 1 1 IN IP4 203.0.113.1\ns=-\nc=IN IP4 203.0.113.1\nt=0 0\n\
             m=audio 20000 RTP/AVP 0\na=rtpmap:0 PCMU/8000\na=inactive\nm=video 0 RTP/AVP 31\n"
        );
        // An offered video we have no codec for is rejected, the audio kept.
        let out = answer(
            &sdp(body(RFC5118_IPV6_IN_SDP)),
            &supported(),
            OUR,
            &[20000, 20002],
            &mut OriginState::new(1),
        );
        assert_eq!(
            out.media
                .iter()
                .map(|m| (m.port, m.formats.join(" ")))
                .collect::<Vec<_>>(),
            [(0, "2".to_string()), (0, "107".to_string())]
        );
        let g726 = Codec::new("G726-32", 8000, 1);
        let out = answer(
            &sdp(body(RFC5118_IPV6_IN_SDP)),
            &[g726],
            OUR,
            &[20000, 20002],
            &mut OriginState::new(1),
        );
        assert_eq!(
            out.media.iter().map(|m| m.port).collect::<Vec<_>>(),
            [20000, 0]
        );
    }

    #[test]
    fn restricted_offer_keeps_the_offerers_supported_formats_in_its_order() {
        let offer = sdp(BARESIP_OFFER);
        let out = restrict_offer(&offer, &supported()).unwrap();
        let media = &out.media[0];
        assert_eq!(media.formats, ["0", "101"]);
        // The offerer's fmtp (what it wants to receive) is kept, not ours.
        assert_eq!(media.fmtp(101), Some("0-15"));
        assert!(media.fmtp(96).is_none() && media.rtpmap(96).is_none());
        // Everything else about the section is as offered.
        assert!(media.has_attribute("rtcp-rsize") && media.has_attribute("ptime"));
        assert_eq!(media.port, offer.media[0].port);
        // Any answer to the restricted offer answers the original too.
        let answered = answer(&out, &supported(), OUR, &[1], &mut OriginState::new(1));
        let original_pts = &offer.media[0].formats;
        assert!(
            answered.media[0]
                .formats
                .iter()
                .all(|f| original_pts.contains(f))
        );
    }

    #[test]
    fn restricted_offer_rejects_sections_without_a_supported_codec() {
        // Audio PCMU/PCMA stays; the video section was rejected already.
        let out = restrict_offer(&sdp(TWO_STREAMS_LF), &supported()).unwrap();
        assert_eq!(out.media[0].formats, ["0"]);
        assert_eq!(out.media[1].port, 0);
        // Nothing relayable at all: no offer can be made.
        let g729_only = [Codec::new("G729", 8000, 1)];
        assert!(restrict_offer(&sdp(BARESIP_OFFER), &g729_only).is_none());
        // telephone-event alone carries no audio.
        let events_only = [Codec::new("telephone-event", 8000, 1)];
        assert!(restrict_offer(&sdp(BARESIP_OFFER), &events_only).is_none());
    }

    #[test]
    fn own_offer_uses_static_payload_types_where_they_exist() {
        let codecs = [
            Codec::new("PCMU", 8000, 1),
            Codec::new("G722", 8000, 1),
            Codec::new("opus", 48000, 2),
            Codec::new("telephone-event", 8000, 1),
        ];
        let out = own_offer(&codecs, OUR, 20000, &mut OriginState::new(5));
        assert_eq!(
            text(&out),
            "v=0\no=switchboard 5 1 IN IP4 203.0.113.1\ns=-\nc=IN IP4 203.0.113.1\nt=0 0\n\
             m=audio 20000 RTP/AVP 0 9 96 97\na=rtpmap:0 PCMU/8000\na=rtpmap:9 G722/8000\n\
             a=rtpmap:96 opus/48000/2\na=rtpmap:97 telephone-event/8000\na=sendrecv\n"
        );
        // It is an offer this module can answer.
        let answered = answer(&out, &supported(), OUR, &[1], &mut OriginState::new(1));
        assert_eq!(answered.media[0].formats, ["0", "97"]);
    }
}
