//! The parser: datagram and stream framing, start line, header lines (folding, compact
//! names), and the checks that decide between processing a message, answering it
//! with an error, or dropping it.

use super::header::{Header, HeaderName, Headers, Known};
use super::message::{Message, Request, Response};
use super::method::Method;
use super::params::{SyntaxError, is_token, trim_lws, trim_lws_end};
use super::text::{FindByte, SipStr};
use super::uri::Uri;
use super::via::Via;
use bytes::Bytes;
use memchr::memchr;

/// The largest message accepted; a stream that buffers more without a complete
/// message is broken.
pub const MAX_MESSAGE_SIZE: usize = 65_535;

/// Why a message can't be processed.
#[derive(Debug)]
pub enum ParseError {
    /// Not SIP, or a malformed response: drop without an answer (RFC 3261 §18.1.2).
    Drop(&'static str),
    /// A request that gets this status; `headers` holds what was parsed so the error
    /// response can carry Via, From, To, Call-ID and CSeq back.
    Reject {
        status: u16,
        reason: &'static str,
        headers: Headers,
    },
}

impl ParseError {
    pub fn describe(&self) -> &'static str {
        match self {
            ParseError::Drop(r) => r,
            ParseError::Reject { reason, .. } => reason,
        }
    }
}

/// What the start line turned out to be.
enum StartLine {
    Request {
        method: Method,
        uri: Result<Uri, SyntaxError>,
        version_ok: bool,
    },
    Response {
        status: u16,
        reason: SipStr,
    },
}

/// Parses one datagram. Per RFC 3261 §18.3 octets beyond Content-Length are ignored,
/// and a missing Content-Length means the body is the rest of the datagram.
pub fn parse_datagram(buf: Bytes) -> Result<Message, ParseError> {
    parse_message(buf, false)
}

/// Parses one message already framed by [`frame_stream`].
pub fn parse_framed(buf: Bytes) -> Result<Message, ParseError> {
    parse_message(buf, true)
}

fn parse_message(buf: Bytes, stream: bool) -> Result<Message, ParseError> {
    let skip = buf
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    let buf = buf.slice(skip..);
    if buf.is_empty() {
        return Err(ParseError::Drop("empty message"));
    }
    let (head_len, body_start) = find_header_end(&buf);
    let head = SipStr::from_utf8(buf.slice(..head_len))
        .map_err(|_| ParseError::Drop("headers are not UTF-8"))?;
    let mut lines = Lines::new(&head);
    let first = lines.next_line().ok_or(ParseError::Drop("no start line"))?;
    let start = parse_start_line(&head, first);
    let is_request = !first.starts_with("SIP/");
    let fail = |status, reason, headers| -> ParseError {
        if is_request {
            ParseError::Reject {
                status,
                reason,
                headers,
            }
        } else {
            ParseError::Drop(reason)
        }
    };
    // 14 headers of 72 bytes stay under glibc's 1 KiB large-request threshold, past
    // which every allocation first consolidates the small free chunks (a profile of
    // the server under load showed that cost); typical requests have 10-14 headers.
    let mut headers = Headers::with_capacity(14);
    let mut header_error = None;
    while let Some(line) = lines.next_line() {
        match parse_header_line(&head, line, &mut lines) {
            Ok(h) => headers.push(h.name, h.value),
            Err(e) => {
                header_error.get_or_insert(e);
            }
        }
    }
    let start = match start {
        Ok(s) => s,
        Err(e) => return Err(fail(400, e.0, headers)),
    };
    if let Some(e) = header_error {
        return Err(fail(400, e.0, headers));
    }
    let available = buf.len() - body_start;
    let body_len = match content_length(&headers) {
        Ok(Some(n)) if n > available => {
            return Err(fail(400, "Content-Length larger than message", headers));
        }
        Ok(Some(n)) => n,
        Ok(None) if stream => 0,
        Ok(None) => available,
        Err(e) => return Err(fail(400, e.0, headers)),
    };
    let body = buf.slice(body_start..body_start + body_len);
    match start {
        StartLine::Request {
            method,
            uri,
            version_ok,
        } => {
            if !version_ok {
                return Err(ParseError::Reject {
                    status: 505,
                    reason: "SIP version not supported",
                    headers,
                });
            }
            let uri = uri.map_err(|e| ParseError::Reject {
                status: 400,
                reason: e.0,
                headers: headers.clone(),
            })?;
            let req = Request {
                method,
                uri,
                headers,
                body,
            };
            validate_request(&req).map_err(|(status, reason)| ParseError::Reject {
                status,
                reason,
                headers: req.headers.clone(),
            })?;
            Ok(Message::Request(req))
        }
        StartLine::Response { status, reason } => {
            let resp = Response {
                status,
                reason,
                headers,
                body,
            };
            validate_response(&resp).map_err(|e| ParseError::Drop(e.0))?;
            Ok(Message::Response(resp))
        }
    }
}

/// Returns (end of the header section, start of the body). A message with no empty
/// line ends its headers at the end of the buffer.
fn find_header_end(buf: &[u8]) -> (usize, usize) {
    let mut i = 0;
    while let Some(nl) = memchr(b'\n', &buf[i..]) {
        let nl = i + nl;
        // An empty line: "\n\n" or "\n\r\n".
        match buf.get(nl + 1) {
            Some(b'\n') => return (nl + 1, nl + 2),
            Some(b'\r') if buf.get(nl + 2) == Some(&b'\n') => return (nl + 1, nl + 3),
            _ => i = nl + 1,
        }
    }
    (buf.len(), buf.len())
}

/// Iterates the lines of the header section, without their CRLF or LF.
struct Lines<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Self {
        Lines { text, pos: 0 }
    }

    fn next_line(&mut self) -> Option<&'a str> {
        if self.pos >= self.text.len() {
            return None;
        }
        let rest = &self.text[self.pos..];
        let (line, advance) = match memchr(b'\n', rest.as_bytes()) {
            Some(nl) => (&rest[..nl], nl + 1),
            None => (rest, rest.len()),
        };
        self.pos += advance;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() { None } else { Some(line) }
    }

    /// True when the next line continues the current header (starts with SP or HT).
    fn next_is_continuation(&self) -> bool {
        matches!(self.text.as_bytes().get(self.pos), Some(b' ' | b'\t'))
    }
}

fn parse_start_line(src: &SipStr, line: &str) -> Result<StartLine, SyntaxError> {
    if let Some(rest) = line.strip_prefix("SIP/") {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
        let err = SyntaxError("malformed status line");
        let (version, rest) = rest.split_once_byte(b' ').ok_or(err)?;
        if version != "2.0" {
            return Err(err);
        }
        let (code, reason) = rest.split_once_byte(b' ').unwrap_or((rest, ""));
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SyntaxError("bad status code"));
        }
        let status: u16 = code.parse().map_err(|_| err)?;
        if !(100..=699).contains(&status) {
            return Err(SyntaxError("bad status code"));
        }
        return Ok(StartLine::Response {
            status,
            reason: src.slice_ref(reason),
        });
    }
    // Request-Line = Method SP Request-URI SP SIP-Version: exactly two single spaces.
    let err = SyntaxError("malformed request line");
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(err);
    };
    if !is_token(method) {
        return Err(SyntaxError("bad method"));
    }
    let version_ok = match version.strip_prefix("SIP/") {
        Some("2.0") => true,
        Some(v) if is_version_number(v) => false,
        _ => return Err(err),
    };
    Ok(StartLine::Request {
        method: Method::from_token(src.slice_ref(method)),
        uri: Uri::parse(src, uri),
        version_ok,
    })
}

fn is_version_number(v: &str) -> bool {
    v.split_once_byte(b'.').is_some_and(|(a, b)| {
        !a.is_empty()
            && !b.is_empty()
            && a.bytes().all(|c| c.is_ascii_digit())
            && b.bytes().all(|c| c.is_ascii_digit())
    })
}

/// One header, with its continuation lines folded into a single space each.
fn parse_header_line(
    src: &SipStr,
    line: &str,
    lines: &mut Lines<'_>,
) -> Result<Header, SyntaxError> {
    let colon = memchr(b':', line.as_bytes());
    let mut folded: Option<String> = None;
    while lines.next_is_continuation() {
        let Some(cont) = lines.next_line() else { break };
        let f = folded.get_or_insert_with(|| trim_lws_end(line).to_string());
        f.push(' ');
        f.push_str(trim_lws(cont));
    }
    let colon = colon.ok_or(SyntaxError("header line without ':'"))?;
    let name = trim_lws_end(&line[..colon]);
    if !is_token(name) {
        return Err(SyntaxError("bad header name"));
    }
    let value = match &folded {
        Some(f) => SipStr::from(trim_lws(&f[colon + 1..])),
        None => src.slice_ref(trim_lws(&line[colon + 1..])),
    };
    Ok(Header {
        name: HeaderName::parsed(src, name),
        value,
    })
}

/// The Content-Length, if any. Several values that disagree, or a value that is not
/// a plain number, make the framing unrecoverable (RFC 4475 §3.1.2.3, §3.3.9).
fn content_length(headers: &Headers) -> Result<Option<usize>, SyntaxError> {
    let mut found: Option<usize> = None;
    for v in headers.get_all(Known::ContentLength) {
        if v.is_empty() || v.len() > 9 || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SyntaxError("bad Content-Length"));
        }
        let n: usize = v.parse().map_err(|_| SyntaxError("bad Content-Length"))?;
        if found.is_some() {
            return Err(SyntaxError("multiple Content-Length values"));
        }
        found = Some(n);
    }
    Ok(found)
}

/// Headers that must appear at most once (RFC 3261 §7.3.1: not list headers).
const SINGLE_VALUED: [Known; 8] = [
    Known::CallId,
    Known::CSeq,
    Known::From,
    Known::To,
    Known::MaxForwards,
    Known::ContentType,
    Known::Expires,
    Known::ContentLength,
];

/// True when one of [`SINGLE_VALUED`] appears more than once; one pass over the headers.
fn appears_twice(headers: &Headers) -> bool {
    let mut seen = [false; SINGLE_VALUED.len()];
    for h in headers.iter() {
        let Some(k) = h.name.known() else { continue };
        if let Some(i) = SINGLE_VALUED.iter().position(|s| *s == k) {
            if seen[i] {
                return true;
            }
            seen[i] = true;
        }
    }
    false
}

/// Request checks beyond syntax: the mandatory headers (RFC 3261 §8.1.1) exist once
/// and parse, the Request-URI scheme is one we serve, CSeq agrees with the method.
/// Returns the status to answer with.
pub fn validate_request(req: &Request) -> Result<(), (u16, &'static str)> {
    let bad = |e: SyntaxError| (400, e.0);
    if appears_twice(&req.headers) {
        return Err((400, "header must appear once"));
    }
    if req.call_id().is_none_or(|c| c.is_empty()) {
        return Err((400, "missing Call-ID"));
    }
    let cseq = req.cseq().map_err(bad)?;
    req.from().map_err(bad)?;
    req.to().map_err(bad)?;
    let mut vias = 0;
    for v in req.headers.list(Known::Via) {
        Via::parse(&v, &v).map_err(bad)?;
        vias += 1;
    }
    if vias == 0 {
        return Err((400, "missing Via"));
    }
    if let Some(mf) = req.max_forwards() {
        mf.map_err(|_| (400, "bad Max-Forwards"))?;
    }
    if let Some(Err(_)) = req.number(Known::Expires) {
        // RFC 4475 §3.1.2.4 allows an overlarge Expires to be read as 3600; a
        // non-number is still malformed.
        let v = req
            .headers
            .get(Known::Expires)
            .map(|v| v.trim())
            .unwrap_or("");
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err((400, "bad Expires"));
        }
    }
    // Other headers with a known address syntax must parse too.
    for k in [Known::Contact, Known::Route, Known::RecordRoute] {
        for v in req.headers.list(k) {
            if k == Known::Contact && v.as_str() == "*" {
                continue;
            }
            super::name_addr::NameAddr::parse(&v, &v).map_err(bad)?;
        }
    }
    // An unknown method is answered 501 by the UAS whatever its CSeq says (RFC 4475
    // §3.1.2.18 prefers that to 400).
    if !matches!(req.method, Method::Extension(_)) && cseq.method != req.method {
        return Err((400, "CSeq method does not match"));
    }
    if req.method == Method::Register && !matches!(req.to().map(|t| t.uri), Ok(Uri::Sip(_))) {
        // RFC 3261 §10.3 step 3: the To header of a REGISTER names a SIP or SIPS AOR.
        return Err((400, "REGISTER To must be a SIP URI"));
    }
    match &req.uri {
        Uri::Sip(u) if !u.headers.is_empty() => Err((400, "Request-URI with headers")),
        Uri::Sip(_) | Uri::Tel(_) => Ok(()),
        Uri::Other { .. } => Err((416, "unsupported URI scheme")),
    }
}

/// A response we can't match to a transaction is useless; these must parse.
fn validate_response(resp: &Response) -> Result<(), SyntaxError> {
    if appears_twice(&resp.headers) {
        return Err(SyntaxError("header must appear once"));
    }
    resp.top_via()?;
    resp.cseq()?;
    resp.from()?;
    resp.to()?;
    resp.call_id().ok_or(SyntaxError("missing Call-ID"))?;
    Ok(())
}

/// Outcome of looking for one message at the start of a stream buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A whole message of this many bytes (leading CRLFs included) is buffered.
    Message(usize),
    /// RFC 5626 keep-alive: a double CRLF "ping" of this many bytes, answered by CRLF.
    Ping(usize),
    /// Bare CRLFs to discard (RFC 3261 §7.5).
    Skip(usize),
    /// Wait for more bytes.
    Incomplete,
    /// Framing can't be recovered: answer 400 if possible and close the connection.
    Broken(&'static str),
}

/// Finds the extent of the first message in a stream buffer using Content-Length
/// (mandatory on streams; absent is read as 0).
pub fn frame_stream(buf: &[u8]) -> Frame {
    if buf.starts_with(b"\r\n\r\n") {
        return Frame::Ping(4);
    }
    let skip = buf
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    if skip == buf.len() {
        return if skip >= 2 && buf.ends_with(b"\r\n") {
            Frame::Skip(skip)
        } else {
            Frame::Incomplete
        };
    }
    if skip > 0 {
        return Frame::Skip(skip);
    }
    let (head_len, body_start) = find_header_end(buf);
    if body_start == buf.len() && head_len == buf.len() {
        return if buf.len() > MAX_MESSAGE_SIZE {
            Frame::Broken("message too large")
        } else {
            Frame::Incomplete
        };
    }
    let mut len: Option<usize> = None;
    for line in buf[..head_len].split(|&b| b == b'\n') {
        let Some(colon) = memchr(b':', line) else {
            continue;
        };
        let name = line[..colon].trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            let v = line[colon + 1..].trim_ascii();
            let Some(n) = std::str::from_utf8(v)
                .ok()
                .filter(|v| !v.is_empty() && v.len() < 10 && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<usize>().ok())
            else {
                return Frame::Broken("bad Content-Length");
            };
            if len.is_some_and(|l| l != n) {
                return Frame::Broken("multiple Content-Length values");
            }
            len = Some(n);
        }
    }
    let total = body_start + len.unwrap_or(0);
    if total > MAX_MESSAGE_SIZE {
        return Frame::Broken("message too large");
    }
    if buf.len() < total {
        Frame::Incomplete
    } else {
        Frame::Message(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &str) -> Request {
        match parse_datagram(Bytes::copy_from_slice(text.as_bytes())) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    const OPTIONS: &str = "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn parses_and_round_trips() {
        let r = req(OPTIONS);
        assert_eq!(r.method, Method::Options);
        assert_eq!(r.headers.len(), 7);
        assert_eq!(String::from_utf8(r.to_bytes()).unwrap(), OPTIONS);
    }

    #[test]
    fn folding_and_bare_lf() {
        let r = req(
            "OPTIONS sip:a@b SIP/2.0\nVia: SIP/2.0/UDP h\n ;branch=z9hG4bK1\nFrom: <sip:x@y>;tag=1\nTo: <sip:a@b>\nCall-ID: c1\nCSeq: 1\n\tOPTIONS\nX-Custom:  two\r\n   lines  \n\n",
        );
        assert_eq!(
            r.headers.get(Known::CSeq).map(|v| v.as_str()),
            Some("1 OPTIONS")
        );
        assert_eq!(
            r.headers.get_named("x-custom").next().map(|v| v.as_str()),
            Some("two lines")
        );
        assert_eq!(r.top_via().unwrap().branch(), Some("z9hG4bK1"));
    }

    #[test]
    fn body_framing_on_datagrams() {
        let with_body = OPTIONS.replace("Content-Length: 0", "Content-Length: 3") + "abcdef";
        assert_eq!(&req(&with_body).body[..], b"abc");
        let no_length = OPTIONS.replace("Content-Length: 0\r\n", "") + "xyz";
        assert_eq!(&req(&no_length).body[..], b"xyz");
        let too_long = OPTIONS.replace("Content-Length: 0", "Content-Length: 9");
        match parse_datagram(Bytes::from(too_long)) {
            Err(ParseError::Reject { status: 400, .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_version_and_malformed_start_lines() {
        match parse_datagram(Bytes::from(
            OPTIONS.replace("SIP/2.0\r\nVia", "SIP/7.0\r\nVia"),
        )) {
            Err(ParseError::Reject {
                status: 505,
                headers,
                ..
            }) => assert!(headers.contains(Known::CallId)),
            other => panic!("{other:?}"),
        }
        match parse_datagram(Bytes::from(
            OPTIONS.replace("OPTIONS sip:a@b ", "OPTIONS  sip:a@b "),
        )) {
            Err(ParseError::Reject { status: 400, .. }) => {}
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_datagram(Bytes::from_static(b"\x00\x01garbage")),
            Err(ParseError::Reject { .. } | ParseError::Drop(_))
        ));
        assert!(matches!(
            parse_datagram(Bytes::from_static(b"SIP/2.0 4294967301 Huge\r\n\r\n")),
            Err(ParseError::Drop(_))
        ));
    }

    #[test]
    fn stream_framing() {
        assert_eq!(frame_stream(b"\r\n\r\n"), Frame::Ping(4));
        assert_eq!(frame_stream(b"\r\nOPT"), Frame::Skip(2));
        assert_eq!(frame_stream(&OPTIONS.as_bytes()[..40]), Frame::Incomplete);
        assert_eq!(
            frame_stream(OPTIONS.as_bytes()),
            Frame::Message(OPTIONS.len())
        );
        let two = format!("{OPTIONS}{OPTIONS}");
        assert_eq!(frame_stream(two.as_bytes()), Frame::Message(OPTIONS.len()));
        let body = OPTIONS.replace("Content-Length: 0", "l: 5") + "12";
        assert_eq!(frame_stream(body.as_bytes()), Frame::Incomplete);
        let full = body + "345";
        assert_eq!(frame_stream(full.as_bytes()), Frame::Message(full.len()));
        let neg = OPTIONS.replace("Content-Length: 0", "Content-Length: -999");
        assert!(matches!(frame_stream(neg.as_bytes()), Frame::Broken(_)));
    }
}
