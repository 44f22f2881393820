//! Session timers (RFC 4028): the Session-Expires and Min-SE headers, the 422 exchange,
//! who refreshes, and when to refresh or give up.
//!
//! A session timer is set by each INVITE or UPDATE transaction that carries
//! Session-Expires, and `refresher=uac|uas` names a side of *that* transaction, so a
//! [`SessionTimer`] remembers which side we were. Deadlines are computed from the
//! `Instant` the caller passes: when the session was last refreshed, that is when the
//! 2xx of the latest such transaction was sent or received.

use super::Role;
use crate::sip::checks::Rejection;
use crate::sip::{Headers, Known, Request, Response, SipStr, SyntaxError, reason_phrase};
use std::fmt;
use std::time::{Duration, Instant};

/// The lowest Min-SE allowed, and what an absent Min-SE means (§4, §5).
pub const MIN_SE_FLOOR: u32 = 90;

/// The option tag of the extension.
const TIMER: &str = "timer";

/// Which side of the transaction that set the interval sends the refreshes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refresher {
    Uac,
    Uas,
}

impl Refresher {
    pub fn as_str(self) -> &'static str {
        match self {
            Refresher::Uac => "uac",
            Refresher::Uas => "uas",
        }
    }
}

/// A Session-Expires value: `delta-seconds *( ";" se-params )` (§4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionExpires {
    pub interval: u32,
    pub refresher: Option<Refresher>,
}

impl SessionExpires {
    pub fn parse(value: &str) -> Result<SessionExpires, SyntaxError> {
        let err = SyntaxError("malformed Session-Expires");
        let mut parts = value.split(';');
        let interval = parse_delta(parts.next().unwrap_or_default()).ok_or(err)?;
        let mut refresher = None;
        for param in parts {
            let (name, v) = param.split_once('=').unwrap_or((param, ""));
            if name.trim().eq_ignore_ascii_case("refresher") {
                let v = v.trim();
                refresher = Some(if v.eq_ignore_ascii_case("uac") {
                    Refresher::Uac
                } else if v.eq_ignore_ascii_case("uas") {
                    Refresher::Uas
                } else {
                    return Err(err);
                });
            }
        }
        Ok(SessionExpires {
            interval,
            refresher,
        })
    }

    /// The message's Session-Expires (compact form `x` included), if any.
    pub fn of(headers: &Headers) -> Option<Result<SessionExpires, SyntaxError>> {
        headers
            .get(Known::SessionExpires)
            .map(|v| SessionExpires::parse(v))
    }
}

impl fmt::Display for SessionExpires {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.interval)?;
        if let Some(r) = self.refresher {
            write!(f, ";refresher={}", r.as_str())?;
        }
        Ok(())
    }
}

/// `delta-seconds`, leading and trailing whitespace allowed.
fn parse_delta(text: &str) -> Option<u32> {
    let text = text.trim();
    if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u64>().ok().and_then(|n| u32::try_from(n).ok())
}

/// The message's Min-SE (§5): [`MIN_SE_FLOOR`] when absent; its parameters ignored.
pub fn min_se(headers: &Headers) -> Result<u32, SyntaxError> {
    match headers.get(Known::MinSe) {
        None => Ok(MIN_SE_FLOOR),
        Some(v) => parse_delta(v.split(';').next().unwrap_or_default())
            .ok_or(SyntaxError("malformed Min-SE")),
    }
}

fn supports_timer(headers: &Headers) -> bool {
    headers
        .list(Known::Supported)
        .any(|tag| tag.eq_ignore_ascii_case(TIMER))
}

/// Session-Expires, Min-SE and `Supported: timer` for a request we send (§7.1, §7.4).
fn add_request_headers(req: &mut Request, se: SessionExpires, min_se: u32) {
    if !supports_timer(&req.headers) {
        req.headers
            .push(Known::Supported, SipStr::from_static(TIMER));
    }
    req.headers.set(Known::SessionExpires, se.to_string());
    req.headers.set(Known::MinSe, min_se.to_string());
}

/// What this side wants of session timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerPolicy {
    /// The interval we ask for, and the longest we accept (§4 recommends 1800 s).
    pub interval: u32,
    /// The shortest we accept; [`MIN_SE_FLOOR`] unless configured lower for tests.
    pub min_se: u32,
    /// Who refreshes when we answer a request that leaves the choice to us.
    pub uas_refresher: Refresher,
}

impl Default for TimerPolicy {
    fn default() -> Self {
        TimerPolicy {
            interval: 1800,
            min_se: MIN_SE_FLOOR,
            uas_refresher: Refresher::Uac,
        }
    }
}

impl TimerPolicy {
    /// The policy of `[sip] session_expires_secs` and `min_se_secs`. A minimum below
    /// [`MIN_SE_FLOOR`] breaks §4 but lets tests see sessions expire in seconds.
    pub fn new(interval: u32, min_se: u32) -> TimerPolicy {
        TimerPolicy {
            interval,
            min_se,
            ..TimerPolicy::default()
        }
    }

    /// Adds `Supported: timer`, Session-Expires (no refresher: the UAS picks) and
    /// Min-SE to an INVITE we originate (§7.1).
    pub fn add_to_request(&self, req: &mut Request) {
        let se = SessionExpires {
            interval: self.interval,
            refresher: None,
        };
        add_request_headers(req, se, self.min_se);
    }

    /// The policy for retrying a request that got 422 (§7.4): its Min-SE becomes our
    /// minimum and our interval. `None` when the 422 has no Min-SE or asks for nothing
    /// more than we sent, since the retry would fail the same way.
    pub fn after_422(&self, resp: &Response) -> Option<TimerPolicy> {
        resp.headers.get(Known::MinSe)?;
        let theirs = min_se(&resp.headers).ok()?;
        (theirs > self.interval).then_some(TimerPolicy {
            interval: theirs,
            min_se: self.min_se.max(theirs),
            ..*self
        })
    }

    /// Our answer, as UAS, to an INVITE or UPDATE (§9). `Err` is the 422 for an
    /// interval below our minimum, sent only to a UAC that supports timers (it can
    /// retry; an interval a proxy inserted for a UAC that can't is raised instead).
    /// `Ok(None)`: no timer, because the UAC neither asked for one nor supports them.
    /// A Session-Expires or Min-SE that doesn't parse is ignored rather than failing
    /// the call. Otherwise the interval is the request's, cut to our maximum, never
    /// below either side's minimum; the refresher is the request's choice, or ours if
    /// it left it open, or us (`uas`) for a UAC without timer support.
    pub fn answer(&self, req: &Request) -> Result<Option<SessionTimer>, Rejection> {
        let supported = supports_timer(&req.headers);
        let asked = SessionExpires::of(&req.headers).and_then(Result::ok);
        let floor = min_se(&req.headers)
            .unwrap_or(MIN_SE_FLOOR)
            .max(self.min_se);
        let (interval, refresher) = match asked {
            Some(se) if se.interval < self.min_se && supported => {
                return Err(Rejection {
                    status: 422,
                    reason: reason_phrase(422),
                    headers: vec![(Known::MinSe, self.min_se.to_string())],
                });
            }
            Some(se) => (
                se.interval.min(self.interval).max(floor),
                if supported {
                    se.refresher.unwrap_or(self.uas_refresher)
                } else {
                    Refresher::Uas
                },
            ),
            None if supported => (self.interval.max(floor), self.uas_refresher),
            None => return Ok(None),
        };
        Ok(Some(SessionTimer {
            interval,
            refresher,
            local_role: Role::Uas,
            peer_supports: supported,
            min_se: floor,
        }))
    }

    /// The timer a 2xx to our INVITE or UPDATE sets (§7.2). `None` when it has no
    /// Session-Expires: the session then has no timer (a response can turn it off).
    /// A 2xx that names no refresher breaks §9; we refresh then, since refreshes that
    /// aren't needed cost little and a session nobody refreshes dies. An interval
    /// below the Min-SE we sent breaks §9 too and is raised to it.
    pub fn from_response(&self, resp: &Response) -> Option<SessionTimer> {
        let se = SessionExpires::of(&resp.headers)?.ok()?;
        Some(SessionTimer {
            interval: se.interval.max(self.min_se),
            refresher: se.refresher.unwrap_or(Refresher::Uac),
            local_role: Role::Uac,
            peer_supports: true,
            min_se: self.min_se,
        })
    }
}

/// The session timer of a dialog, as the latest refreshing transaction set it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionTimer {
    /// Seconds.
    interval: u32,
    refresher: Refresher,
    /// Our side of the transaction that set it; `refresher` is relative to it.
    local_role: Role,
    /// The peer sent `Supported: timer`, so our response may require it.
    peer_supports: bool,
    min_se: u32,
}

impl SessionTimer {
    pub fn interval(&self) -> Duration {
        Duration::from_secs(u64::from(self.interval))
    }

    pub fn we_refresh(&self) -> bool {
        matches!(
            (self.refresher, self.local_role),
            (Refresher::Uac, Role::Uac) | (Refresher::Uas, Role::Uas)
        )
    }

    /// Adds Session-Expires with the refresher, and `Require: timer` when the peer
    /// supports timers, to the 2xx answering the request the timer came from (§9).
    pub fn add_to_response(&self, resp: &mut Response) {
        let se = SessionExpires {
            interval: self.interval,
            refresher: Some(self.refresher),
        };
        resp.headers.set(Known::SessionExpires, se.to_string());
        if self.peer_supports {
            resp.headers
                .push(Known::Require, SipStr::from_static(TIMER));
        }
    }

    /// Adds the timer to a re-INVITE or UPDATE we send, whether it is our refresh or
    /// a re-INVITE for another reason (every one refreshes the session): the same
    /// interval, and the same side as refresher, named from the new transaction, in
    /// which we are the UAC.
    pub fn add_to_request(&self, req: &mut Request) {
        let se = SessionExpires {
            interval: self.interval,
            refresher: Some(if self.we_refresh() {
                Refresher::Uac
            } else {
                Refresher::Uas
            }),
        };
        add_request_headers(req, se, self.min_se);
    }

    /// When to send the refresh if we are the refresher: half the interval after the
    /// last refresh (§10). `None` when the peer refreshes.
    pub fn refresh_at(&self, refreshed: Instant) -> Option<Instant> {
        self.we_refresh().then(|| refreshed + self.interval() / 2)
    }

    /// When the session is dead if no refresh has succeeded: the interval less the
    /// smaller of 32 s and a third of it (§10), so the BYE goes out before the peer's
    /// own deadline.
    pub fn expires_at(&self, refreshed: Instant) -> Instant {
        let margin = Duration::from_secs(u64::from((self.interval / 3).min(32)));
        refreshed + self.interval() - margin
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{Message, Method, Uri, parse_datagram};

    fn invite(extra: &str) -> Request {
        let text = format!(
            "INVITE sip:1002@pbx.example.com SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds\r\n\
             From: <sip:1001@pbx.example.com>;tag=1928301774\r\n\
             To: <sip:1002@pbx.example.com>\r\n\
             Call-ID: a84b4c76e66710@192.0.2.10\r\n\
             CSeq: 1 INVITE\r\n\
             Contact: <sip:1001@192.0.2.10:5060>\r\n\
             {extra}Content-Length: 0\r\n\r\n"
        );
        match parse_datagram(text.into_bytes().into()) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn ok_with(extra: &str) -> Response {
        let text = format!(
            "SIP/2.0 200 OK\r\n\
             Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKx\r\n\
             From: <sip:1001@pbx.example.com>;tag=a\r\n\
             To: <sip:1002@pbx.example.com>;tag=b\r\n\
             Call-ID: c\r\n\
             CSeq: 1 INVITE\r\n\
             {extra}Content-Length: 0\r\n\r\n"
        );
        match parse_datagram(text.into_bytes().into()) {
            Ok(Message::Response(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_session_expires_forms() {
        assert_eq!(
            SessionExpires::parse("4000;refresher=UAS").unwrap(),
            SessionExpires {
                interval: 4000,
                refresher: Some(Refresher::Uas)
            }
        );
        assert_eq!(
            SessionExpires::parse(" 1800 ; foo=bar ; refresher = uac").unwrap(),
            SessionExpires {
                interval: 1800,
                refresher: Some(Refresher::Uac)
            }
        );
        assert_eq!(SessionExpires::parse("90").unwrap().refresher, None);
        for bad in ["", "abc", "90;refresher=proxy", "-5", "99999999999"] {
            assert!(SessionExpires::parse(bad).is_err(), "{bad}");
        }
        let req = invite("x: 600\r\nMin-SE: 120;x=y\r\n");
        assert_eq!(
            SessionExpires::of(&req.headers).unwrap().unwrap().interval,
            600
        );
        assert_eq!(min_se(&req.headers), Ok(120));
        assert_eq!(min_se(&invite("").headers), Ok(MIN_SE_FLOOR));
    }

    #[test]
    fn too_small_interval_gets_422_with_our_min_se() {
        let policy = TimerPolicy {
            min_se: 300,
            ..TimerPolicy::default()
        };
        let req = invite("Supported: timer\r\nSession-Expires: 120\r\n");
        let rejection = policy.answer(&req).unwrap_err();
        assert_eq!(rejection.status, 422);
        assert_eq!(rejection.headers, vec![(Known::MinSe, "300".to_string())]);
        // A UAC without timer support can't retry: the interval is raised instead.
        let timer = policy
            .answer(&invite("Session-Expires: 120\r\n"))
            .unwrap()
            .unwrap();
        assert_eq!(timer.interval(), Duration::from_secs(300));
        assert!(timer.we_refresh());
    }

    #[test]
    fn uas_picks_interval_and_refresher() {
        let policy = TimerPolicy::default();
        // The UAC chose to refresh; a long interval is cut to our maximum.
        let t = policy
            .answer(&invite(
                "Supported: timer\r\nSession-Expires: 7200;refresher=uac\r\n",
            ))
            .unwrap()
            .unwrap();
        assert_eq!(t.interval(), Duration::from_secs(1800));
        assert!(!t.we_refresh());
        // The UAC left the choice to us; its Min-SE is respected.
        let t = policy
            .answer(&invite("Supported: timer\r\nMin-SE: 2000\r\n"))
            .unwrap()
            .unwrap();
        assert_eq!(t.interval(), Duration::from_secs(2000));
        assert!(!t.we_refresh(), "our policy hands refreshing to the UAC");
        let mut resp = ok_with("");
        t.add_to_response(&mut resp);
        assert_eq!(
            resp.headers.get(Known::SessionExpires).unwrap(),
            "2000;refresher=uac"
        );
        assert_eq!(resp.headers.get(Known::Require).unwrap(), "timer");
        // No support, no request: no timer.
        assert_eq!(policy.answer(&invite("")), Ok(None));
        // A proxy inserted Session-Expires for a UAC without support: we refresh and
        // don't Require what the UAC lacks.
        let t = policy
            .answer(&invite("Session-Expires: 900;refresher=uac\r\n"))
            .unwrap()
            .unwrap();
        assert!(t.we_refresh());
        let mut resp = ok_with("");
        t.add_to_response(&mut resp);
        assert_eq!(
            resp.headers.get(Known::SessionExpires).unwrap(),
            "900;refresher=uas"
        );
        assert!(!resp.headers.contains(Known::Require));
    }

    #[test]
    fn uac_side_request_response_and_422_retry() {
        let policy = TimerPolicy::default();
        let mut req = Request::new(Method::Invite, Uri::parse_str("sip:b@h").unwrap());
        req.headers.push(Known::Supported, "replaces");
        policy.add_to_request(&mut req);
        assert_eq!(
            req.headers.list(Known::Supported).collect::<Vec<_>>(),
            vec!["replaces", "timer"]
        );
        assert_eq!(req.headers.get(Known::SessionExpires).unwrap(), "1800");
        assert_eq!(req.headers.get(Known::MinSe).unwrap(), "90");

        let t = policy
            .from_response(&ok_with("Session-Expires: 1200;refresher=uac\r\n"))
            .unwrap();
        assert!(t.we_refresh());
        assert_eq!(t.interval(), Duration::from_secs(1200));
        let t = policy
            .from_response(&ok_with("Session-Expires: 1200;refresher=uas\r\n"))
            .unwrap();
        assert!(!t.we_refresh());
        assert_eq!(policy.from_response(&ok_with("")), None);

        let small = TimerPolicy {
            interval: 100,
            ..policy
        };
        let retry = small.after_422(&ok_with("Min-SE: 600\r\n")).unwrap();
        assert_eq!((retry.interval, retry.min_se), (600, 600));
        assert_eq!(retry.after_422(&ok_with("Min-SE: 600\r\n")), None);
        assert_eq!(small.after_422(&ok_with("")), None);
    }

    #[test]
    fn refresh_request_keeps_the_refresher_from_the_new_transactions_view() {
        let policy = TimerPolicy::default();
        // The peer (UAC of its INVITE) refreshes; our re-INVITE makes it the UAS.
        let theirs = policy
            .answer(&invite(
                "Supported: timer\r\nSession-Expires: 600;refresher=uac\r\n",
            ))
            .unwrap()
            .unwrap();
        let mut req = Request::new(Method::Invite, Uri::parse_str("sip:b@h").unwrap());
        theirs.add_to_request(&mut req);
        assert_eq!(
            req.headers.get(Known::SessionExpires).unwrap(),
            "600;refresher=uas"
        );
        // We refresh; in our refresh we are the UAC.
        let ours = policy
            .answer(&invite(
                "Supported: timer\r\nSession-Expires: 600;refresher=uas\r\n",
            ))
            .unwrap()
            .unwrap();
        let mut req = Request::new(Method::Update, Uri::parse_str("sip:b@h").unwrap());
        ours.add_to_request(&mut req);
        assert_eq!(
            req.headers.get(Known::SessionExpires).unwrap(),
            "600;refresher=uac"
        );
    }

    #[test]
    fn a_lowered_minimum_allows_short_sessions_for_tests() {
        let policy = TimerPolicy::new(12, 6);
        // The caller must say it accepts less than 90 s; an absent Min-SE means 90.
        let t = policy
            .answer(&invite(
                "Supported: timer\r\nSession-Expires: 9;refresher=uac\r\nMin-SE: 6\r\n",
            ))
            .unwrap()
            .unwrap();
        assert_eq!(t.interval(), Duration::from_secs(9));
        let t = policy
            .answer(&invite("Supported: timer\r\nSession-Expires: 9\r\n"))
            .unwrap()
            .unwrap();
        assert_eq!(t.interval(), Duration::from_secs(90));
        let mut req = Request::new(Method::Invite, Uri::parse_str("sip:b@h").unwrap());
        policy.add_to_request(&mut req);
        assert_eq!(req.headers.get(Known::SessionExpires).unwrap(), "12");
        assert_eq!(req.headers.get(Known::MinSe).unwrap(), "6");
        // A 2xx granting 8 s is taken as it is; one below our minimum is raised to it.
        let t = policy
            .from_response(&ok_with("Session-Expires: 8;refresher=uac\r\n"))
            .unwrap();
        assert_eq!(t.interval(), Duration::from_secs(8));
        let t = policy
            .from_response(&ok_with("Session-Expires: 2;refresher=uac\r\n"))
            .unwrap();
        assert_eq!(t.interval(), Duration::from_secs(6));
    }

    #[test]
    fn deadlines_follow_section_10() {
        let now = Instant::now();
        let policy = TimerPolicy::default();
        let t = |se: &str| {
            policy
                .from_response(&ok_with(&format!("Session-Expires: {se}\r\n")))
                .unwrap()
        };
        // 1800 s: refresh at 900 s; dead at 1800 - 32 s.
        let long = t("1800;refresher=uac");
        assert_eq!(long.refresh_at(now), Some(now + Duration::from_secs(900)));
        assert_eq!(long.expires_at(now), now + Duration::from_secs(1768));
        // 90 s: a third (30 s) is less than 32 s.
        let short = t("90;refresher=uac");
        assert_eq!(short.refresh_at(now), Some(now + Duration::from_secs(45)));
        assert_eq!(short.expires_at(now), now + Duration::from_secs(60));
        // 91 s: half is 45.5 s, a third rounds down to 30 s.
        let odd = t("91;refresher=uas");
        assert_eq!(odd.refresh_at(now), None);
        assert_eq!(odd.expires_at(now), now + Duration::from_secs(61));
        // A response's interval below the floor is raised to it.
        assert_eq!(t("10").interval(), Duration::from_secs(90));
    }
}
