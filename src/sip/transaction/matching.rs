//! Which transaction a message belongs to (RFC 3261 §17.1.3, §17.2.3), as hash keys.

use crate::sip::{Method, Request, SipStr, SyntaxError, Via};

/// Identifies a client transaction: the branch we put in the top Via and the CSeq
/// method, so a CANCEL sharing its INVITE's branch is a transaction of its own.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct ClientMatch {
    branch: SipStr,
    method: Method,
}

impl ClientMatch {
    pub(super) fn new(top_via: &Via, method: Method) -> Option<ClientMatch> {
        Some(ClientMatch {
            branch: top_via.params.value("branch")?.clone(),
            method,
        })
    }
}

/// Identifies a server transaction.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum ServerMatch {
    /// RFC 3261 branch (magic cookie): branch, sent-by and method.
    Branch {
        branch: SipStr,
        host: String,
        port: Option<u16>,
        method: Method,
    },
    /// RFC 2543 peers: the branch isn't unique, so the request's identity is used.
    Legacy(LegacyMatch),
}

/// RFC 3261 §17.2.3's fallback: Request-URI, To tag, From tag, Call-ID, CSeq and top
/// Via. An ACK for a final response carries the To tag the response added, which the
/// INVITE lacked, so that case is looked up with `to_tag` cleared and checked against
/// the tag of the response sent (see `TransactionLayer::match_server`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct LegacyMatch {
    request_uri: String,
    pub(super) to_tag: Option<String>,
    from_tag: Option<String>,
    call_id: SipStr,
    cseq: u32,
    method: Method,
    top_via: String,
}

impl ServerMatch {
    /// The key of the server transaction `req` belongs to, taking its method to be
    /// `method`: INVITE for an ACK (it belongs to the INVITE transaction) and for the
    /// INVITE a CANCEL refers to (RFC 3261 §9.2).
    pub(super) fn new(
        req: &Request,
        top_via: &Via,
        method: Method,
    ) -> Result<ServerMatch, SyntaxError> {
        if top_via.has_rfc3261_branch()
            && let Some(branch) = top_via.params.value("branch")
        {
            return Ok(ServerMatch::Branch {
                branch: branch.clone(),
                host: top_via.host.to_string().to_ascii_lowercase(),
                port: top_via.port,
                method,
            });
        }
        Ok(ServerMatch::Legacy(LegacyMatch {
            request_uri: req.uri.to_string(),
            to_tag: req.to()?.tag().map(str::to_owned),
            from_tag: req.from()?.tag().map(str::to_owned),
            call_id: req
                .call_id()
                .cloned()
                .ok_or(SyntaxError("missing Call-ID"))?,
            cseq: req.cseq()?.seq,
            method,
            top_via: top_via.to_string(),
        }))
    }
}
