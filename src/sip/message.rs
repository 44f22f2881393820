//! SIP requests and responses: start line, ordered headers, body bytes; the typed
//! accessors every layer needs; serialization.

use super::header::{Headers, Known};
use super::method::Method;
use super::name_addr::{Contacts, NameAddr};
use super::params::SyntaxError;
use super::text::SipStr;
use super::uri::Uri;
use super::via::Via;
use bytes::Bytes;
use std::fmt::Write as _;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub uri: Uri,
    pub headers: Headers,
    pub body: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: SipStr,
    pub headers: Headers,
    pub body: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Request(Request),
    Response(Response),
}

/// CSeq: sequence number and method (RFC 3261 §20.16).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl CSeq {
    pub fn parse(src: &SipStr) -> Result<CSeq, SyntaxError> {
        let err = SyntaxError("malformed CSeq");
        let mut parts = src.split([' ', '\t']).filter(|p| !p.is_empty());
        let num = parts.next().ok_or(err)?;
        let method = parts.next().ok_or(err)?;
        if parts.next().is_some()
            || !num.bytes().all(|b| b.is_ascii_digit())
            || !super::params::is_token(method)
        {
            return Err(err);
        }
        // Leading zeros are allowed; the value must fit 32 bits (RFC 3261 §8.1.1.5).
        let seq = num.trim_start_matches('0');
        let seq = if seq.is_empty() {
            0
        } else if seq.len() > 10 {
            return Err(err);
        } else {
            seq.parse::<u64>().map_err(|_| err)?
        };
        let seq = u32::try_from(seq).map_err(|_| err)?;
        Ok(CSeq {
            seq,
            method: Method::from_token(src.slice_ref(method)),
        })
    }
}

/// Accessors shared by requests and responses.
macro_rules! common_accessors {
    () => {
        pub fn call_id(&self) -> Option<&SipStr> {
            self.headers.get(Known::CallId)
        }

        pub fn cseq(&self) -> Result<CSeq, SyntaxError> {
            CSeq::parse(
                self.headers
                    .get(Known::CSeq)
                    .ok_or(SyntaxError("missing CSeq"))?,
            )
        }

        pub fn from(&self) -> Result<NameAddr, SyntaxError> {
            let v = self
                .headers
                .get(Known::From)
                .ok_or(SyntaxError("missing From"))?;
            NameAddr::parse(v, v)
        }

        pub fn to(&self) -> Result<NameAddr, SyntaxError> {
            let v = self
                .headers
                .get(Known::To)
                .ok_or(SyntaxError("missing To"))?;
            NameAddr::parse(v, v)
        }

        /// The first Via value.
        pub fn top_via(&self) -> Result<Via, SyntaxError> {
            let v = self
                .headers
                .list(Known::Via)
                .next()
                .ok_or(SyntaxError("missing Via"))?;
            Via::parse(&v, &v)
        }

        pub fn vias(&self) -> Result<Vec<Via>, SyntaxError> {
            self.headers
                .list(Known::Via)
                .map(|v| Via::parse(&v, &v))
                .collect()
        }

        pub fn contacts(&self) -> Result<Option<Contacts>, SyntaxError> {
            let values: Vec<SipStr> = self.headers.list(Known::Contact).collect();
            if values.is_empty() {
                return Ok(None);
            }
            if values.iter().any(|v| v.as_str() == "*") {
                return if values.len() == 1 {
                    Ok(Some(Contacts::Star))
                } else {
                    Err(SyntaxError("'*' mixed with other contacts"))
                };
            }
            values
                .iter()
                .map(|v| NameAddr::parse(v, v))
                .collect::<Result<Vec<_>, _>>()
                .map(|l| Some(Contacts::List(l)))
        }

        /// A header holding a plain unsigned number (Expires, Min-Expires, ...).
        pub fn number(&self, k: Known) -> Option<Result<u32, SyntaxError>> {
            self.headers.get(k).map(|v| {
                let v = v.trim();
                if v.is_empty() || v.len() > 10 || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(SyntaxError("bad number"));
                }
                v.parse::<u64>()
                    .ok()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or(SyntaxError("number too large"))
            })
        }

        pub fn content_type(&self) -> Option<&SipStr> {
            self.headers.get(Known::ContentType)
        }

        /// Sets the body and its Content-Type; Content-Length follows on serialization.
        pub fn set_body(&mut self, content_type: &str, body: impl Into<Bytes>) {
            self.headers.set(Known::ContentType, content_type);
            self.body = body.into();
        }
    };
}

impl Request {
    pub fn new(method: Method, uri: Uri) -> Request {
        Request {
            method,
            uri,
            headers: Headers::with_capacity(10),
            body: Bytes::new(),
        }
    }

    common_accessors!();

    /// Max-Forwards; `None` when absent.
    pub fn max_forwards(&self) -> Option<Result<u32, SyntaxError>> {
        self.number(Known::MaxForwards)
    }

    /// Serializes; Content-Length is always written from the actual body length.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::with_capacity(512 + self.body.len());
        let _ = write!(out, "{} {} SIP/2.0\r\n", self.method, self.uri);
        finish(out, &self.headers, &self.body)
    }
}

impl Response {
    pub fn new(status: u16, reason: &str) -> Response {
        Response {
            status,
            reason: SipStr::from(reason),
            headers: Headers::with_capacity(8),
            body: Bytes::new(),
        }
    }

    /// A response to `req` (RFC 3261 §8.2.6): Via, From, To, Call-ID and CSeq copied,
    /// and Timestamp echoed; the To tag, if any is needed, is the caller's to add.
    pub fn to_request(req: &Request, status: u16, reason: &str) -> Response {
        let mut r = Response::new(status, reason);
        for h in req.headers.iter() {
            if matches!(
                h.name.known(),
                Some(
                    Known::Via
                        | Known::From
                        | Known::To
                        | Known::CallId
                        | Known::CSeq
                        | Known::Timestamp
                )
            ) {
                r.headers.push(h.name.clone(), h.value.clone());
            }
        }
        r
    }

    common_accessors!();

    /// Adds `;tag=` to the To header unless it has one (UAS side of a dialog).
    pub fn set_to_tag(&mut self, tag: &str) {
        if let Ok(mut to) = self.to()
            && to.tag().is_none()
        {
            to.set_tag(tag);
            self.headers.set(Known::To, to.to_string());
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::with_capacity(384 + self.body.len());
        let _ = write!(out, "SIP/2.0 {} {}\r\n", self.status, self.reason);
        finish(out, &self.headers, &self.body)
    }

    pub fn is_provisional(&self) -> bool {
        self.status < 200
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

fn finish(mut out: String, headers: &Headers, body: &Bytes) -> Vec<u8> {
    for h in headers.iter() {
        if h.name.known() == Some(Known::ContentLength) {
            continue;
        }
        let _ = write!(out, "{}: {}\r\n", h.name.as_str(), h.value);
    }
    let _ = write!(out, "Content-Length: {}\r\n\r\n", body.len());
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

impl Message {
    pub fn headers(&self) -> &Headers {
        match self {
            Message::Request(r) => &r.headers,
            Message::Response(r) => &r.headers,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Message::Request(r) => r.to_bytes(),
            Message::Response(r) => r.to_bytes(),
        }
    }
}

/// The standard reason phrase for a status code.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        410 => "Gone",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        421 => "Extension Required",
        422 => "Session Interval Too Small",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cseq_bounds() {
        assert_eq!(CSeq::parse(&"0009 INVITE".into()).unwrap().seq, 9);
        assert_eq!(CSeq::parse(&"4294967295 ACK".into()).unwrap().seq, u32::MAX);
        assert!(CSeq::parse(&"4294967296 ACK".into()).is_err());
        assert!(CSeq::parse(&"36893488147419103232 INVITE".into()).is_err());
        assert!(CSeq::parse(&"1".into()).is_err());
        assert!(CSeq::parse(&"1 INVITE x".into()).is_err());
        assert_eq!(
            CSeq::parse(&"1 NEWMETHOD".into()).unwrap().method.as_str(),
            "NEWMETHOD"
        );
    }

    #[test]
    fn response_copies_dialog_headers_and_writes_length() {
        let mut req = Request::new(Method::Options, Uri::parse_str("sip:a@b").unwrap());
        req.headers
            .push(Known::Via, "SIP/2.0/UDP h;branch=z9hG4bK1");
        req.headers.push(Known::From, "<sip:x@y>;tag=1");
        req.headers.push(Known::To, "<sip:a@b>");
        req.headers.push(Known::CallId, "c1");
        req.headers.push(Known::CSeq, "1 OPTIONS");
        req.headers.push(Known::MaxForwards, "70");
        let mut resp = Response::to_request(&req, 200, "OK");
        resp.set_to_tag("abc");
        let text = String::from_utf8(resp.to_bytes()).unwrap();
        assert_eq!(
            text,
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>;tag=abc\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
    }
}
