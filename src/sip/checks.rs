//! The checks a UAS makes before handing a request to its core (RFC 3261 §8.2):
//! hop limit, method, required extensions, body type, acceptable answers. Pure: the
//! outcome is a status and the headers to add, which the caller turns into a response.

use super::header::{Headers, Known};
use super::message::{Request, Response, reason_phrase};
use super::method::Method;

/// What this server implements; answers OPTIONS and decides 405/501/420/415.
#[derive(Clone, Debug)]
pub struct Capabilities {
    /// Methods handled, in the order the Allow header lists them.
    pub allow: Vec<Method>,
    /// Option tags understood in Require (RFC 3261 §20.32).
    pub supported: Vec<&'static str>,
}

/// Body types accepted in session-bearing requests.
pub const ACCEPT: &str = "application/sdp";

impl Capabilities {
    /// What the PBX serves: calls (INVITE and its dialog methods), registration, pings.
    pub fn pbx() -> Self {
        Capabilities {
            allow: vec![
                Method::Invite,
                Method::Ack,
                Method::Cancel,
                Method::Bye,
                Method::Options,
                Method::Register,
                Method::Update,
                Method::Info,
            ],
            // Session timers run per leg in the B2BUA (RFC 4028).
            supported: vec!["timer"],
        }
    }

    pub fn allow_header(&self) -> String {
        self.allow
            .iter()
            .map(|m| m.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn supported_header(&self) -> String {
        self.supported.join(", ")
    }
}

/// A request the UAS refuses: status, reason, and headers to add to the response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub reason: &'static str,
    pub headers: Vec<(Known, String)>,
}

impl Rejection {
    fn new(status: u16) -> Self {
        Rejection {
            status,
            reason: reason_phrase(status),
            headers: Vec::new(),
        }
    }

    fn with(mut self, k: Known, v: String) -> Self {
        self.headers.push((k, v));
        self
    }
}

/// RFC 3261 §8.2.1–§8.2.3 and §16.3 step 3 (Max-Forwards 0 is answered 483 here for
/// every method, as the PBX relays what it accepts). ACK never gets a response, so
/// it is never rejected here.
pub fn check_request(req: &Request, caps: &Capabilities) -> Result<(), Rejection> {
    if req.method == Method::Ack {
        return Ok(());
    }
    if let Some(Ok(0)) = req.max_forwards() {
        return Err(Rejection::new(483));
    }
    if !caps.allow.contains(&req.method) {
        let status = if matches!(req.method, Method::Extension(_)) {
            501
        } else {
            405
        };
        return Err(Rejection::new(status).with(Known::Allow, caps.allow_header()));
    }
    if req.method != Method::Cancel {
        let unsupported: Vec<String> = req
            .headers
            .list(Known::Require)
            .filter(|tag| {
                !tag.is_empty() && !caps.supported.iter().any(|s| s.eq_ignore_ascii_case(tag))
            })
            .map(|t| t.to_string())
            .collect();
        if !unsupported.is_empty() {
            return Err(Rejection::new(420).with(Known::Unsupported, unsupported.join(", ")));
        }
    }
    if matches!(req.method, Method::Invite | Method::Update | Method::Prack) {
        if !req.body.is_empty() && !is_sdp(req.content_type().map(|c| c.as_str())) {
            return Err(Rejection::new(415).with(Known::Accept, ACCEPT.to_string()));
        }
        if req.method == Method::Invite && !accepts_sdp(&req.headers) {
            return Err(Rejection::new(406).with(
                Known::Warning,
                "399 switchboard \"only application/sdp answers\"".to_string(),
            ));
        }
    }
    Ok(())
}

/// True for `application/sdp` with any parameters.
fn is_sdp(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        ct.split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case(ACCEPT))
    })
}

/// An absent Accept means application/sdp (RFC 3261 §20.1).
fn accepts_sdp(headers: &Headers) -> bool {
    if !headers.contains(Known::Accept) {
        return true;
    }
    headers.list(Known::Accept).any(|a| {
        let t = a.split(';').next().unwrap_or("").trim();
        t.eq_ignore_ascii_case(ACCEPT) || t == "*/*" || t.eq_ignore_ascii_case("application/*")
    })
}

/// An error response built from whatever headers a request had, for requests that
/// could not be fully parsed. A To tag derived from the request keeps retransmissions'
/// answers identical.
pub fn error_response(req_headers: &Headers, status: u16, detail: &str) -> Response {
    let reason = if detail.is_empty() || status != 400 {
        reason_phrase(status).to_string()
    } else {
        format!("Bad Request ({detail})")
    };
    let mut r = Response::new(status, &reason);
    for h in req_headers.iter() {
        if matches!(
            h.name.known(),
            Some(Known::Via | Known::From | Known::To | Known::CallId | Known::CSeq)
        ) {
            r.headers.push(h.name.clone(), h.value.clone());
        }
    }
    r.set_to_tag(&stateless_tag(req_headers));
    r
}

/// Applies a rejection to a parsed request.
pub fn rejection_response(req: &Request, rejection: &Rejection) -> Response {
    let mut r = error_response(&req.headers, rejection.status, "");
    r.reason = rejection.reason.into();
    for (k, v) in &rejection.headers {
        r.headers.push(*k, v.as_str());
    }
    r
}

/// Our To tag for a caller's Call-ID and From tag: a keyed hash, so it is the same for
/// every request of that caller's call and unguessable without the process's random
/// key. A retransmission gets the same tag, and so does an INVITE re-sent with
/// credentials after a 407: the dialog it creates keeps the tag the 407 carried (SIPp
/// keeps using the first To tag it saw).
pub fn stateless_tag(headers: &Headers) -> String {
    use std::hash::{BuildHasher, Hash, Hasher};
    static KEY: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    let mut h = KEY
        .get_or_init(std::collections::hash_map::RandomState::new)
        .build_hasher();
    headers.get(Known::CallId).hash(&mut h);
    let from_tag = headers.get(Known::From).and_then(|f| {
        let f = super::name_addr::NameAddr::parse(f, f).ok()?;
        f.tag().map(str::to_string)
    });
    from_tag.hash(&mut h);
    format!("sb{:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Message;
    use crate::sip::parse::parse_datagram;
    use bytes::Bytes;

    fn caps() -> Capabilities {
        Capabilities::pbx()
    }

    fn req(extra: &str, method: &str) -> Request {
        let text = format!(
            "{method} sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c1\r\nCSeq: 1 {method}\r\n{extra}\r\n"
        );
        match parse_datagram(Bytes::from(text)) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn max_forwards_zero_is_483() {
        assert_eq!(
            check_request(&req("Max-Forwards: 0\r\n", "OPTIONS"), &caps())
                .unwrap_err()
                .status,
            483
        );
        assert!(check_request(&req("Max-Forwards: 1\r\n", "OPTIONS"), &caps()).is_ok());
    }

    #[test]
    fn unknown_and_unsupported_methods() {
        let r = check_request(&req("", "FOO"), &caps()).unwrap_err();
        assert_eq!(r.status, 501);
        assert_eq!(
            r.headers,
            vec![(
                Known::Allow,
                "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, UPDATE, INFO".to_string()
            )]
        );
        assert_eq!(
            check_request(&req("", "MESSAGE"), &caps())
                .unwrap_err()
                .status,
            405
        );
    }

    #[test]
    fn require_lists_unsupported_tags() {
        let r =
            check_request(&req("Require: timer, foo, bar\r\n", "OPTIONS"), &caps()).unwrap_err();
        assert_eq!((r.status, r.headers[0].1.as_str()), (420, "foo, bar"));
        assert!(check_request(&req("Require: Timer\r\n", "OPTIONS"), &caps()).is_ok());
    }

    #[test]
    fn invite_body_and_accept() {
        let r = check_request(
            &req(
                "Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi",
                "INVITE",
            ),
            &caps(),
        );
        assert_eq!(r.unwrap_err().status, 415);
        assert!(
            check_request(
                &req(
                    "Content-Type: application/SDP; charset=x\r\nContent-Length: 2\r\n\r\nhi",
                    "INVITE"
                ),
                &caps()
            )
            .is_ok()
        );
        assert_eq!(
            check_request(&req("Accept: text/plain\r\n", "INVITE"), &caps())
                .unwrap_err()
                .status,
            406
        );
        assert!(
            check_request(
                &req("Accept: text/plain, application/sdp\r\n", "INVITE"),
                &caps()
            )
            .is_ok()
        );
    }

    #[test]
    fn error_response_keeps_dialog_headers_and_stable_tag() {
        let r = req("", "OPTIONS");
        let a = error_response(&r.headers, 400, "bad thing");
        let b = error_response(&r.headers, 400, "bad thing");
        assert_eq!(a.reason, "Bad Request (bad thing)");
        assert_eq!(a.to().unwrap().tag(), b.to().unwrap().tag());
        assert!(a.to().unwrap().tag().is_some());
        assert_eq!(a.headers.get(Known::CallId).map(|c| c.as_str()), Some("c1"));
    }
}
