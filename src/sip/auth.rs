//! HTTP digest authentication for SIP (RFC 7616, RFC 8760; RFC 2617 compatible):
//! parsing `Authorization`/`Proxy-Authorization`, building `WWW-Authenticate`/
//! `Proxy-Authenticate`, stateless nonces and nonce-count replay protection.
//!
//! Pure: time comes in as seconds since the UNIX epoch, the nonce secret comes from
//! the caller. The usual server flow is [`DigestAuth::challenge`] for a request without
//! credentials and [`DigestAuth::authenticate`] for one with them.

use super::params::{closing_quote, is_token, quote, unquote};
use super::uri::Uri;
use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// A digest algorithm. The `-sess` variants hash the client nonce into HA1 (RFC 7616 §3.4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DigestAlgorithm {
    Md5,
    Md5Sess,
    Sha256,
    Sha256Sess,
}

impl DigestAlgorithm {
    /// Parses an `algorithm=` value; names compare case-insensitively.
    pub fn from_name(name: &str) -> Option<DigestAlgorithm> {
        [Self::Md5, Self::Md5Sess, Self::Sha256, Self::Sha256Sess]
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(name))
    }

    /// The name as written in headers and in `[sip] auth_algorithms`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Md5Sess => "MD5-sess",
            Self::Sha256 => "SHA-256",
            Self::Sha256Sess => "SHA-256-sess",
        }
    }

    fn is_sess(self) -> bool {
        matches!(self, Self::Md5Sess | Self::Sha256Sess)
    }

    /// Hex digest of `parts` joined with `:`, the shape of every digest input.
    fn hash(self, parts: &[&str]) -> String {
        match self {
            Self::Md5 | Self::Md5Sess => hash_joined::<Md5>(parts),
            Self::Sha256 | Self::Sha256Sess => hash_joined::<Sha256>(parts),
        }
    }
}

impl fmt::Display for DigestAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn hash_joined<D: Digest>(parts: &[&str]) -> String {
    let mut h = D::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            h.update(b":");
        }
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

/// HA1 = H(username:realm:password), lowercase hex. This is also the form of a
/// pre-computed HA1 in the config, for every algorithm including the `-sess` ones
/// (their session HA1 is derived from it per request).
pub fn ha1(algorithm: DigestAlgorithm, username: &str, realm: &str, password: &str) -> String {
    algorithm.hash(&[username, realm, password])
}

/// Why an authentication header could not be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthParseError {
    /// A scheme other than Digest (e.g. `Basic`); not malformed, just not ours.
    UnknownScheme(String),
    /// An `algorithm=` this module does not implement (e.g. `SHA-512-256`).
    UnsupportedAlgorithm(String),
    MissingParam(&'static str),
    Malformed(&'static str),
}

impl fmt::Display for AuthParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownScheme(s) => write!(f, "unknown authentication scheme {s:?}"),
            Self::UnsupportedAlgorithm(a) => write!(f, "unsupported digest algorithm {a:?}"),
            Self::MissingParam(p) => write!(f, "digest parameter {p} missing"),
            Self::Malformed(why) => write!(f, "malformed digest header: {why}"),
        }
    }
}

impl std::error::Error for AuthParseError {}

/// The auth-params of a header value, after checking the scheme is Digest: names as
/// written (matched without case), values borrowed unless a quoted one had escapes.
/// A REGISTER or INVITE carries about ten; each allocation avoided here counts, since
/// every call is authenticated.
struct AuthParams<'a>(Vec<(&'a str, Cow<'a, str>)>);

impl<'a> AuthParams<'a> {
    /// Splits `Digest name=value, name="quoted", ...`. LWS around `=` and `,`, line
    /// folds and empty list elements are tolerated; a parameter given twice is not,
    /// because two readers could then disagree on which one counts.
    fn parse(value: &'a str) -> Result<AuthParams<'a>, AuthParseError> {
        let value = value.trim_start_matches(is_ws);
        let scheme_end = value.find(is_ws).unwrap_or(value.len());
        let scheme = &value[..scheme_end];
        if scheme.is_empty() {
            return Err(AuthParseError::Malformed("no scheme"));
        }
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(AuthParseError::UnknownScheme(scheme.to_owned()));
        }
        let mut rest = &value[scheme_end..];
        let mut params: Vec<(&str, Cow<str>)> = Vec::with_capacity(12);
        loop {
            rest = rest.trim_start_matches(|c| is_ws(c) || c == ',');
            if rest.is_empty() {
                break;
            }
            let name_end = rest
                .find(|c: char| is_ws(c) || c == '=')
                .unwrap_or(rest.len());
            let name = &rest[..name_end];
            if !is_token(name) {
                return Err(AuthParseError::Malformed("bad parameter name"));
            }
            rest = rest[name_end..].trim_start_matches(is_ws);
            rest = rest
                .strip_prefix('=')
                .ok_or(AuthParseError::Malformed("parameter without value"))?
                .trim_start_matches(is_ws);
            let (param_value, after) = if rest.starts_with('"') {
                take_quoted(rest)?
            } else {
                // Unquoted values should be tokens, but base64 nonces (`/`, `+`, `=`) and
                // URIs appear unquoted in the wild; take everything up to the next comma.
                let end = rest.find(|c| is_ws(c) || c == ',').unwrap_or(rest.len());
                if end == 0 {
                    return Err(AuthParseError::Malformed("empty parameter value"));
                }
                (Cow::Borrowed(&rest[..end]), &rest[end..])
            };
            rest = after.trim_start_matches(is_ws);
            if !rest.is_empty() && !rest.starts_with(',') {
                return Err(AuthParseError::Malformed("junk after parameter value"));
            }
            if params.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
                return Err(AuthParseError::Malformed("parameter repeated"));
            }
            params.push((name, param_value));
        }
        Ok(AuthParams(params))
    }

    /// The value of `name` (lowercase), whatever case the header wrote it in.
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    }

    fn require(&self, name: &'static str) -> Result<String, AuthParseError> {
        self.get(name)
            .map(str::to_owned)
            .ok_or(AuthParseError::MissingParam(name))
    }

    /// `algorithm=`, MD5 when absent (RFC 7616 §3.3).
    fn algorithm(&self) -> Result<DigestAlgorithm, AuthParseError> {
        match self.get("algorithm") {
            None => Ok(DigestAlgorithm::Md5),
            Some(name) => DigestAlgorithm::from_name(name)
                .ok_or_else(|| AuthParseError::UnsupportedAlgorithm(name.to_owned())),
        }
    }
}

/// Whitespace inside a header value, including what is left of a line fold.
fn is_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Reads a quoted-string at the start of `s`; returns its unescaped contents and the rest.
fn take_quoted(s: &str) -> Result<(Cow<'_, str>, &str), AuthParseError> {
    let close = closing_quote(s.as_bytes(), 1);
    if close >= s.len() {
        return Err(AuthParseError::Malformed("unterminated quoted string"));
    }
    // The closing quote is ASCII, so `close` is a char boundary.
    let (quoted, rest) = (&s[..=close], &s[close + 1..]);
    let value = if quoted.contains('\\') {
        Cow::Owned(unquote(quoted))
    } else {
        Cow::Borrowed(&quoted[1..close])
    };
    Ok((value, rest))
}

/// A `WWW-Authenticate`/`Proxy-Authenticate` value: what a server offers, or what a
/// client (a trunk registration) received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: DigestAlgorithm,
    /// `qop="auth"` is offered. switchboard always offers it; a peer may not.
    pub qop_auth: bool,
    /// The last request carried a right digest for an expired nonce: the client should
    /// retry with the new nonce without asking its user for the password again.
    pub stale: bool,
}

impl Challenge {
    pub fn parse(value: &str) -> Result<Challenge, AuthParseError> {
        let p = AuthParams::parse(value)?;
        Ok(Challenge {
            realm: p.require("realm")?,
            nonce: p.require("nonce")?,
            opaque: p.get("opaque").map(str::to_owned),
            algorithm: p.algorithm()?,
            qop_auth: p
                .get("qop")
                .is_some_and(|q| q.split(',').any(|o| o.trim().eq_ignore_ascii_case("auth"))),
            stale: p
                .get("stale")
                .is_some_and(|s| s.eq_ignore_ascii_case("true")),
        })
    }

    /// The client side: credentials answering this challenge with qop=auth when it is
    /// offered (then `cnonce` and `nc` are used), the RFC 2069 form otherwise.
    pub fn answer(
        &self,
        username: &str,
        password: &str,
        method: &str,
        uri: &str,
        cnonce: &str,
        nc: u32,
    ) -> Credentials {
        let qop = self.qop_auth.then(|| QopAuth {
            nc: format!("{nc:08x}"),
            cnonce: cnonce.to_owned(),
        });
        let mut credentials = Credentials {
            username: username.to_owned(),
            realm: self.realm.clone(),
            nonce: self.nonce.clone(),
            uri: uri.to_owned(),
            response: String::new(),
            algorithm: self.algorithm,
            opaque: self.opaque.clone(),
            qop: qop.map(Ok),
        };
        let base = ha1(self.algorithm, username, &self.realm, password);
        credentials.response = credentials.expected_response(&base, method);
        credentials
    }
}

impl fmt::Display for Challenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Digest realm={}, nonce={}, algorithm={}",
            quote(&self.realm),
            quote(&self.nonce),
            self.algorithm
        )?;
        if self.qop_auth {
            f.write_str(", qop=\"auth\"")?;
        }
        if let Some(opaque) = &self.opaque {
            write!(f, ", opaque={}", quote(opaque))?;
        }
        if self.stale {
            f.write_str(", stale=TRUE")?;
        }
        Ok(())
    }
}

/// The qop=auth part of a response: nonce count (8 hex digits as sent) and client nonce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QopAuth {
    pub nc: String,
    pub cnonce: String,
}

/// Why a response claiming a qop cannot be checked. Kept apart from parse errors: the
/// header is well formed, but the response is rejected (and counts as a failure).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QopProblem {
    /// `qop=auth` without `nc` or `cnonce` — what sipvicious svcrack sends.
    MissingNcOrCnonce,
    /// A qop other than `auth` (we never offer `auth-int`).
    Unsupported(String),
}

/// A parsed `Authorization`/`Proxy-Authorization` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    /// The client's digest, hex as sent.
    pub response: String,
    /// MD5 when the header has no `algorithm=`.
    pub algorithm: DigestAlgorithm,
    pub opaque: Option<String>,
    /// `None`: no qop, the RFC 2069 form.
    pub qop: Option<Result<QopAuth, QopProblem>>,
}

impl Credentials {
    pub fn parse(value: &str) -> Result<Credentials, AuthParseError> {
        let p = AuthParams::parse(value)?;
        let qop = p.get("qop").map(|qop| {
            if !qop.eq_ignore_ascii_case("auth") {
                return Err(QopProblem::Unsupported(qop.to_owned()));
            }
            match (p.get("nc"), p.get("cnonce")) {
                (Some(nc), Some(cnonce)) => Ok(QopAuth {
                    nc: nc.to_owned(),
                    cnonce: cnonce.to_owned(),
                }),
                _ => Err(QopProblem::MissingNcOrCnonce),
            }
        });
        Ok(Credentials {
            username: p.require("username")?,
            realm: p.require("realm")?,
            nonce: p.require("nonce")?,
            uri: p.require("uri")?,
            response: p.require("response")?,
            algorithm: p.algorithm()?,
            opaque: p.get("opaque").map(str::to_owned),
            qop,
        })
    }

    /// The response a client knowing the password would send, from the base HA1 (see
    /// [`ha1`]). A qop response with problems gets the RFC 2069 formula; callers reject
    /// those before comparing anyway.
    fn expected_response(&self, ha1_hex: &str, method: &str) -> String {
        let alg = self.algorithm;
        let qop = self.qop.as_ref().and_then(|q| q.as_ref().ok());
        let session_ha1;
        let ha1_hex = match qop {
            Some(q) if alg.is_sess() => {
                session_ha1 = alg.hash(&[ha1_hex, &self.nonce, &q.cnonce]);
                session_ha1.as_str()
            }
            _ => ha1_hex,
        };
        let ha2 = alg.hash(&[method, &self.uri]);
        match qop {
            Some(q) => alg.hash(&[ha1_hex, &self.nonce, &q.nc, &q.cnonce, "auth", &ha2]),
            None => alg.hash(&[ha1_hex, &self.nonce, &ha2]),
        }
    }
}

impl fmt::Display for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Digest username={}, realm={}, nonce={}, uri={}, response={}, algorithm={}",
            quote(&self.username),
            quote(&self.realm),
            quote(&self.nonce),
            quote(&self.uri),
            quote(&self.response),
            self.algorithm
        )?;
        match &self.qop {
            None => {}
            Some(Ok(q)) => write!(f, ", qop=auth, nc={}, cnonce={}", q.nc, quote(&q.cnonce))?,
            Some(Err(QopProblem::MissingNcOrCnonce)) => f.write_str(", qop=auth")?,
            Some(Err(QopProblem::Unsupported(qop))) => write!(f, ", qop={}", quote(qop))?,
        }
        if let Some(opaque) = &self.opaque {
            write!(f, ", opaque={}", quote(opaque))?;
        }
        Ok(())
    }
}

/// Compares the digest in `credentials` with the one computed from `ha1_hex` (the base
/// HA1 for `credentials.algorithm`) in time independent of where they differ. Checks
/// nothing else — nonce, realm, uri and nc are [`DigestAuth::authenticate`]'s job.
pub fn verify(credentials: &Credentials, method: &str, ha1_hex: &str) -> bool {
    // HA1 enters the next hash as lowercase hex; an HA1 pasted into the config in
    // uppercase must still work.
    let expected = credentials.expected_response(&ha1_hex.to_ascii_lowercase(), method);
    // Hex compares after decoding so an uppercase response is still accepted.
    match (
        hex::decode(&credentials.response),
        hex::decode(expected.as_bytes()),
    ) {
        (Ok(got), Ok(want)) => constant_time_eq(&got, &want),
        _ => false,
    }
}

/// Equality without an early exit: the time taken depends on the length only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Result of checking a nonce's integrity and age.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonceCheck {
    /// Minted by us, for this realm and algorithm, `issued_at` seconds since the epoch.
    Valid { issued_at: u64 },
    /// Minted by us but older than the lifetime (or from the future after a clock step):
    /// challenge again with `stale=TRUE`.
    Stale,
    /// Not minted by us with this secret, realm and algorithm: forged, mangled, or from
    /// before a secret change.
    Invalid,
}

/// Bytes of timestamp, of per-mint counter, and of truncated HMAC-SHA256 in a nonce.
const TS_LEN: usize = 8;
const SALT_LEN: usize = 8;
const MAC_LEN: usize = 16;

/// Stateless nonces: `hex(timestamp || counter || HMAC-SHA256(secret, timestamp ||
/// counter || algorithm || 0 || realm)[..16])`, 64 hex digits. The server keeps no list
/// of issued nonces; the MAC proves origin and the timestamp gives the age. The counter
/// makes nonces minted in the same second distinct, so nonce counts of two clients never
/// share a [`NonceCounts`] entry. 128 MAC bits leave forgery at 2^-128 per guess.
///
/// Keep the secret across restarts (e.g. in the store) so nonces in flight stay valid.
pub struct NonceMint {
    mac: Hmac<Sha256>,
    lifetime_secs: u64,
    counter: AtomicU64,
}

impl NonceMint {
    pub fn new(secret: &[u8], lifetime_secs: u64) -> NonceMint {
        NonceMint {
            // HMAC accepts keys of any length, so this cannot fail.
            mac: Hmac::new_from_slice(secret).unwrap_or_else(|_| unreachable!()),
            lifetime_secs,
            counter: AtomicU64::new(0),
        }
    }

    pub fn mint(&self, now: u64, realm: &str, algorithm: DigestAlgorithm) -> String {
        let mut raw = [0u8; TS_LEN + SALT_LEN + MAC_LEN];
        raw[..TS_LEN].copy_from_slice(&now.to_be_bytes());
        let salt = self.counter.fetch_add(1, Ordering::Relaxed);
        raw[TS_LEN..TS_LEN + SALT_LEN].copy_from_slice(&salt.to_be_bytes());
        let tag = self.tag(&raw[..TS_LEN + SALT_LEN], realm, algorithm);
        raw[TS_LEN + SALT_LEN..].copy_from_slice(&tag.finalize().into_bytes()[..MAC_LEN]);
        hex::encode(raw)
    }

    pub fn check(
        &self,
        now: u64,
        nonce: &str,
        realm: &str,
        algorithm: DigestAlgorithm,
    ) -> NonceCheck {
        let mut raw = [0u8; TS_LEN + SALT_LEN + MAC_LEN];
        if hex::decode_to_slice(nonce, &mut raw).is_err() {
            return NonceCheck::Invalid;
        }
        let (stamped, mac) = raw.split_at(TS_LEN + SALT_LEN);
        if self
            .tag(stamped, realm, algorithm)
            .verify_truncated_left(mac)
            .is_err()
        {
            return NonceCheck::Invalid;
        }
        let mut ts = [0u8; TS_LEN];
        ts.copy_from_slice(&stamped[..TS_LEN]);
        let issued_at = u64::from_be_bytes(ts);
        if issued_at > now || now - issued_at > self.lifetime_secs {
            NonceCheck::Stale
        } else {
            NonceCheck::Valid { issued_at }
        }
    }

    fn tag(&self, stamped: &[u8], realm: &str, algorithm: DigestAlgorithm) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(stamped);
        mac.update(algorithm.name().as_bytes());
        mac.update(&[0]);
        mac.update(realm.as_bytes());
        mac
    }
}

/// What [`NonceCounts::record`] decided about a nonce count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonceUse {
    /// Higher than any count seen for this nonce: accepted and remembered.
    Fresh,
    /// Not higher than a count already seen: a replay (or a reordered request).
    Replayed,
    /// The nonce may have been used and then evicted, so its counts are unknown; treat
    /// as stale so the client fetches a new nonce.
    Forgotten,
}

struct NonceEntry {
    highest_nc: u32,
    issued_at: u64,
    /// Key of this entry in `NonceCounts::by_use`.
    last_use: u64,
}

/// Replay protection: the highest nonce count seen per nonce, for at most `capacity`
/// nonces (roughly 250 bytes each: 4096 nonces cost about 1 MB).
///
/// When full, the least recently used nonce is evicted. Forgetting a nonce that has not
/// expired would let its old counts be replayed, so eviction raises a floor instead: any
/// unknown nonce issued at or before the newest evicted one's issue time is answered
/// [`NonceUse::Forgotten`] (the client gets a fresh nonce, one extra round trip). Only
/// verified responses are recorded, so an attacker without the password cannot fill it.
pub struct NonceCounts {
    capacity: usize,
    lifetime_secs: u64,
    entries: HashMap<String, NonceEntry>,
    by_use: BTreeMap<u64, String>,
    uses: u64,
    forgotten_up_to: Option<u64>,
}

impl NonceCounts {
    pub fn new(capacity: usize, lifetime_secs: u64) -> NonceCounts {
        NonceCounts {
            capacity: capacity.max(1),
            lifetime_secs,
            entries: HashMap::new(),
            by_use: BTreeMap::new(),
            uses: 0,
            forgotten_up_to: None,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Accepts `nc` for `nonce` (minted at `issued_at`) only if it is higher than every
    /// count seen for it. `nc` is the value of the 8-hex-digit `nc` parameter.
    pub fn record(&mut self, now: u64, nonce: &str, issued_at: u64, nc: u32) -> NonceUse {
        self.uses += 1;
        let last_use = self.uses;
        if let Some(entry) = self.entries.get_mut(nonce) {
            if nc <= entry.highest_nc {
                return NonceUse::Replayed;
            }
            self.by_use.remove(&entry.last_use);
            self.by_use.insert(last_use, nonce.to_owned());
            entry.highest_nc = nc;
            entry.last_use = last_use;
            return NonceUse::Fresh;
        }
        if self.forgotten_up_to.is_some_and(|t| issued_at <= t) {
            return NonceUse::Forgotten;
        }
        if nc == 0 {
            // Counts start at 1 (RFC 7616 §3.4); 0 is never fresh.
            return NonceUse::Replayed;
        }
        if self.entries.len() >= self.capacity {
            self.evict_least_recent(now);
        }
        self.by_use.insert(last_use, nonce.to_owned());
        self.entries.insert(
            nonce.to_owned(),
            NonceEntry {
                highest_nc: nc,
                issued_at,
                last_use,
            },
        );
        NonceUse::Fresh
    }

    fn evict_least_recent(&mut self, now: u64) {
        let Some((_, nonce)) = self.by_use.pop_first() else {
            return;
        };
        if let Some(entry) = self.entries.remove(&nonce) {
            let expired = now.saturating_sub(entry.issued_at) > self.lifetime_secs;
            if !expired {
                let floor = self.forgotten_up_to.unwrap_or(0).max(entry.issued_at);
                self.forgotten_up_to = Some(floor);
            }
        }
    }
}

/// What the server knows about the request being authenticated.
#[derive(Clone, Copy, Debug)]
pub struct DigestRequest<'a> {
    pub method: &'a str,
    /// The Request-URI as received; the credentials' `uri` must name the same resource.
    pub request_uri: &'a str,
    /// Our realm; the credentials must be for it.
    pub realm: &'a str,
}

/// The verdict on a request's credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Authenticated,
    /// The digest was right but the nonce expired (or its counts were forgotten):
    /// challenge again with `stale=TRUE`. Not an authentication failure.
    Stale,
    /// An authentication failure, to answer with a fresh challenge and to count.
    Rejected(Rejection),
}

/// Why credentials were rejected; for logs and counters. The client must not be able to
/// tell these apart — in particular `UnknownUser` from `WrongResponse`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    WrongRealm,
    UriMismatch,
    Qop(QopProblem),
    /// No qop (RFC 2069 form) while [`DigestAuth::accept_rfc2069`] is off.
    NoQop,
    /// `nc` is not 8 hex digits.
    BadNonceCount,
    /// The nonce was not minted by us for this realm and algorithm.
    InvalidNonce,
    UnknownUser,
    WrongResponse,
    /// A nonce count already used with this nonce.
    Replayed,
}

/// Server-side digest authentication: the nonce mint plus replay memory. `Sync`, so one
/// instance serves every transport task; the nonce-count lock is held for a map update.
pub struct DigestAuth {
    mint: NonceMint,
    counts: Mutex<NonceCounts>,
    /// Accept responses without qop (RFC 2069). Off by default: they carry no nonce
    /// count, so a captured one can be replayed for the nonce's whole lifetime, and
    /// every client we know of (SIPp, desk phones, softphones) uses qop=auth when it is
    /// offered, as we always do.
    pub accept_rfc2069: bool,
}

impl DigestAuth {
    /// `tracked_nonces` bounds the replay memory (see [`NonceCounts`]).
    pub fn new(secret: &[u8], nonce_lifetime_secs: u64, tracked_nonces: usize) -> DigestAuth {
        DigestAuth {
            mint: NonceMint::new(secret, nonce_lifetime_secs),
            counts: Mutex::new(NonceCounts::new(tracked_nonces, nonce_lifetime_secs)),
            accept_rfc2069: false,
        }
    }

    /// A challenge with a fresh nonce, qop="auth" and no opaque.
    pub fn challenge(
        &self,
        now: u64,
        realm: &str,
        algorithm: DigestAlgorithm,
        stale: bool,
    ) -> Challenge {
        Challenge {
            realm: realm.to_owned(),
            nonce: self.mint.mint(now, realm, algorithm),
            opaque: None,
            algorithm,
            qop_auth: true,
            stale,
        }
    }

    /// Checks everything about `credentials`: realm, qop rules, uri, the nonce's origin
    /// and age, the digest, and the nonce count. `ha1_hex` is the user's base HA1 for
    /// `credentials.algorithm`, or `None` for an unknown user (or one not allowed that
    /// algorithm); then the digest is still computed, against a dummy, so an unknown
    /// user takes as long as a wrong password. Counts are recorded only after the
    /// digest verified, so forged requests cannot burn a client's counts.
    pub fn authenticate(
        &self,
        now: u64,
        credentials: &Credentials,
        request: &DigestRequest<'_>,
        ha1_hex: Option<&str>,
    ) -> Outcome {
        use Outcome::Rejected;
        if credentials.realm != request.realm {
            return Rejected(Rejection::WrongRealm);
        }
        let nc = match &credentials.qop {
            Some(Err(problem)) => return Rejected(Rejection::Qop(problem.clone())),
            Some(Ok(q)) => match parse_nc(&q.nc) {
                Some(nc) => Some(nc),
                None => return Rejected(Rejection::BadNonceCount),
            },
            None if self.accept_rfc2069 => None,
            None => return Rejected(Rejection::NoQop),
        };
        if !same_uri(&credentials.uri, request.request_uri) {
            return Rejected(Rejection::UriMismatch);
        }
        let nonce = self.mint.check(
            now,
            &credentials.nonce,
            request.realm,
            credentials.algorithm,
        );
        if nonce == NonceCheck::Invalid {
            return Rejected(Rejection::InvalidNonce);
        }
        let dummy = "0".repeat(hex_len(credentials.algorithm));
        let digest_ok = verify(
            credentials,
            request.method,
            ha1_hex.unwrap_or(dummy.as_str()),
        );
        match (ha1_hex, digest_ok) {
            (None, _) => return Rejected(Rejection::UnknownUser),
            (Some(_), false) => return Rejected(Rejection::WrongResponse),
            (Some(_), true) => {}
        }
        let NonceCheck::Valid { issued_at } = nonce else {
            return Outcome::Stale;
        };
        let Some(nc) = nc else {
            return Outcome::Authenticated;
        };
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        match counts.record(now, &credentials.nonce, issued_at, nc) {
            NonceUse::Fresh => Outcome::Authenticated,
            NonceUse::Replayed => Rejected(Rejection::Replayed),
            NonceUse::Forgotten => Outcome::Stale,
        }
    }
}

fn hex_len(algorithm: DigestAlgorithm) -> usize {
    match algorithm {
        DigestAlgorithm::Md5 | DigestAlgorithm::Md5Sess => 32,
        DigestAlgorithm::Sha256 | DigestAlgorithm::Sha256Sess => 64,
    }
}

/// `nc` is exactly 8 hex digits (RFC 7616 §3.4).
fn parse_nc(nc: &str) -> Option<u32> {
    if nc.len() != 8 || !nc.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(nc, 16).ok()
}

/// The digest `uri` names the Request-URI: the same string, or an equivalent SIP URI
/// (RFC 3261 §19.1.4) for clients that re-serialize it (case of host, escapes).
/// The digest `uri` names the Request-URI (RFC 7616 §3.4.6). Also accepted: the
/// Request-URI's host and port without its user part, which is what SIPp's
/// `[authentication]` sends for every request; the response still covers that uri,
/// so it can't be replayed against another server.
fn same_uri(digest_uri: &str, request_uri: &str) -> bool {
    if digest_uri == request_uri {
        return true;
    }
    match (Uri::parse_str(digest_uri), Uri::parse_str(request_uri)) {
        (Ok(a), Ok(b)) if a.equivalent(&b) => true,
        (Ok(Uri::Sip(a)), Ok(Uri::Sip(b))) => {
            a.user.is_none() && a.secure == b.secure && a.host.same_as(&b.host) && a.port == b.port
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"test secret";
    const REALM: &str = "switchboard";
    const NOW: u64 = 1_700_000_000;

    /// RFC 7616 §3.9.1 credentials with the given algorithm and response.
    fn rfc7616(algorithm: &str, response: &str) -> String {
        format!(
            r#"Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", algorithm={algorithm}, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", nc=00000001, cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", qop=auth, response="{response}", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#
        )
    }

    #[test]
    fn rfc7616_md5_vector() {
        let c = Credentials::parse(&rfc7616("MD5", "8ca523f5e9506fed4657c9700eebdbec")).unwrap();
        assert_eq!(c.algorithm, DigestAlgorithm::Md5);
        assert_eq!(
            c.opaque.as_deref(),
            Some("FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS")
        );
        let h = ha1(
            DigestAlgorithm::Md5,
            "Mufasa",
            "http-auth@example.org",
            "Circle of Life",
        );
        assert!(verify(&c, "GET", &h));
        assert!(verify(&c, "GET", &h.to_ascii_uppercase()));
        assert!(!verify(&c, "POST", &h));
        let wrong = ha1(
            DigestAlgorithm::Md5,
            "Mufasa",
            "http-auth@example.org",
            "Circle of life",
        );
        assert!(!verify(&c, "GET", &wrong));
    }

    #[test]
    fn rfc7616_sha256_vector() {
        let c = Credentials::parse(&rfc7616(
            "SHA-256",
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
        ))
        .unwrap();
        assert_eq!(c.algorithm, DigestAlgorithm::Sha256);
        let h = ha1(
            DigestAlgorithm::Sha256,
            "Mufasa",
            "http-auth@example.org",
            "Circle of Life",
        );
        assert!(verify(&c, "GET", &h));
        // The MD5 HA1 of the same password does not verify a SHA-256 response.
        let md5 = ha1(
            DigestAlgorithm::Md5,
            "Mufasa",
            "http-auth@example.org",
            "Circle of Life",
        );
        assert!(!verify(&c, "GET", &md5));
    }

    #[test]
    fn rfc2617_vector_and_uppercase_response() {
        let header = r#"Digest username="Mufasa",
                 realm="testrealm@host.com",
                 nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
                 uri="/dir/index.html",
                 qop=auth,
                 nc=00000001,
                 cnonce="0a4f113b",
                 response="6629FAE49393A05397450978507C4EF1",
                 opaque="5ccc069c403ebaf9f0171e9517f40e41""#;
        let c = Credentials::parse(header).unwrap();
        let h = ha1(
            DigestAlgorithm::Md5,
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
        );
        assert!(verify(&c, "GET", &h));
    }

    #[test]
    fn sess_variants_hash_the_cnonce_into_ha1() {
        // Expected values computed independently (Python hashlib) from the RFC 2617
        // inputs: HA1' = H(H(user:realm:pw):nonce:cnonce).
        let header = |alg: &str, response: &str| {
            format!(
                r#"Digest username="Mufasa", realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth, nc=00000001, cnonce="0a4f113b", algorithm={alg}, response="{response}""#
            )
        };
        let md5 =
            Credentials::parse(&header("MD5-sess", "8e3825c57e897f5a0dec6c2d4e5059d0")).unwrap();
        let h = ha1(
            DigestAlgorithm::Md5,
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
        );
        assert!(verify(&md5, "GET", &h));
        let sha = Credentials::parse(&header(
            "SHA-256-sess",
            "b8822e12417cb7750f4e2b8515f0dcf25b7dd26993e80bee1426201446a7f59b",
        ))
        .unwrap();
        let h = ha1(
            DigestAlgorithm::Sha256,
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
        );
        assert!(verify(&sha, "GET", &h));
    }

    #[test]
    fn parse_tolerates_lws_commas_and_unquoted_values() {
        let c = Credentials::parse(
            "digest  username = \"alice\" ,, realm=\"switchboard\",\r\n nonce=abc/+=, uri=\"sip:pbx.example\",response=\"00\", algorithm=\"sha-256\", qop=\"auth\", nc=0000000a, cnonce=xyz,",
        )
        .unwrap();
        assert_eq!(c.username, "alice");
        assert_eq!(c.nonce, "abc/+=");
        assert_eq!(c.uri, "sip:pbx.example");
        assert_eq!(c.algorithm, DigestAlgorithm::Sha256);
        assert_eq!(
            c.qop,
            Some(Ok(QopAuth {
                nc: "0000000a".into(),
                cnonce: "xyz".into()
            }))
        );
    }

    #[test]
    fn parse_unescapes_quoted_pairs() {
        let c = Credentials::parse(
            r#"Digest username="a\"b\\c", realm="r", nonce="n", uri="u", response="00""#,
        )
        .unwrap();
        assert_eq!(c.username, r#"a"b\c"#);
        assert_eq!(c.algorithm, DigestAlgorithm::Md5);
        assert_eq!(c.qop, None);
    }

    #[test]
    fn parse_errors_are_reported_not_panics() {
        assert_eq!(
            Credentials::parse("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
            Err(AuthParseError::UnknownScheme("Basic".into()))
        );
        assert_eq!(
            Credentials::parse(r#"Digest realm="r", nonce="n", uri="u", response="00""#),
            Err(AuthParseError::MissingParam("username"))
        );
        assert_eq!(
            Credentials::parse(
                r#"Digest username="u", realm="r", nonce="n", uri="u", response="00", algorithm=SHA-512-256"#
            ),
            Err(AuthParseError::UnsupportedAlgorithm("SHA-512-256".into()))
        );
        for bad in [
            "",
            "Digest username",
            "Digest username=",
            r#"Digest username="unterminated"#,
            r#"Digest username="a" junk, realm="r""#,
            r#"Digest username="a", username="b", realm="r", nonce="n", uri="u", response="0""#,
            "Digest user\u{e9}=1",
        ] {
            assert!(
                matches!(
                    Credentials::parse(bad),
                    Err(AuthParseError::Malformed(_) | AuthParseError::MissingParam(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn qop_without_nc_or_cnonce_is_flagged() {
        // The shape sipvicious svcrack sends.
        let c = Credentials::parse(
            r#"Digest username="100", realm="r", nonce="n", uri="sip:r", response="00", qop=auth, cnonce="x""#,
        )
        .unwrap();
        assert_eq!(c.qop, Some(Err(QopProblem::MissingNcOrCnonce)));
        let c = Credentials::parse(
            r#"Digest username="100", realm="r", nonce="n", uri="sip:r", response="00", qop=auth-int, nc=00000001, cnonce="x""#,
        )
        .unwrap();
        assert_eq!(c.qop, Some(Err(QopProblem::Unsupported("auth-int".into()))));
    }

    #[test]
    fn challenge_serializes_and_parses_back() {
        let auth = DigestAuth::new(SECRET, 300, 16);
        let mut ch = auth.challenge(NOW, "office \"pbx\"", DigestAlgorithm::Sha256, true);
        let text = ch.to_string();
        assert!(text.starts_with(r#"Digest realm="office \"pbx\"", nonce=""#));
        assert!(text.ends_with(r#", algorithm=SHA-256, qop="auth", stale=TRUE"#));
        assert_eq!(Challenge::parse(&text).unwrap(), ch);
        ch.opaque = Some("op".into());
        ch.stale = false;
        assert!(ch.to_string().ends_with(r#"qop="auth", opaque="op""#));
        assert_eq!(Challenge::parse(&ch.to_string()).unwrap(), ch);
    }

    #[test]
    fn foreign_challenge_with_qop_list() {
        let ch = Challenge::parse(
            r#"Digest realm="sip.provider", domain="sip:x", nonce="abc", qop="auth-int, auth", stale=FALSE"#,
        )
        .unwrap();
        assert!(ch.qop_auth);
        assert!(!ch.stale);
        assert_eq!(ch.algorithm, DigestAlgorithm::Md5);
    }

    #[test]
    fn nonces_verify_statelessly_and_expire() {
        let mint = NonceMint::new(SECRET, 300);
        let n = mint.mint(NOW, REALM, DigestAlgorithm::Md5);
        assert_eq!(n.len(), 64);
        assert_ne!(n, mint.mint(NOW, REALM, DigestAlgorithm::Md5));
        let valid = NonceCheck::Valid { issued_at: NOW };
        assert_eq!(mint.check(NOW, &n, REALM, DigestAlgorithm::Md5), valid);
        assert_eq!(
            mint.check(NOW + 300, &n, REALM, DigestAlgorithm::Md5),
            valid
        );
        assert_eq!(
            mint.check(NOW + 301, &n, REALM, DigestAlgorithm::Md5),
            NonceCheck::Stale
        );
        assert_eq!(
            mint.check(NOW - 1, &n, REALM, DigestAlgorithm::Md5),
            NonceCheck::Stale
        );
        // Another mint with the same secret (a restart) accepts it.
        let restarted = NonceMint::new(SECRET, 300);
        assert_eq!(restarted.check(NOW, &n, REALM, DigestAlgorithm::Md5), valid);
    }

    #[test]
    fn forged_or_rebound_nonces_are_invalid() {
        let mint = NonceMint::new(SECRET, 300);
        let n = mint.mint(NOW, REALM, DigestAlgorithm::Md5);
        let check = |nonce: &str, realm, alg| mint.check(NOW, nonce, realm, alg);
        assert_eq!(
            check(&n, "other", DigestAlgorithm::Md5),
            NonceCheck::Invalid
        );
        assert_eq!(
            check(&n, REALM, DigestAlgorithm::Sha256),
            NonceCheck::Invalid
        );
        let other_secret = NonceMint::new(b"other", 300);
        assert_eq!(
            other_secret.check(NOW, &n, REALM, DigestAlgorithm::Md5),
            NonceCheck::Invalid
        );
        // Moving the timestamp (to make an old nonce young) breaks the MAC.
        let mut moved = n.clone().into_bytes();
        moved[15] = if moved[15] == b'0' { b'1' } else { b'0' };
        let moved = String::from_utf8(moved).unwrap();
        assert_eq!(
            check(&moved, REALM, DigestAlgorithm::Md5),
            NonceCheck::Invalid
        );
        for junk in ["", "zz", &n[..62], &format!("{n}00")] {
            assert_eq!(
                check(junk, REALM, DigestAlgorithm::Md5),
                NonceCheck::Invalid
            );
        }
    }

    #[test]
    fn nonce_counts_reject_replays_and_stay_bounded() {
        let mut counts = NonceCounts::new(2, 300);
        assert_eq!(counts.record(NOW, "a", NOW, 1), NonceUse::Fresh);
        assert_eq!(counts.record(NOW, "a", NOW, 1), NonceUse::Replayed);
        assert_eq!(counts.record(NOW, "a", NOW, 3), NonceUse::Fresh);
        assert_eq!(counts.record(NOW, "a", NOW, 2), NonceUse::Replayed);
        assert_eq!(counts.record(NOW, "b", NOW, 0), NonceUse::Replayed);
        assert_eq!(counts.record(NOW + 1, "b", NOW + 1, 1), NonceUse::Fresh);
        // "a" is used again, so "b" is the least recently used and is evicted for "c".
        assert_eq!(counts.record(NOW + 2, "a", NOW, 4), NonceUse::Fresh);
        assert_eq!(counts.record(NOW + 2, "c", NOW + 2, 1), NonceUse::Fresh);
        assert_eq!(counts.len(), 2);
        // "b" was evicted while live; its counts (and those of any unknown nonce no
        // newer than it) cannot be trusted.
        assert_eq!(counts.record(NOW + 2, "b", NOW + 1, 5), NonceUse::Forgotten);
        assert_eq!(
            counts.record(NOW + 2, "never seen", NOW, 1),
            NonceUse::Forgotten
        );
        assert_eq!(counts.len(), 2);
    }

    #[test]
    fn evicting_an_expired_nonce_forgets_nothing_that_matters() {
        let mut counts = NonceCounts::new(1, 300);
        assert_eq!(counts.record(NOW, "old", NOW, 1), NonceUse::Fresh);
        assert_eq!(
            counts.record(NOW + 400, "new", NOW + 400, 1),
            NonceUse::Fresh
        );
        // "old" expired before eviction, so no floor was raised.
        assert_eq!(
            counts.record(NOW + 400, "other", NOW + 399, 1),
            NonceUse::Fresh
        );
    }

    fn request(method: &'static str) -> DigestRequest<'static> {
        DigestRequest {
            method,
            request_uri: "sip:pbx.example.com",
            realm: REALM,
        }
    }

    /// A client's answer to `ch`, round-tripped through the header text.
    fn answer(ch: &Challenge, password: &str, uri: &str, nc: u32) -> Credentials {
        let c = ch.answer("1001", password, "REGISTER", uri, "c0ffee", nc);
        Credentials::parse(&c.to_string()).unwrap()
    }

    fn alice_ha1(alg: DigestAlgorithm) -> String {
        ha1(alg, "1001", REALM, "secret")
    }

    #[test]
    fn full_exchange_then_replay() {
        let auth = DigestAuth::new(SECRET, 300, 64);
        for alg in [
            DigestAlgorithm::Sha256,
            DigestAlgorithm::Md5,
            DigestAlgorithm::Sha256Sess,
            DigestAlgorithm::Md5Sess,
        ] {
            let ch = auth.challenge(NOW, REALM, alg, false);
            let ha1 = alice_ha1(alg);
            let ok =
                |c: &Credentials| auth.authenticate(NOW + 5, c, &request("REGISTER"), Some(&ha1));
            let first = answer(&ch, "secret", "sip:pbx.example.com", 1);
            assert_eq!(ok(&first), Outcome::Authenticated, "{alg}");
            assert_eq!(ok(&first), Outcome::Rejected(Rejection::Replayed), "{alg}");
            let second = answer(&ch, "secret", "sip:pbx.example.com", 2);
            assert_eq!(ok(&second), Outcome::Authenticated, "{alg}");
        }
    }

    #[test]
    fn wrong_password_and_unknown_user_are_rejected() {
        let auth = DigestAuth::new(SECRET, 300, 64);
        let ch = auth.challenge(NOW, REALM, DigestAlgorithm::Md5, false);
        let c = answer(&ch, "guess", "sip:pbx.example.com", 1);
        let ha1 = alice_ha1(DigestAlgorithm::Md5);
        assert_eq!(
            auth.authenticate(NOW, &c, &request("REGISTER"), Some(&ha1)),
            Outcome::Rejected(Rejection::WrongResponse)
        );
        assert_eq!(
            auth.authenticate(NOW, &c, &request("REGISTER"), None),
            Outcome::Rejected(Rejection::UnknownUser)
        );
        // A failed attempt did not consume nc 1 for the real user.
        let c = answer(&ch, "secret", "sip:pbx.example.com", 1);
        assert_eq!(
            auth.authenticate(NOW, &c, &request("REGISTER"), Some(&ha1)),
            Outcome::Authenticated
        );
    }

    #[test]
    fn stale_nonce_with_right_digest_is_stale_not_failure() {
        let auth = DigestAuth::new(SECRET, 300, 64);
        let ch = auth.challenge(NOW, REALM, DigestAlgorithm::Sha256, false);
        let ha1 = alice_ha1(DigestAlgorithm::Sha256);
        let good = answer(&ch, "secret", "sip:pbx.example.com", 1);
        assert_eq!(
            auth.authenticate(NOW + 301, &good, &request("REGISTER"), Some(&ha1)),
            Outcome::Stale
        );
        let bad = answer(&ch, "guess", "sip:pbx.example.com", 1);
        assert_eq!(
            auth.authenticate(NOW + 301, &bad, &request("REGISTER"), Some(&ha1)),
            Outcome::Rejected(Rejection::WrongResponse)
        );
    }

    #[test]
    fn forged_nonce_wrong_realm_and_uri_are_rejected() {
        let auth = DigestAuth::new(SECRET, 300, 64);
        let ha1 = alice_ha1(DigestAlgorithm::Md5);
        let check = |c: &Credentials| auth.authenticate(NOW, c, &request("REGISTER"), Some(&ha1));
        let forged = Challenge {
            realm: REALM.into(),
            nonce: "00".repeat(32),
            opaque: None,
            algorithm: DigestAlgorithm::Md5,
            qop_auth: true,
            stale: false,
        };
        let c = answer(&forged, "secret", "sip:pbx.example.com", 1);
        assert_eq!(check(&c), Outcome::Rejected(Rejection::InvalidNonce));

        let other_realm = auth.challenge(NOW, "elsewhere", DigestAlgorithm::Md5, false);
        let c = answer(&other_realm, "secret", "sip:pbx.example.com", 1);
        assert_eq!(check(&c), Outcome::Rejected(Rejection::WrongRealm));

        let ch = auth.challenge(NOW, REALM, DigestAlgorithm::Md5, false);
        let c = answer(&ch, "secret", "sip:other.example.com", 1);
        assert_eq!(check(&c), Outcome::Rejected(Rejection::UriMismatch));
        assert!(same_uri(
            "sip:pbx.example.com:5060",
            "sip:1001@pbx.example.com:5060"
        ));
        assert!(!same_uri(
            "sip:pbx.example.com:5070",
            "sip:1001@pbx.example.com:5060"
        ));
        assert!(!same_uri(
            "sip:other@pbx.example.com:5060",
            "sip:1001@pbx.example.com:5060"
        ));
        // An equivalent spelling of the Request-URI is the same resource.
        let c = answer(&ch, "secret", "sip:PBX.Example.COM", 1);
        assert_eq!(check(&c), Outcome::Authenticated);
    }

    #[test]
    fn qop_rules() {
        let mut auth = DigestAuth::new(SECRET, 300, 64);
        let ha1 = alice_ha1(DigestAlgorithm::Md5);
        let ch = auth.challenge(NOW, REALM, DigestAlgorithm::Md5, false);
        let mut c = answer(&ch, "secret", "sip:pbx.example.com", 1);
        let check = |auth: &DigestAuth, c: &Credentials| {
            auth.authenticate(NOW, c, &request("REGISTER"), Some(&ha1))
        };

        c.qop = Some(Err(QopProblem::MissingNcOrCnonce));
        assert_eq!(
            check(&auth, &c),
            Outcome::Rejected(Rejection::Qop(QopProblem::MissingNcOrCnonce))
        );
        c.qop = Some(Ok(QopAuth {
            nc: "1".into(),
            cnonce: "c0ffee".into(),
        }));
        assert_eq!(
            check(&auth, &c),
            Outcome::Rejected(Rejection::BadNonceCount)
        );

        let no_qop = Challenge {
            qop_auth: false,
            ..ch.clone()
        };
        let c = answer(&no_qop, "secret", "sip:pbx.example.com", 1);
        assert_eq!(c.qop, None);
        assert_eq!(check(&auth, &c), Outcome::Rejected(Rejection::NoQop));
        auth.accept_rfc2069 = true;
        assert_eq!(check(&auth, &c), Outcome::Authenticated);
    }

    #[test]
    fn constant_time_eq_compares_all_bytes() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }
}
