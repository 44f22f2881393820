//! The Via header field value (RFC 3261 §20.42, RFC 3581 rport).

use super::params::{
    ParamSyntax, Params, SyntaxError, is_token, parse_params, trim_lws, trim_lws_start,
};
use super::text::{FindByte, SipStr};
use super::uri::{Host, split_hostport};
use std::fmt;

/// The RFC 3261 branch prefix that marks a globally unique branch.
pub const MAGIC_COOKIE: &str = "z9hG4bK";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Via {
    /// `UDP`, `TCP`, `TLS`, `WS`, ... as written.
    pub transport: SipStr,
    pub host: Host,
    pub port: Option<u16>,
    pub params: Params,
}

impl Via {
    /// Parses one via-parm; `text` must be a slice of `src`.
    pub fn parse(src: &SipStr, text: &str) -> Result<Via, SyntaxError> {
        let err = SyntaxError("malformed Via");
        let (head, params) = match text.find_byte(b';') {
            Some(i) => (&text[..i], &text[i + 1..]),
            None => (text, ""),
        };
        let mut parts = head.splitn(3, '/');
        let name = trim_lws(parts.next().ok_or(err)?);
        let version = trim_lws(parts.next().ok_or(err)?);
        let rest = trim_lws_start(parts.next().ok_or(err)?);
        if !name.eq_ignore_ascii_case("SIP") || version != "2.0" {
            return Err(err);
        }
        let split = rest.find([' ', '\t']).ok_or(err)?;
        let transport = &rest[..split];
        let sent_by = trim_lws(&rest[split..]);
        if !is_token(transport) || sent_by.is_empty() {
            return Err(err);
        }
        let (host, port) = split_hostport(sent_by)?;
        let host = Host::parse(src, host)?;
        let params = if text.contains(';') {
            if trim_lws(params).is_empty() {
                return Err(SyntaxError("empty Via parameter"));
            }
            parse_params(src, params, ParamSyntax::Header)?
        } else {
            Params::default()
        };
        Ok(Via {
            transport: src.slice_ref(transport),
            host,
            port,
            params,
        })
    }

    pub fn branch(&self) -> Option<&str> {
        self.params.value("branch").map(|v| v.as_str())
    }

    /// True when the branch carries the RFC 3261 magic cookie, so it alone identifies
    /// the transaction; otherwise RFC 2543 matching applies.
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch()
            .is_some_and(|b| b.len() > MAGIC_COOKIE.len() && b.starts_with(MAGIC_COOKIE))
    }

    pub fn received(&self) -> Option<&str> {
        self.params.value("received").map(|v| v.as_str())
    }

    /// `None` if absent, `Some(None)` for a bare `;rport` (a request asking for it).
    pub fn rport(&self) -> Option<Option<u16>> {
        self.params
            .get("rport")
            .map(|v| v.and_then(|p| p.parse().ok()))
    }

    /// The sent-by as a string, for transaction matching.
    pub fn sent_by(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.to_string(),
        }
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/2.0/{} {}", self.transport, self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write!(f, "{}", self.params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn via(s: &str) -> Result<Via, SyntaxError> {
        let src = SipStr::from(s);
        Via::parse(&src, &src)
    }

    #[test]
    fn parses_with_lws_everywhere() {
        let v = via("SIP  /   2.0 /UDP    192.0.2.2;branch=390skdjuw").unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.host.to_string(), "192.0.2.2");
        assert_eq!(v.branch(), Some("390skdjuw"));
        assert!(!v.has_rfc3261_branch());
        let v =
            via("SIP  / 2.0  / TCP     spindle.example.com   ;  branch  =   z9hG4bK9ikj8").unwrap();
        assert_eq!(v.branch(), Some("z9hG4bK9ikj8"));
        assert!(v.has_rfc3261_branch());
    }

    #[test]
    fn rport_received_and_ipv6() {
        let v = via(
            "SIP/2.0/UDP [2001:db8::9:1]:5070;branch=z9hG4bKas3;received=[2001:db8::9:255];rport",
        )
        .unwrap();
        assert_eq!(v.port, Some(5070));
        assert_eq!(v.received(), Some("[2001:db8::9:255]"));
        assert_eq!(v.rport(), Some(None));
        let v = via("SIP/2.0/UDP 10.0.0.1;rport=5062").unwrap();
        assert_eq!(v.rport(), Some(Some(5062)));
        assert_eq!(v.to_string(), "SIP/2.0/UDP 10.0.0.1;rport=5062");
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "SIP/2.0/UDP",
            "SIP/2.0 UDP host",
            "SIP/3.0/UDP host",
            "SIP/2.0/UDP 192.0.2.15;;",
            "SIP/2.0/UDP host;",
            "SIP/2.0/UDP ho st",
        ] {
            assert!(via(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn branch_is_only_magic_cookie() {
        let v = via("SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK").unwrap();
        assert!(!v.has_rfc3261_branch());
    }
}
