//! `;name=value` parameter lists as found in URIs and header fields, and the
//! character classes of the RFC 3261 grammar they are checked against.

use super::text::{FindByte, SipStr};
use std::fmt;

/// A syntax error in a message part; the text names the part for the 400 reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyntaxError(pub &'static str);

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for SyntaxError {}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    pub name: SipStr,
    pub value: Option<SipStr>,
}

/// Parameters in their written order. Names compare case-insensitively.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params(pub Vec<Param>);

impl Params {
    /// `Some(None)` for a parameter present without a value, like `;lr` or `;rport`.
    pub fn get(&self, name: &str) -> Option<Option<&SipStr>> {
        self.0
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
            .map(|p| p.value.as_ref())
    }

    pub fn value(&self, name: &str) -> Option<&SipStr> {
        self.get(name).flatten()
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Sets a parameter, replacing an existing one of the same name in place.
    pub fn set(&mut self, name: &str, value: Option<SipStr>) {
        match self
            .0
            .iter_mut()
            .find(|p| p.name.eq_ignore_ascii_case(name))
        {
            Some(p) => p.value = value,
            None => self.0.push(Param {
                name: SipStr::from(name),
                value,
            }),
        }
    }

    pub fn remove(&mut self, name: &str) {
        self.0.retain(|p| !p.name.eq_ignore_ascii_case(name));
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Param> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.0 {
            write!(f, ";{}", p.name)?;
            if let Some(v) = &p.value {
                write!(f, "={v}")?;
            }
        }
        Ok(())
    }
}

/// Which characters a parameter may use: URI parameters (RFC 3261 `paramchar`) or
/// header `generic-param` (token, host or quoted-string values).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ParamSyntax {
    Uri,
    Header,
}

/// Parses `;a=b;c` (the text after the first `;`, or empty). `src` is the `SipStr`
/// that `text` lies in, so names and values are shared slices.
pub fn parse_params(src: &SipStr, text: &str, syntax: ParamSyntax) -> Result<Params, SyntaxError> {
    let mut params = Vec::new();
    if text.is_empty() {
        return Ok(Params(params));
    }
    for raw in split_unquoted(text, b';') {
        let raw = if syntax == ParamSyntax::Header {
            trim_lws(raw)
        } else {
            raw
        };
        let (name, value) = match raw.find_byte(b'=') {
            Some(eq) => {
                let (n, v) = (&raw[..eq], &raw[eq + 1..]);
                match syntax {
                    ParamSyntax::Header => (trim_lws_end(n), Some(trim_lws_start(v))),
                    ParamSyntax::Uri => (n, Some(v)),
                }
            }
            None => (raw, None),
        };
        let name_ok = match syntax {
            ParamSyntax::Uri => {
                !name.is_empty() && name.bytes().all(is_paramchar) && escapes_ok(name)
            }
            ParamSyntax::Header => is_token(name),
        };
        if !name_ok {
            return Err(SyntaxError("bad parameter name"));
        }
        if let Some(v) = value {
            let value_ok = match syntax {
                ParamSyntax::Uri => !v.is_empty() && v.bytes().all(is_paramchar) && escapes_ok(v),
                ParamSyntax::Header => is_token(v) || is_quoted_string(v) || is_address_value(v),
            };
            if !value_ok {
                return Err(SyntaxError("bad parameter value"));
            }
        }
        params.push(Param {
            name: src.slice_ref(name),
            value: value.map(|v| src.slice_ref(v)),
        });
    }
    Ok(Params(params))
}

/// Splits `text` at `delim` where it stands outside quoted strings and `<...>`: the
/// one splitter behind comma-separated header lists and `;` parameter lists. Pieces are
/// not trimmed; empty pieces are kept so validation can see them.
pub fn split_unquoted(text: &str, delim: u8) -> SplitUnquoted<'_> {
    SplitUnquoted {
        text,
        delim,
        pos: 0,
        done: false,
    }
}

pub struct SplitUnquoted<'a> {
    text: &'a str,
    delim: u8,
    pos: usize,
    done: bool,
}

impl<'a> Iterator for SplitUnquoted<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.done {
            return None;
        }
        let bytes = self.text.as_bytes();
        let mut i = self.pos;
        // Jump between the only bytes that matter: the delimiter and the openers of
        // quoted strings and `<...>`; inside those, jump to their closers.
        while let Some(off) = memchr::memchr3(self.delim, b'"', b'<', &bytes[i..]) {
            i += off;
            match bytes[i] {
                b'"' => i = closing_quote(bytes, i + 1),
                b'<' => i = memchr::memchr(b'>', &bytes[i..]).map_or(bytes.len(), |o| i + o),
                _ => {
                    let piece = &self.text[self.pos..i];
                    self.pos = i + 1;
                    return Some(piece);
                }
            }
            i = (i + 1).min(bytes.len());
        }
        self.done = true;
        Some(&self.text[self.pos.min(self.text.len())..])
    }
}

/// The index of the `"` closing a quoted string whose contents start at `from`
/// (quoted-pairs skipped), or the end of the text when it is unterminated.
pub fn closing_quote(bytes: &[u8], from: usize) -> usize {
    let mut i = from;
    while let Some(off) = memchr::memchr2(b'"', b'\\', &bytes[i.min(bytes.len())..]) {
        i += off;
        if bytes[i] == b'"' {
            return i;
        }
        i += 2;
    }
    bytes.len()
}

/// `s` without leading and trailing SP and HTAB. Byte loops: `trim_matches` with a
/// char predicate decodes every char it looks at, and the parser trims each value.
pub fn trim_lws(s: &str) -> &str {
    trim_lws_end(trim_lws_start(s))
}

pub fn trim_lws_start(s: &str) -> &str {
    let n = s.bytes().take_while(|&b| b == b' ' || b == b'\t').count();
    &s[n..]
}

pub fn trim_lws_end(s: &str) -> &str {
    let n = s
        .bytes()
        .rev()
        .take_while(|&b| b == b' ' || b == b'\t')
        .count();
    &s[..s.len() - n]
}

/// RFC 3261 `token`.
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| TOKEN_CHARS[usize::from(b)])
}

/// `token` characters by byte value: one load per byte instead of a chain of range
/// tests (header names and every parameter are checked with it).
static TOKEN_CHARS: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            );
        b += 1;
    }
    table
};

/// RFC 3261 `unreserved`.
pub fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
        )
}

/// RFC 3261 `paramchar` (with `%` for escapes, checked by [`escapes_ok`]).
pub fn is_paramchar(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'[' | b']' | b'/' | b':' | b'&' | b'+' | b'$' | b'%')
}

/// Every `%` is followed by two hex digits.
pub fn escapes_ok(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if i + 2 >= b.len() || !(b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit()) {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

/// A complete `quoted-string`, escapes included, nothing after the closing quote.
pub fn is_quoted_string(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 2 || b[0] != b'"' {
        return false;
    }
    let mut i = 1;
    while i < b.len() {
        match b[i] {
            b'\\' => {
                // quoted-pair may escape any octet except CR and LF.
                if i + 1 >= b.len() || matches!(b[i + 1], b'\r' | b'\n') {
                    return false;
                }
                i += 2;
            }
            b'"' => return i == b.len() - 1,
            _ => i += 1,
        }
    }
    false
}

/// The contents of a quoted string with escapes removed.
pub fn unquote(s: &str) -> String {
    let inner = s
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Quotes a string for a display name or parameter value.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// An IPv6 address with or without brackets, as in `received=` (RFC 5118 §4.5).
fn is_address_value(s: &str) -> bool {
    let inner = s
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(s);
    inner.contains(':')
        && inner
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
}

/// Decodes `%HH` escapes; the result may hold any byte, `%00` included.
pub fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex_val(b[i + 1]), hex_val(b[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn hex_val(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_params_allow_quoted_values_and_lws() {
        let src = SipStr::from(r#"tag=1 ; x="a;b" ;lr ; received=[2001:db8::9:255]"#);
        let p = parse_params(&src, &src, ParamSyntax::Header).unwrap();
        assert_eq!(p.value("tag").map(|v| v.as_str()), Some("1"));
        assert_eq!(p.value("X").map(|v| v.as_str()), Some(r#""a;b""#));
        assert_eq!(p.get("lr"), Some(None));
        assert_eq!(
            p.value("received").map(|v| v.as_str()),
            Some("[2001:db8::9:255]")
        );
    }

    #[test]
    fn empty_params_are_errors() {
        let src = SipStr::from(";,");
        assert!(parse_params(&src, &src, ParamSyntax::Header).is_err());
        let src = SipStr::from("lr;");
        assert!(parse_params(&src, &src, ParamSyntax::Uri).is_err());
    }

    #[test]
    fn escapes_and_quotes() {
        assert!(escapes_ok("a%20b"));
        assert!(!escapes_ok("a%2"));
        assert!(!escapes_ok("%zz"));
        assert_eq!(unescape("a%00b%41"), b"a\0bA".to_vec());
        assert!(is_quoted_string(r#""a \" b""#));
        assert!(!is_quoted_string(r#""unterminated"#));
        assert_eq!(unquote(r#""a \" b""#), r#"a " b"#);
        assert_eq!(quote(r#"a"b"#), r#""a\"b""#);
    }
}
