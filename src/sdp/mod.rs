//! Sans-IO SDP (RFC 8866) and the offer/answer rules (RFC 3264) for a B2BUA that
//! terminates each call leg: parse and serialize descriptions, negotiate codecs,
//! read and answer directions (hold), rewrite a description for the other leg.

pub mod bridge;
pub mod codec;
pub mod model;
pub mod offer_answer;
mod parse;

pub use bridge::{answer_across, hold_with_music, offer_across};
pub use codec::{Codec, Format, negotiate, offer_formats, shares_codec, supported_subset};
pub use model::{
    AddrType, Address, Attribute, Connection, Direction, Line, Media, Origin, Rtpmap, Sdp,
};
pub use offer_answer::{OriginState, answer, own_offer, restrict_offer, rewrite_for_leg};

use std::fmt;

/// Why a description can't be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SdpError {
    /// The 1-based line, or 0 when the description as a whole is at fault.
    pub line: usize,
    pub reason: &'static str,
}

impl fmt::Display for SdpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SDP line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for SdpError {}

/// Byte fixtures shared by the tests of this module's files.
#[cfg(test)]
mod fixtures {
    pub const SIPP_UAC: &[u8] = include_bytes!("testdata/sipp-uac.sdp");
    pub const BARESIP_OFFER: &[u8] = include_bytes!("testdata/baresip-offer.sdp");
    pub const HOLD_SENDONLY: &[u8] = include_bytes!("testdata/hold-sendonly.sdp");
    pub const RESUME: &[u8] = include_bytes!("testdata/resume.sdp");
    pub const HOLD_OLD_STYLE: &[u8] = include_bytes!("testdata/hold-old-style.sdp");
    pub const TWO_STREAMS_LF: &[u8] = include_bytes!("testdata/two-streams-lf.sdp");
    /// RFC 5118 §4.4 and §4.5, whole SIP messages; the SDP is their body.
    pub const RFC5118_IPV6_IN_SDP: &[u8] = include_bytes!("testdata/rfc5118-ipv6-in-sdp.dat");
    pub const RFC5118_MULT_IP_IN_SDP: &[u8] = include_bytes!("testdata/rfc5118-mult-ip-in-sdp.dat");

    pub fn body(message: &[u8]) -> &[u8] {
        let at = message.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        &message[at + 4..]
    }

    pub fn sdp(bytes: &[u8]) -> super::Sdp {
        super::Sdp::parse(bytes).unwrap()
    }
}
