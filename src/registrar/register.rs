//! RFC 3261 §10.3 steps 5–8 for an authenticated REGISTER: read the AOR, the Contacts,
//! their expiry and q-values, apply the Call-ID/CSeq ordering rules, and plan the
//! binding changes; then the 200 OK listing what is bound. Pure: the registrar commits
//! the plan to the store and the index.

use super::RegistrarSettings;
use super::location::{Entry, transport_name};
use crate::sip::transaction::Peer;
use crate::sip::{Contacts, Known, NameAddr, Request, Response, Uri};
use crate::store::Binding;
use std::fmt::Write as _;

/// A change to one binding of the AOR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Op {
    Put(Binding),
    Remove { contact: String },
}

/// Why a REGISTER changes nothing and gets an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// 400 with this detail in the reason phrase.
    BadRequest(&'static str),
    /// 423: a contact asked for less than the minimum (answered with Min-Expires).
    IntervalTooBrief,
    /// 500: the same Call-ID with a CSeq not above the stored one (§10.3 step 7).
    OutOfOrder,
}

/// The extension named by the To header's user part, unescaped; `None` when it has
/// no user part, or one that is not UTF-8.
pub(super) fn aor_user(req: &Request) -> Option<String> {
    let to = req.to().ok()?;
    let user = to.uri.as_sip()?.user_unescaped()?;
    String::from_utf8(user).ok()
}

/// What the request is for, once authenticated as `aor`.
pub(super) struct RegisterRequest<'a> {
    pub req: &'a Request,
    pub aor: &'a str,
    pub source: Peer,
    pub now: u64,
}

impl RegisterRequest<'_> {
    /// The binding changes this REGISTER asks for, checked against the AOR's current
    /// `existing` bindings. Nothing is changed unless every contact is acceptable, so
    /// the request is applied as a whole or not at all.
    pub(super) fn plan(
        &self,
        existing: &[Entry],
        settings: &RegistrarSettings,
    ) -> Result<Vec<Op>, Refusal> {
        let call_id = self
            .req
            .call_id()
            .ok_or(Refusal::BadRequest("missing Call-ID"))?;
        let cseq = self
            .req
            .cseq()
            .map_err(|_| Refusal::BadRequest("bad CSeq"))?
            .seq;
        let header_expires = match self.req.number(Known::Expires) {
            None => None,
            Some(Ok(n)) => Some(n),
            // Validated as digits by the parser; only too large to fit remains.
            Some(Err(_)) => Some(u32::MAX),
        };
        // An existing binding with our Call-ID may only be changed by a higher CSeq.
        let in_order = |old: &Binding| old.call_id != call_id.as_str() || cseq > old.cseq;
        let contacts = self
            .req
            .contacts()
            .map_err(|_| Refusal::BadRequest("bad Contact"))?;
        match contacts {
            None => Ok(Vec::new()),
            Some(Contacts::Star) => {
                if header_expires != Some(0) {
                    return Err(Refusal::BadRequest("Contact * needs Expires: 0"));
                }
                let mut ops = Vec::new();
                for entry in existing {
                    if entry.is_live(self.now) && !in_order(&entry.binding) {
                        return Err(Refusal::OutOfOrder);
                    }
                    ops.push(Op::Remove {
                        contact: entry.binding.contact.clone(),
                    });
                }
                Ok(ops)
            }
            Some(Contacts::List(list)) => {
                let mut ops = Vec::with_capacity(list.len());
                for contact in &list {
                    let uri = match &contact.uri {
                        Uri::Sip(_) => &contact.uri,
                        _ => return Err(Refusal::BadRequest("Contact must be a SIP URI")),
                    };
                    let expires = expiry(contact, header_expires, settings)?;
                    let q_thousandths = match contact.params.get("q") {
                        None => 1000,
                        Some(v) => v
                            .and_then(|v| parse_q(v))
                            .ok_or(Refusal::BadRequest("bad q-value"))?,
                    };
                    let old = existing
                        .iter()
                        .find(|e| e.uri.equivalent(uri))
                        .filter(|e| e.is_live(self.now));
                    if let Some(old) = old
                        && !in_order(&old.binding)
                    {
                        return Err(Refusal::OutOfOrder);
                    }
                    // An equivalent contact keeps the spelling it was stored under.
                    let key = old.map_or_else(|| uri.to_string(), |o| o.binding.contact.clone());
                    if expires == 0 {
                        ops.push(Op::Remove { contact: key });
                        continue;
                    }
                    ops.push(Op::Put(Binding {
                        aor: self.aor.to_owned(),
                        contact: key,
                        expires_at_unix: self.now + u64::from(expires),
                        q_thousandths,
                        call_id: call_id.to_string(),
                        cseq,
                        source: self.source.addr,
                        transport: transport_name(self.source.transport).to_owned(),
                        connection_id: self.source.conn,
                        user_agent: self
                            .req
                            .headers
                            .get(Known::UserAgent)
                            .map(|u| u.to_string()),
                        registered_at_unix: old.map_or(self.now, |o| o.binding.registered_at_unix),
                    }));
                }
                Ok(ops)
            }
        }
    }
}

/// A contact's expiry in seconds: its `expires` parameter, else the Expires header,
/// else the default; capped at the maximum. Zero means remove. A malformed parameter
/// counts as the default (RFC 3261 §20.10 and §20.19 both say: treat as 3600).
fn expiry(
    contact: &NameAddr,
    header_expires: Option<u32>,
    settings: &RegistrarSettings,
) -> Result<u32, Refusal> {
    let requested = match contact.params.get("expires") {
        Some(Some(v)) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
            // Digits beyond u32 mean "as long as possible".
            v.parse::<u32>().unwrap_or(u32::MAX)
        }
        Some(_) => settings.default_expires,
        None => header_expires.unwrap_or(settings.default_expires),
    };
    if requested != 0 && requested < settings.min_expires {
        return Err(Refusal::IntervalTooBrief);
    }
    Ok(requested.min(settings.max_expires))
}

/// A qvalue (RFC 3261 §25.1: `0[.ddd]` or `1[.000]`) in thousandths.
fn parse_q(text: &str) -> Option<u16> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths: u16 = format!("{frac:0<3}").parse().ok()?;
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// `q=0.5` from 500; trailing zeros dropped.
fn format_q(thousandths: u16) -> String {
    match thousandths {
        1000.. => "1".to_owned(),
        0 => "0".to_owned(),
        _ => format!("0.{}", format!("{thousandths:03}").trim_end_matches('0')),
    }
}

/// The 200 OK to a REGISTER (§10.3 step 8): every live binding of the AOR with its
/// remaining expiry, and the registrar's Date so phones with no clock can set one.
pub(super) fn ok_response(mut resp: Response, live: &[&Entry], now: u64) -> Response {
    for entry in live {
        let b = &entry.binding;
        let mut value = format!("<{}>;expires={}", b.contact, b.expires_at_unix - now);
        if b.q_thousandths != 1000 {
            let _ = write!(value, ";q={}", format_q(b.q_thousandths));
        }
        resp.headers.push(Known::Contact, value);
    }
    resp.headers.push(Known::Date, http_date(now));
    resp
}

/// An RFC 1123 date in GMT, the form SIP's Date header uses (RFC 3261 §20.17).
pub(super) fn http_date(unix: u64) -> String {
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix / 86_400;
    let secs = unix % 86_400;
    let is_leap = |y: u64| (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
    let (mut year, mut day) = (1970u64, days);
    loop {
        let len = if is_leap(year) { 366 } else { 365 };
        if day < len {
            break;
        }
        day -= len;
        year += 1;
    }
    let month_lengths = [
        31,
        if is_leap(year) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let mut month = 0;
    while day >= month_lengths[month] {
        day -= month_lengths[month];
        month += 1;
    }
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[(days % 7) as usize],
        day + 1,
        MONTHS[month],
        year,
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        // RFC 3261 §20.17's example.
        assert_eq!(http_date(1_289_690_940), "Sat, 13 Nov 2010 23:29:00 GMT");
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        // A leap day, and the last second of a leap year.
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(http_date(1_735_689_599), "Tue, 31 Dec 2024 23:59:59 GMT");
    }

    #[test]
    fn q_values() {
        for (text, q) in [
            ("1", 1000),
            ("1.0", 1000),
            ("1.000", 1000),
            ("0", 0),
            ("0.5", 500),
            ("0.05", 50),
            ("0.123", 123),
        ] {
            assert_eq!(parse_q(text), Some(q), "{text}");
        }
        for bad in ["", "2", "1.5", "0.1234", ".5", "0.x", "-0"] {
            assert_eq!(parse_q(bad), None, "{bad}");
        }
        for (q, text) in [
            (1000, "1"),
            (500, "0.5"),
            (50, "0.05"),
            (123, "0.123"),
            (0, "0"),
        ] {
            assert_eq!(format_q(q), text);
            assert_eq!(parse_q(text), Some(q));
        }
    }
}
