//! Header names and the ordered header list of a message.
//!
//! Every header is kept as received, in order, with its name as written; known names
//! (including compact forms) are also mapped to a [`Known`] tag so lookups don't
//! compare strings.

use super::params::split_unquoted;
use super::text::SipStr;

macro_rules! known_headers {
    ($($variant:ident => $canonical:literal, $($lower:literal)|+;)*) => {
        /// Header names switchboard understands. Compact forms map to the same tag.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Known { $($variant,)* }

        impl Known {
            pub fn canonical(self) -> &'static str {
                match self { $(Known::$variant => $canonical,)* }
            }

            /// Case-insensitive lookup of a full or compact header name: lowercased into
            /// a stack buffer, then one `match` the compiler turns into a decision tree.
            pub fn lookup(name: &str) -> Option<Known> {
                let mut buf = [0u8; 24];
                let bytes = name.as_bytes();
                let lower = buf.get_mut(..bytes.len())?;
                for (d, s) in lower.iter_mut().zip(bytes) {
                    *d = s.to_ascii_lowercase();
                }
                match &*lower {
                    $($($lower)|+ => Some(Known::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

known_headers! {
    Accept => "Accept", b"accept";
    AcceptContact => "Accept-Contact", b"accept-contact" | b"a";
    AcceptEncoding => "Accept-Encoding", b"accept-encoding";
    AcceptLanguage => "Accept-Language", b"accept-language";
    AlertInfo => "Alert-Info", b"alert-info";
    Allow => "Allow", b"allow";
    AllowEvents => "Allow-Events", b"allow-events" | b"u";
    Authorization => "Authorization", b"authorization";
    CallId => "Call-ID", b"call-id" | b"i";
    CallInfo => "Call-Info", b"call-info";
    Contact => "Contact", b"contact" | b"m";
    ContentDisposition => "Content-Disposition", b"content-disposition";
    ContentEncoding => "Content-Encoding", b"content-encoding" | b"e";
    ContentLanguage => "Content-Language", b"content-language";
    ContentLength => "Content-Length", b"content-length" | b"l";
    ContentType => "Content-Type", b"content-type" | b"c";
    CSeq => "CSeq", b"cseq";
    Date => "Date", b"date";
    ErrorInfo => "Error-Info", b"error-info";
    Event => "Event", b"event" | b"o";
    Expires => "Expires", b"expires";
    From => "From", b"from" | b"f";
    InReplyTo => "In-Reply-To", b"in-reply-to";
    MaxForwards => "Max-Forwards", b"max-forwards";
    MimeVersion => "MIME-Version", b"mime-version";
    MinExpires => "Min-Expires", b"min-expires";
    MinSe => "Min-SE", b"min-se";
    Organization => "Organization", b"organization";
    PAssertedIdentity => "P-Asserted-Identity", b"p-asserted-identity";
    PPreferredIdentity => "P-Preferred-Identity", b"p-preferred-identity";
    Priority => "Priority", b"priority";
    Privacy => "Privacy", b"privacy";
    ProxyAuthenticate => "Proxy-Authenticate", b"proxy-authenticate";
    ProxyAuthorization => "Proxy-Authorization", b"proxy-authorization";
    ProxyRequire => "Proxy-Require", b"proxy-require";
    RAck => "RAck", b"rack";
    Reason => "Reason", b"reason";
    RecordRoute => "Record-Route", b"record-route";
    ReferTo => "Refer-To", b"refer-to" | b"r";
    ReferredBy => "Referred-By", b"referred-by" | b"b";
    RejectContact => "Reject-Contact", b"reject-contact" | b"j";
    Replaces => "Replaces", b"replaces";
    ReplyTo => "Reply-To", b"reply-to";
    RequestDisposition => "Request-Disposition", b"request-disposition" | b"d";
    Require => "Require", b"require";
    RetryAfter => "Retry-After", b"retry-after";
    Route => "Route", b"route";
    RSeq => "RSeq", b"rseq";
    Server => "Server", b"server";
    SessionExpires => "Session-Expires", b"session-expires" | b"x";
    Subject => "Subject", b"subject" | b"s";
    SubscriptionState => "Subscription-State", b"subscription-state";
    Supported => "Supported", b"supported" | b"k";
    Timestamp => "Timestamp", b"timestamp";
    To => "To", b"to" | b"t";
    Unsupported => "Unsupported", b"unsupported";
    UserAgent => "User-Agent", b"user-agent";
    Via => "Via", b"via" | b"v";
    Warning => "Warning", b"warning";
    WwwAuthenticate => "WWW-Authenticate", b"www-authenticate";
}

impl Known {
    /// Headers whose values are comma-separated lists (RFC 3261 §7.3.1). Others may
    /// contain commas inside their single value (dates, auth parameters).
    pub fn is_list(self) -> bool {
        matches!(
            self,
            Known::Accept
                | Known::AcceptEncoding
                | Known::AcceptLanguage
                | Known::AlertInfo
                | Known::Allow
                | Known::AllowEvents
                | Known::CallInfo
                | Known::Contact
                | Known::ContentEncoding
                | Known::ContentLanguage
                | Known::ErrorInfo
                | Known::InReplyTo
                | Known::PAssertedIdentity
                | Known::ProxyRequire
                | Known::Reason
                | Known::RecordRoute
                | Known::Require
                | Known::Route
                | Known::Supported
                | Known::Unsupported
                | Known::Via
                | Known::Warning
        )
    }
}

/// A header name as written, with its known tag if it has one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderName {
    raw: SipStr,
    known: Option<Known>,
}

impl HeaderName {
    pub fn new(raw: SipStr) -> Self {
        let known = Known::lookup(&raw);
        HeaderName { raw, known }
    }

    /// A name as received in `src`. A known name spelled the canonical way shares the
    /// static spelling rather than the message's buffer: most names are, and a slice
    /// of the buffer costs a reference count taken and later dropped.
    pub fn parsed(src: &SipStr, name: &str) -> Self {
        match Known::lookup(name) {
            Some(k) if k.canonical() == name => HeaderName::from(k),
            known => HeaderName {
                raw: src.slice_ref(name),
                known,
            },
        }
    }

    pub fn as_str(&self) -> &str {
        self.raw.as_str()
    }

    pub fn known(&self) -> Option<Known> {
        self.known
    }

    /// True for the same header under any spelling or compact form.
    pub fn matches(&self, name: &str) -> bool {
        match (self.known, Known::lookup(name)) {
            (Some(a), Some(b)) => a == b,
            _ => self.raw.eq_ignore_ascii_case(name),
        }
    }
}

impl From<Known> for HeaderName {
    fn from(k: Known) -> Self {
        HeaderName {
            raw: SipStr::from_static(k.canonical()),
            known: Some(k),
        }
    }
}

/// One header line: name and value (leading/trailing whitespace and folding removed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub name: HeaderName,
    pub value: SipStr,
}

/// The headers of a message in their received order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers(Vec<Header>);

impl Headers {
    pub fn new() -> Self {
        Headers(Vec::new())
    }

    pub fn with_capacity(n: usize) -> Self {
        Headers(Vec::with_capacity(n))
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Header> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first header of this kind.
    pub fn get(&self, k: Known) -> Option<&SipStr> {
        self.0
            .iter()
            .find(|h| h.name.known == Some(k))
            .map(|h| &h.value)
    }

    /// Every header line of this kind, in order.
    pub fn get_all(&self, k: Known) -> impl Iterator<Item = &SipStr> {
        self.0
            .iter()
            .filter(move |h| h.name.known == Some(k))
            .map(|h| &h.value)
    }

    /// Every header line with this name (any spelling), for unknown headers too.
    pub fn get_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a SipStr> {
        self.0
            .iter()
            .filter(move |h| h.name.matches(name))
            .map(|h| &h.value)
    }

    /// Every element of a list header across all its lines, split at top-level commas.
    pub fn list(&self, k: Known) -> impl Iterator<Item = SipStr> + '_ {
        self.get_all(k)
            .flat_map(|v| split_list(v).map(|part| v.slice_ref(part)))
    }

    pub fn count(&self, k: Known) -> usize {
        self.get_all(k).count()
    }

    pub fn contains(&self, k: Known) -> bool {
        self.get(k).is_some()
    }

    pub fn push(&mut self, name: impl Into<HeaderName>, value: impl Into<SipStr>) {
        self.0.push(Header {
            name: name.into(),
            value: value.into(),
        });
    }

    /// Inserts before the first header (a new top Via, say).
    pub fn push_front(&mut self, name: impl Into<HeaderName>, value: impl Into<SipStr>) {
        self.0.insert(
            0,
            Header {
                name: name.into(),
                value: value.into(),
            },
        );
    }

    /// Replaces every header of this kind with one value, at the first one's place.
    pub fn set(&mut self, k: Known, value: impl Into<SipStr>) {
        let value = value.into();
        match self.0.iter().position(|h| h.name.known == Some(k)) {
            Some(i) => {
                self.0[i].value = value;
                let mut idx = 0;
                self.0.retain(|h| {
                    let keep = idx <= i || h.name.known != Some(k);
                    idx += 1;
                    keep
                });
            }
            None => self.push(k, value),
        }
    }

    pub fn remove(&mut self, k: Known) {
        self.0.retain(|h| h.name.known != Some(k));
    }

    /// Removes the first element of a list header (the top Via, say), dropping the
    /// line if it held only that element.
    pub fn remove_first_element(&mut self, k: Known) {
        let Some(i) = self.0.iter().position(|h| h.name.known == Some(k)) else {
            return;
        };
        let value = self.0[i].value.clone();
        let mut parts = split_list(&value);
        parts.next();
        match parts.next() {
            Some(second) => {
                let rest_start = second.as_ptr() as usize - value.as_ptr() as usize;
                self.0[i].value = value.slice_ref(&value[rest_start..]);
            }
            None => {
                self.0.remove(i);
            }
        }
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = &'a Header;
    type IntoIter = std::slice::Iter<'a, Header>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Splits a header value at commas outside quoted strings and `<...>`, trimming
/// whitespace around each element. Empty elements are kept so validation can see them.
pub fn split_list(value: &str) -> impl Iterator<Item = &str> {
    split_unquoted(value, b',').map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_full_and_compact_forms_case_insensitively() {
        assert_eq!(Known::lookup("via"), Some(Known::Via));
        assert_eq!(Known::lookup("V"), Some(Known::Via));
        assert_eq!(Known::lookup("cAlL-iD"), Some(Known::CallId));
        assert_eq!(Known::lookup("i"), Some(Known::CallId));
        assert_eq!(Known::lookup("l"), Some(Known::ContentLength));
        assert_eq!(
            Known::lookup("WWW-Authenticate"),
            Some(Known::WwwAuthenticate)
        );
        assert_eq!(Known::lookup("X-Custom"), None);
        assert_eq!(Known::lookup("a-very-long-header-name-beyond-buffer"), None);
    }

    #[test]
    fn split_list_respects_quotes_and_angles() {
        assert_eq!(
            split_list(r#""a, b" <sip:x@y;p=1,2>;q=1 , <sip:z>"#).collect::<Vec<_>>(),
            vec![r#""a, b" <sip:x@y;p=1,2>;q=1"#, "<sip:z>"]
        );
        assert_eq!(split_list("a,,b").collect::<Vec<_>>(), vec!["a", "", "b"]);
        assert_eq!(
            split_list(r#""x\"," , y"#).collect::<Vec<_>>(),
            vec![r#""x\",""#, "y"]
        );
    }

    #[test]
    fn set_replaces_all_and_remove_first_element_splits() {
        let mut h = Headers::new();
        h.push(Known::Via, "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b");
        h.push(Known::MaxForwards, "70");
        h.push(Known::Via, "SIP/2.0/UDP c");
        h.remove_first_element(Known::Via);
        assert_eq!(
            h.list(Known::Via).collect::<Vec<_>>(),
            vec!["SIP/2.0/UDP b", "SIP/2.0/UDP c"]
        );
        h.set(Known::Via, "SIP/2.0/TCP d");
        assert_eq!(h.count(Known::Via), 1);
        assert_eq!(
            h.iter().next().map(|h| h.value.as_str()),
            Some("SIP/2.0/TCP d")
        );
    }
}

#[cfg(test)]
mod size_tests {
    #[test]
    fn a_parsed_message_header_vector_stays_under_one_kib() {
        // parse.rs sizes the header vector for 14 headers; see the comment there.
        assert!(14 * std::mem::size_of::<super::Header>() < 1024);
    }
}
