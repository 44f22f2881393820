//! name-addr / addr-spec with header parameters: From, To, Contact, Route, ...
//! (RFC 3261 §20.10, §25.1).

use super::params::{
    ParamSyntax, Params, SyntaxError, is_quoted_string, is_token, parse_params, quote, trim_lws,
    trim_lws_end, trim_lws_start, unquote,
};
use super::text::{FindByte, SipStr};
use super::uri::Uri;
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameAddr {
    /// Display name as written: a quoted string or LWS-separated tokens.
    pub display: Option<SipStr>,
    pub uri: Uri,
    pub params: Params,
}

impl NameAddr {
    pub fn new(uri: Uri) -> Self {
        NameAddr {
            display: None,
            uri,
            params: Params::default(),
        }
    }

    /// Parses `[display] <uri> *(;param)` or `addr-spec *(;param)`. In the addr-spec form
    /// the URI may not contain `,`, `?` or `;` (they belong to the header).
    pub fn parse(src: &SipStr, text: &str) -> Result<NameAddr, SyntaxError> {
        let text = trim_lws(text);
        let (display, uri_text, rest) = match find_laquot(text)? {
            Some(lt) => {
                let gt = text[lt..]
                    .find_byte(b'>')
                    .ok_or(SyntaxError("missing '>'"))?
                    + lt;
                let display = trim_lws(&text[..lt]);
                let display = if display.is_empty() {
                    None
                } else if is_quoted_string(display)
                    || display
                        .split([' ', '\t'])
                        .filter(|t| !t.is_empty())
                        .all(is_token)
                {
                    Some(src.slice_ref(display))
                } else {
                    return Err(SyntaxError("bad display name"));
                };
                (display, &text[lt + 1..gt], &text[gt + 1..])
            }
            None => {
                let end = text.find_byte(b';').unwrap_or(text.len());
                let uri = trim_lws_end(&text[..end]);
                if uri.contains(['?', ',']) {
                    return Err(SyntaxError("URI with headers must be in <>"));
                }
                (None, uri, &text[end..])
            }
        };
        let uri = Uri::parse(src, uri_text)?;
        let rest = trim_lws_start(rest);
        let params = if rest.is_empty() {
            Params::default()
        } else {
            let p = rest
                .strip_prefix(';')
                .ok_or(SyntaxError("junk after URI"))?;
            parse_params(src, p, ParamSyntax::Header)?
        };
        Ok(NameAddr {
            display,
            uri,
            params,
        })
    }

    pub fn parse_str(text: &str) -> Result<NameAddr, SyntaxError> {
        let src = SipStr::from(text);
        NameAddr::parse(&src, &src)
    }

    pub fn tag(&self) -> Option<&str> {
        self.params.value("tag").map(|v| v.as_str())
    }

    pub fn set_tag(&mut self, tag: &str) {
        self.params.set("tag", Some(SipStr::from(tag)));
    }

    /// The display name with quotes and escapes removed.
    pub fn display_name(&self) -> Option<String> {
        self.display.as_ref().map(|d| {
            if d.starts_with('"') {
                unquote(d)
            } else {
                d.to_string()
            }
        })
    }

    pub fn set_display_name(&mut self, name: Option<&str>) {
        self.display = name.map(|n| SipStr::from(quote(n)));
    }
}

/// Finds the `<` that opens the URI, skipping a quoted display name; a quote left open
/// is an error.
fn find_laquot(text: &str) -> Result<Option<usize>, SyntaxError> {
    let b = text.as_bytes();
    let mut i = 0;
    let mut quoted = false;
    while i < b.len() {
        match b[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b'<' if !quoted => return Ok(Some(i)),
            _ => {}
        }
        i += 1;
    }
    if quoted {
        return Err(SyntaxError("unterminated quoted string"));
    }
    Ok(None)
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display {
            write!(f, "{d} ")?;
        }
        write!(f, "<{}>{}", self.uri, self.params)
    }
}

/// A Contact header's value: `*` or addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Contacts {
    Star,
    List(Vec<NameAddr>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let a = NameAddr::parse_str(
            r#""J Rosenberg \\\""       <sip:jdrosen@example.com>  ;  tag = 98asjd8"#,
        )
        .unwrap();
        assert_eq!(a.display_name().as_deref(), Some(r#"J Rosenberg \""#));
        assert_eq!(a.tag(), Some("98asjd8"));
        let a = NameAddr::parse_str("sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n")
            .unwrap();
        assert_eq!(a.uri.to_string(), "sip:vivekg@chair-dnrc.example.com");
        assert_eq!(a.tag(), Some("1918181833n"));
        let a =
            NameAddr::parse_str("Bob Smith <sip:bob@b.example;transport=tcp>;expires=60").unwrap();
        assert_eq!(a.display_name().as_deref(), Some("Bob Smith"));
        assert_eq!(a.params.value("expires").map(|v| v.as_str()), Some("60"));
        assert_eq!(
            a.to_string(),
            "Bob Smith <sip:bob@b.example;transport=tcp>;expires=60"
        );
        let a = NameAddr::parse_str("caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(a.display_name().as_deref(), Some("caller"));
    }

    #[test]
    fn rejects_torture_cases() {
        for bad in [
            r#""Mr. J. User <sip:j.user@example.com>"#,
            "Bell, Alexander <sip:a.g.bell@example.com>;tag=43",
            r#""Watson, Thomas" < sip:t.watson@example.org >"#,
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            r#""Joe" <sip:joe@example.org>;;;;"#,
            "<sip:a@b> junk",
        ] {
            assert!(NameAddr::parse_str(bad).is_err(), "{bad}");
        }
    }
}
