//! Dialog identity (RFC 3261 §12): Call-ID plus both tags, and fresh tags and Call-IDs.

use crate::sip::{Request, Response, SipStr};

/// Names a dialog from our side: a request we receive carries our tag in To and theirs
/// in From; a response we receive carries ours in From and theirs in To. The remote tag
/// is empty for a peer that sent none (RFC 2543). Compared byte for byte.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DialogId {
    pub call_id: SipStr,
    pub local_tag: SipStr,
    pub remote_tag: SipStr,
}

impl DialogId {
    /// The dialog a received request belongs to; `None` without a Call-ID or a To tag
    /// (such a request is outside any dialog).
    pub fn of_request(req: &Request) -> Option<DialogId> {
        let local_tag = req.to().ok()?.params.value("tag")?.clone();
        let remote_tag = req.from().ok()?.params.value("tag").cloned();
        Self::assemble(req.call_id()?, local_tag, remote_tag)
    }

    /// The dialog a received response belongs to; `None` without a Call-ID or a To tag
    /// (a 100 Trying, or a response that creates no dialog).
    pub fn of_response(resp: &Response) -> Option<DialogId> {
        let remote_tag = resp.to().ok()?.params.value("tag")?.clone();
        let local_tag = resp.from().ok()?.params.value("tag")?.clone();
        Self::assemble(resp.call_id()?, local_tag, Some(remote_tag))
    }

    fn assemble(
        call_id: &SipStr,
        local_tag: SipStr,
        remote_tag: Option<SipStr>,
    ) -> Option<DialogId> {
        (!call_id.is_empty() && !local_tag.is_empty()).then(|| DialogId {
            call_id: call_id.clone(),
            local_tag,
            remote_tag: remote_tag.unwrap_or_default(),
        })
    }
}

/// A new tag: 64 random bits in hex (RFC 3261 §19.3 asks for at least 32).
pub fn new_tag() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// A new Call-ID: `prefix` then 128 random bits in hex. The core passes `sb<shard>-` so
/// the B leg's messages reach the shard that owns the call.
pub fn new_call_id(prefix: &str) -> String {
    format!("{prefix}{:032x}", rand::random::<u128>())
}
