//! SIP, SIPS and tel URIs (RFC 3261 §19.1, RFC 3966), with IPv6 references (RFC 5118).
//! Other absolute URIs are kept as written so a 416 can be answered.

use super::params::{
    ParamSyntax, Params, SyntaxError, escapes_ok, is_unreserved, parse_params, unescape,
};
use super::text::{FindByte, SipStr};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Uri {
    Sip(SipUri),
    Tel(TelUri),
    /// Any other scheme: `scheme:rest` as written.
    Other {
        scheme: SipStr,
        rest: SipStr,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipUri {
    pub secure: bool,
    /// The user part as written (escapes kept); see [`SipUri::user_unescaped`].
    pub user: Option<SipStr>,
    pub password: Option<SipStr>,
    pub host: Host,
    pub port: Option<u16>,
    pub params: Params,
    /// `?name=value&...` as written (escapes kept).
    pub headers: Vec<(SipStr, SipStr)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TelUri {
    pub number: SipStr,
    pub params: Params,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    Name(SipStr),
    Ip(IpAddr),
}

impl Host {
    pub fn parse(s: &SipStr, text: &str) -> Result<Host, SyntaxError> {
        if let Some(inner) = text.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or(SyntaxError("bad IPv6 reference"))?;
            return parse_ipv6(inner).map(|a| Host::Ip(IpAddr::V6(a)));
        }
        if text.is_empty() {
            return Err(SyntaxError("empty host"));
        }
        if text.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            && let Ok(a) = text.parse::<Ipv4Addr>()
        {
            return Ok(Host::Ip(IpAddr::V4(a)));
        }
        // hostname = *( domainlabel "." ) toplabel [ "." ]; `_` tolerated as phones use it.
        if text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
            && !text.starts_with('.')
        {
            return Ok(Host::Name(s.slice_ref(text)));
        }
        Err(SyntaxError("bad host"))
    }

    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Host::Ip(a) => Some(*a),
            Host::Name(_) => None,
        }
    }

    /// Case-insensitive for names (RFC 3261 §19.1.4).
    pub fn same_as(&self, other: &Host) -> bool {
        match (self, other) {
            (Host::Name(a), Host::Name(b)) => a.eq_ignore_ascii_case(b),
            (Host::Ip(a), Host::Ip(b)) => a == b,
            _ => false,
        }
    }
}

impl From<IpAddr> for Host {
    fn from(a: IpAddr) -> Self {
        Host::Ip(a)
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(IpAddr::V4(a)) => write!(f, "{a}"),
            Host::Ip(IpAddr::V6(a)) => write!(f, "[{a}]"),
        }
    }
}

/// Parses an IPv6 address, tolerating the `:::` that RFC 3261's ABNF bug let through
/// (RFC 5118 §4.10: be liberal in what you accept).
fn parse_ipv6(text: &str) -> Result<Ipv6Addr, SyntaxError> {
    if let Ok(a) = text.parse::<Ipv6Addr>() {
        return Ok(a);
    }
    if text.contains(":::")
        && !text.contains("::::")
        && let Ok(a) = text.replacen(":::", "::", 1).parse::<Ipv6Addr>()
    {
        return Ok(a);
    }
    Err(SyntaxError("bad IPv6 address"))
}

/// Splits `host[:port]`, with IPv6 references in brackets.
pub fn split_hostport(text: &str) -> Result<(&str, Option<u16>), SyntaxError> {
    let (host, port) = if text.starts_with('[') {
        let close = text
            .find_byte(b']')
            .ok_or(SyntaxError("bad IPv6 reference"))?;
        let rest = &text[close + 1..];
        match rest.strip_prefix(':') {
            Some(p) => (&text[..=close], Some(p)),
            None if rest.is_empty() => (&text[..=close], None),
            None => return Err(SyntaxError("bad host")),
        }
    } else {
        match text.rfind_byte(b':') {
            Some(i) if text[..i].contains(':') => {
                return Err(SyntaxError("IPv6 address without brackets"));
            }
            Some(i) => (&text[..i], Some(&text[i + 1..])),
            None => (text, None),
        }
    };
    let port = match port {
        Some(p) => Some(parse_port(p)?),
        None => None,
    };
    Ok((host, port))
}

fn parse_port(p: &str) -> Result<u16, SyntaxError> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SyntaxError("bad port"));
    }
    p.parse().map_err(|_| SyntaxError("bad port"))
}

impl Uri {
    /// Parses a whole URI; `text` must be a slice of `src`.
    pub fn parse(src: &SipStr, text: &str) -> Result<Uri, SyntaxError> {
        let colon = text
            .find_byte(b':')
            .ok_or(SyntaxError("URI without scheme"))?;
        let scheme = &text[..colon];
        let rest = &text[colon + 1..];
        if scheme.is_empty()
            || !scheme.as_bytes()[0].is_ascii_alphabetic()
            || !scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        {
            return Err(SyntaxError("bad URI scheme"));
        }
        if scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips") {
            SipUri::parse_rest(src, rest, scheme.len() == 4).map(Uri::Sip)
        } else if scheme.eq_ignore_ascii_case("tel") {
            TelUri::parse_rest(src, rest).map(Uri::Tel)
        } else {
            // absoluteURI: only URI characters, never whitespace or angle brackets.
            if rest.is_empty()
                || !rest
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b'"'))
            {
                return Err(SyntaxError("bad URI"));
            }
            Ok(Uri::Other {
                scheme: src.slice_ref(scheme),
                rest: src.slice_ref(rest),
            })
        }
    }

    /// Parses a URI from an owned string (for config values and tests).
    pub fn parse_str(text: &str) -> Result<Uri, SyntaxError> {
        let src = SipStr::from(text);
        Uri::parse(&src, &src)
    }

    pub fn as_sip(&self) -> Option<&SipUri> {
        match self {
            Uri::Sip(u) => Some(u),
            _ => None,
        }
    }

    pub fn scheme(&self) -> &str {
        match self {
            Uri::Sip(u) if u.secure => "sips",
            Uri::Sip(_) => "sip",
            Uri::Tel(_) => "tel",
            Uri::Other { scheme, .. } => scheme,
        }
    }

    /// The user part for SIP URIs, the number for tel URIs.
    pub fn user(&self) -> Option<&str> {
        match self {
            Uri::Sip(u) => u.user.as_deref(),
            Uri::Tel(t) => Some(&t.number),
            Uri::Other { .. } => None,
        }
    }

    /// URI equivalence per RFC 3261 §19.1.4.
    pub fn equivalent(&self, other: &Uri) -> bool {
        match (self, other) {
            (Uri::Sip(a), Uri::Sip(b)) => a.equivalent(b),
            (Uri::Tel(a), Uri::Tel(b)) => a.number == b.number && a.params == b.params,
            (
                Uri::Other {
                    scheme: s1,
                    rest: r1,
                },
                Uri::Other {
                    scheme: s2,
                    rest: r2,
                },
            ) => s1.eq_ignore_ascii_case(s2) && r1 == r2,
            _ => false,
        }
    }
}

impl SipUri {
    pub fn new(user: Option<&str>, host: Host, port: Option<u16>) -> SipUri {
        SipUri {
            secure: false,
            user: user.map(SipStr::from),
            password: None,
            host,
            port,
            params: Params::default(),
            headers: Vec::new(),
        }
    }

    fn parse_rest(src: &SipStr, rest: &str, secure: bool) -> Result<SipUri, SyntaxError> {
        let (userinfo, hostpart) = match rest.find_byte(b'@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let (user, password) = match userinfo {
            Some(ui) => {
                let (u, p) = match ui.find_byte(b':') {
                    Some(c) => (&ui[..c], Some(&ui[c + 1..])),
                    None => (ui, None),
                };
                if u.is_empty() || !u.bytes().all(is_user_char) || !escapes_ok(u) {
                    return Err(SyntaxError("bad URI user part"));
                }
                if let Some(p) = p
                    && (!p.bytes().all(is_password_char) || !escapes_ok(p))
                {
                    return Err(SyntaxError("bad URI password"));
                }
                (Some(src.slice_ref(u)), p.map(|p| src.slice_ref(p)))
            }
            None => (None, None),
        };
        let (before_headers, headers_text) = match hostpart.find_byte(b'?') {
            Some(q) => (&hostpart[..q], Some(&hostpart[q + 1..])),
            None => (hostpart, None),
        };
        let (hostport, params_text) = match before_headers.find_byte(b';') {
            Some(s) => (&before_headers[..s], &before_headers[s + 1..]),
            None => (before_headers, ""),
        };
        if params_text.is_empty() && before_headers.ends_with(';') {
            return Err(SyntaxError("empty URI parameter"));
        }
        let (host, port) = split_hostport(hostport)?;
        let host = Host::parse(src, host)?;
        let params = parse_params(src, params_text, ParamSyntax::Uri)?;
        let mut headers = Vec::new();
        if let Some(h) = headers_text {
            for pair in h.split('&') {
                let (n, v) = pair
                    .split_once_byte(b'=')
                    .ok_or(SyntaxError("bad URI header"))?;
                let ok = |s: &str| {
                    s.bytes()
                        .all(|b| is_unreserved(b) || b"[]/?:+$%".contains(&b))
                        && escapes_ok(s)
                };
                if n.is_empty() || !ok(n) || !ok(v) {
                    return Err(SyntaxError("bad URI header"));
                }
                headers.push((src.slice_ref(n), src.slice_ref(v)));
            }
        }
        Ok(SipUri {
            secure,
            user,
            password,
            host,
            port,
            params,
            headers,
        })
    }

    /// The user part with `%HH` escapes decoded; may contain any byte, `%00` included.
    pub fn user_unescaped(&self) -> Option<Vec<u8>> {
        self.user.as_ref().map(|u| unescape(u))
    }

    pub fn transport_param(&self) -> Option<&str> {
        self.params.value("transport").map(|v| v.as_str())
    }

    /// RFC 3261 §19.1.4: escapes decoded, host case-insensitive, the parameters user,
    /// ttl, method, maddr and transport must match when either side has them, other
    /// parameters only when both do; URI headers must match.
    pub fn equivalent(&self, other: &SipUri) -> bool {
        if self.secure != other.secure
            || self.user_unescaped() != other.user_unescaped()
            || self.password.as_ref().map(|p| unescape(p))
                != other.password.as_ref().map(|p| unescape(p))
            || !self.host.same_as(&other.host)
            || self.port != other.port
        {
            return false;
        }
        let norm =
            |v: Option<Option<&SipStr>>| v.map(|v| v.map(|s| unescape(&s.to_ascii_lowercase())));
        for p in self.params.iter().chain(other.params.iter()) {
            let name = p.name.to_ascii_lowercase();
            let (a, b) = (norm(self.params.get(&name)), norm(other.params.get(&name)));
            let must_match = matches!(
                name.as_str(),
                "user" | "ttl" | "method" | "maddr" | "transport"
            );
            if (must_match || (a.is_some() && b.is_some())) && a != b {
                return false;
            }
        }
        let hdrs = |u: &SipUri| {
            let mut v: Vec<(String, Vec<u8>)> = u
                .headers
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), unescape(v)))
                .collect();
            v.sort();
            v
        };
        hdrs(self) == hdrs(other)
    }
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.secure { "sips:" } else { "sip:" })?;
        if let Some(u) = &self.user {
            f.write_str(u)?;
            if let Some(p) = &self.password {
                write!(f, ":{p}")?;
            }
            f.write_str("@")?;
        }
        write!(f, "{}", self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write!(f, "{}", self.params)?;
        for (i, (n, v)) in self.headers.iter().enumerate() {
            write!(f, "{}{n}={v}", if i == 0 { '?' } else { '&' })?;
        }
        Ok(())
    }
}

impl TelUri {
    fn parse_rest(src: &SipStr, rest: &str) -> Result<TelUri, SyntaxError> {
        let (number, params) = match rest.find_byte(b';') {
            Some(s) => (&rest[..s], &rest[s + 1..]),
            None => (rest, ""),
        };
        let ok = number.strip_prefix('+').unwrap_or(number);
        if ok.is_empty()
            || !ok
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b"*#-.()pPwW".contains(&b))
        {
            return Err(SyntaxError("bad tel URI"));
        }
        Ok(TelUri {
            number: src.slice_ref(number),
            params: parse_params(src, params, ParamSyntax::Uri)?,
        })
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Uri::Sip(u) => write!(f, "{u}"),
            Uri::Tel(t) => write!(f, "tel:{}{}", t.number, t.params),
            Uri::Other { scheme, rest } => write!(f, "{scheme}:{rest}"),
        }
    }
}

/// RFC 3261 `user`: unreserved, escaped, and `& = + $ , ; ? /`.
fn is_user_char(b: u8) -> bool {
    is_unreserved(b) || b"%&=+$,;?/".contains(&b)
}

fn is_password_char(b: u8) -> bool {
    is_unreserved(b) || b"%&=+$,".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sip(s: &str) -> SipUri {
        match Uri::parse_str(s) {
            Ok(Uri::Sip(u)) => u,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn parses_full_sip_uri() {
        let u = sip("sips:alice:pw@Example.COM:5061;transport=tcp;lr?Subject=hi&Priority=urgent");
        assert!(u.secure);
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.password.as_deref(), Some("pw"));
        assert_eq!(u.host, Host::Name("Example.COM".into()));
        assert_eq!(u.port, Some(5061));
        assert_eq!(u.transport_param(), Some("tcp"));
        assert!(u.params.has("lr"));
        assert_eq!(u.headers.len(), 2);
        assert_eq!(
            u.to_string(),
            "sips:alice:pw@Example.COM:5061;transport=tcp;lr?Subject=hi&Priority=urgent"
        );
    }

    #[test]
    fn ipv6_references_rfc5118() {
        let u = sip("sip:[2001:db8::10]:5070");
        assert_eq!(u.host, Host::Ip("2001:db8::10".parse().unwrap()));
        assert_eq!(u.port, Some(5070));
        let u = sip("sip:[2001:db8::10:5070]");
        assert_eq!(u.host, Host::Ip("2001:db8::10:5070".parse().unwrap()));
        assert_eq!(u.port, None);
        let u = sip("sip:user@[2001:db8:::192.0.2.1]");
        assert_eq!(u.host, Host::Ip("2001:db8::192.0.2.1".parse().unwrap()));
        assert!(Uri::parse_str("sip:2001:db8::10").is_err());
        assert!(Uri::parse_str("sip:user@[::1").is_err());
    }

    #[test]
    fn escaped_and_unescaped_forms_are_equivalent() {
        let a = sip("sip:sips%3Auser%40example.com@example.net");
        assert_eq!(a.user_unescaped(), Some(b"sips:user@example.com".to_vec()));
        assert!(
            sip("sip:%61lice@atlanta.com;transport=TCP")
                .equivalent(&sip("sip:alice@AtLanTa.CoM;Transport=tcp"))
        );
        assert!(
            !sip("sip:alice@atlanta.com").equivalent(&sip("sip:alice@atlanta.com;transport=tcp"))
        );
        assert!(sip("sip:alice@atlanta.com;x=1").equivalent(&sip("sip:alice@atlanta.com")));
        assert!(!sip("sip:bob@biloxi.com").equivalent(&sip("sip:bob@biloxi.com:5060")));
    }

    #[test]
    fn escaped_null_is_kept_in_user() {
        let u = sip("sip:null-%00-null@example.com");
        assert_eq!(u.user_unescaped(), Some(b"null-\0-null".to_vec()));
    }

    #[test]
    fn semicolon_params_in_user_part() {
        let u = sip("sip:user;par=u%40example.net@example.com");
        assert_eq!(u.user.as_deref(), Some("user;par=u%40example.net"));
        assert!(u.params.is_empty());
    }

    #[test]
    fn tel_and_other_schemes() {
        match Uri::parse_str("tel:+1-201-555-0123;phone-context=example.com") {
            Ok(Uri::Tel(t)) => assert_eq!(t.number, "+1-201-555-0123"),
            other => panic!("{other:?}"),
        }
        match Uri::parse_str("nobodyknows:this-is-an-unknown-scheme") {
            Ok(u @ Uri::Other { .. }) => assert_eq!(u.scheme(), "nobodyknows"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "sip:",
            "sip:user@",
            "sip:us er@host",
            "sip:host:99999",
            "sip:host;",
            "sip:@host",
            "<sip:a@b>",
            "sip:a@b;p=%zz",
        ] {
            assert!(Uri::parse_str(bad).is_err(), "{bad} should fail");
        }
    }
}
