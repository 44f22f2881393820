//! The registrar and the authentication of extensions: REGISTER (RFC 3261 §10.3) with
//! digest authentication (RFC 7616, RFC 8760), the location service behind it, NAT
//! handling and keep-alive pings, and the scanner/brute-force defence.
//!
//! One `Arc<Registrar>` serves every shard of the SIP core. Its methods are synchronous
//! and take the time as an argument; the only IO is short redb writes made inline (one
//! fsync per changed binding). Bans are stored by a background thread. How the core
//! uses it:
//!
//! ```text
//! on every received message:  registrar.security().admit(now, source.addr.ip(), user_agent)
//!                             Drop → discard it unanswered
//! REGISTER:                   respond with registrar.handle_register(now, &req, source)
//! INVITE and other requests
//! outside a dialog (not ACK,
//! CANCEL):                    registrar.authenticate_request(now, &req, source)
//!                             Reply(resp) → send it; Authenticated { extension } → go on
//! routing to an extension:    registrar.lookup(now, "1001") → Request-URI + Peer per contact
//! every few seconds:          registrar.due_pings(now) → send OPTIONS to each, report
//!                             registrar.ping_result(&key, rtt or None on timeout)
//! every minute or so:         registrar.purge(now)
//! admin API:                  admin::router(..).merge(registrar::admin_routes(registrar))
//! ```
//!
//! Authentication failures are counted by the registrar itself; the core only drops
//! what `admit` refuses. The registrar tells the defence which addresses hold live
//! bindings or just authenticated a request, so forged packets cannot get them banned.
//! Unknown extensions and wrong passwords look the same from outside: both are
//! challenged (with the default algorithms), and both credentials are answered 403
//! Forbidden after the same work.

mod admin;
mod digest;
mod location;
mod register;
mod security;
#[cfg(test)]
mod tests;

pub use admin::admin_routes;
pub use security::{Admission, BanStats, Security};

use crate::config::Config;
use crate::sip::checks::stateless_tag;
use crate::sip::transaction::Peer;
use crate::sip::{Known, Request, Response, Uri, reason_phrase};
use crate::store::{Store, StoreError};
use digest::{Authenticator, Check};
use location::{Entry, Location};
use rand::Rng;
use register::{Op, Refusal, RegisterRequest};
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

/// Registrar limits that have no config key yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrarSettings {
    /// Expiry when neither the contact nor the request asks for one (RFC 3261 §10.2.1.1).
    pub default_expires: u32,
    /// Shorter non-zero expiries are refused with 423 and this as Min-Expires.
    pub min_expires: u32,
    /// Longer expiries are shortened to this; the 200 OK says so.
    pub max_expires: u32,
    /// Seconds between OPTIONS pings to each UDP contact; 0 turns qualify off.
    pub qualify_interval_secs: u64,
    /// How long a nonce is accepted; an older one gets a `stale=true` challenge.
    pub nonce_lifetime_secs: u64,
    /// Nonces whose counts are remembered for replay protection (about 250 bytes each).
    pub tracked_nonces: usize,
}

impl Default for RegistrarSettings {
    fn default() -> Self {
        RegistrarSettings {
            default_expires: 3600,
            min_expires: 60,
            max_expires: 7200,
            qualify_interval_secs: 30,
            nonce_lifetime_secs: 300,
            tracked_nonces: 4096,
        }
    }
}

/// Where to send a request for one registered contact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The registered Contact URI: the Request-URI of the request.
    pub contact: Uri,
    /// The source of the REGISTER: transport, address and connection (NAT-safe).
    pub peer: Peer,
    pub q_thousandths: u16,
    /// From keep-alive pings; `None` until one has been answered or timed out, and
    /// always for stream transports (their connection is the keep-alive).
    pub reachable: Option<bool>,
}

/// Identifies one ping; hand it back to [`Registrar::ping_result`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PingKey {
    pub aor: String,
    pub contact: String,
    /// Orders pings, so a late result cannot overwrite a newer one.
    pub seq: u64,
}

/// An OPTIONS ping the core should send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PingTarget {
    pub key: PingKey,
    pub peer: Peer,
    pub request_uri: Uri,
}

/// One binding as the admin API lists it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RegistrationInfo {
    pub aor: String,
    pub contact: String,
    /// Where the REGISTER came from and where requests go.
    pub source: SocketAddr,
    pub transport: String,
    pub expires_in: u64,
    pub q: f64,
    pub user_agent: Option<String>,
    pub reachable: Option<bool>,
    pub rtt_ms: Option<f64>,
}

/// The verdict on a request that must come from an extension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthVerdict {
    /// The request carries valid credentials of this extension (its From user).
    Authenticated { extension: String },
    /// Send this instead of processing the request: 407 with challenges, 403 for bad
    /// credentials, 400 for malformed ones.
    Reply(Response),
}

/// Which side of digest authentication a request meets (RFC 3261 §22.2, §22.3).
#[derive(Clone, Copy)]
enum Authority {
    /// 401 with WWW-Authenticate, answered in Authorization.
    Registrar,
    /// 407 with Proxy-Authenticate, answered in Proxy-Authorization.
    Proxy,
}

/// Where the nonce secret lives in the store's key/value table. The namespace is
/// reserved: dialplan scripts must not be given it.
const SECRET_NAMESPACE: &str = "switchboard.registrar";
const SECRET_KEY: &str = "nonce-secret";

pub struct Registrar {
    settings: RegistrarSettings,
    /// Our Server header value.
    server: String,
    auth: Authenticator,
    store: Store,
    location: RwLock<Location>,
    /// Serializes binding changes, so the check of a REGISTER against the current
    /// bindings and its commit are one step. Lookups never wait for it.
    writer: Mutex<()>,
    security: Security,
}

impl Registrar {
    /// Loads the bindings and bans persisted by earlier runs (dropping bindings expired
    /// at `now`) and the nonce secret, which is created on the first start and kept so
    /// nonces issued before a restart stay valid.
    pub fn new(
        now: SystemTime,
        config: &Config,
        settings: RegistrarSettings,
        store: Store,
    ) -> Result<Registrar, StoreError> {
        let security = Security::new(now, &config.security, store.clone())?;
        let now = unix_secs(now);
        store.purge_expired_bindings(now)?;
        let location = Location::load(store.all_bindings()?, now);
        let secret = nonce_secret(&store)?;
        let registrar = Registrar {
            auth: Authenticator::new(
                config,
                &secret,
                settings.nonce_lifetime_secs,
                settings.tracked_nonces,
            ),
            server: config.sip.user_agent.clone(),
            security,
            location: RwLock::new(location),
            writer: Mutex::new(()),
            settings,
            store,
        };
        registrar.protect_registered(now);
        Ok(registrar)
    }

    /// The scanner and brute-force defence: [`Security::admit`] before anything else.
    pub fn security(&self) -> &Security {
        &self.security
    }

    /// Whether `user` is a configured extension.
    pub fn is_extension(&self, user: &str) -> bool {
        self.auth.is_extension(user)
    }

    /// Answers a REGISTER (RFC 3261 §10.3): authenticates it, then adds, refreshes,
    /// removes or lists the bindings of the extension named in To. The response is
    /// complete (To tag, Server header) and goes back through the server transaction.
    pub fn handle_register(&self, now: SystemTime, req: &Request, source: Peer) -> Response {
        let aor = register::aor_user(req);
        if let Err(resp) = self.authenticate(now, req, source, aor.as_deref(), Authority::Registrar)
        {
            return resp;
        }
        // Only a configured extension can authenticate, so this is one.
        let Some(aor) = aor else {
            return self.response(req, 403);
        };
        let now = unix_secs(now);
        let _writer = lock(&self.writer);
        let planned = RegisterRequest {
            req,
            aor: &aor,
            source,
            now,
        }
        .plan(read(&self.location).entries(&aor), &self.settings);
        let ops = match planned {
            Ok(ops) => ops,
            Err(Refusal::BadRequest(detail)) => return self.bad_request(req, detail),
            Err(Refusal::IntervalTooBrief) => {
                let mut resp = self.response(req, 423);
                resp.headers
                    .push(Known::MinExpires, self.settings.min_expires.to_string());
                return resp;
            }
            Err(Refusal::OutOfOrder) => {
                tracing::debug!(%aor, "REGISTER with an old CSeq for its Call-ID");
                return self.response(req, 500);
            }
        };
        let committed = self.commit(&aor, ops, now);
        // Even a commit that failed part way may have changed some bindings.
        self.protect_registered(now);
        if let Err(e) = committed {
            tracing::error!(%aor, error = %e, "binding not stored");
            return self.response(req, 500);
        }
        let location = read(&self.location);
        let live: Vec<&Entry> = location
            .entries(&aor)
            .iter()
            .filter(|e| e.is_live(now))
            .collect();
        register::ok_response(self.response(req, 200), &live, now)
    }

    /// Authenticates a request outside a dialog (INVITE, MESSAGE, SUBSCRIBE, ...) as
    /// coming from the extension in its From header, with 407 challenges. Every such
    /// request must come from an extension until trunks exist; a From that names no
    /// extension is challenged and refused like a wrong password. Never call it for
    /// ACK or CANCEL, which cannot be challenged (RFC 3261 §22.1).
    pub fn authenticate_request(
        &self,
        now: SystemTime,
        req: &Request,
        source: Peer,
    ) -> AuthVerdict {
        let user = req
            .from()
            .ok()
            .and_then(|from| from.uri.as_sip()?.user_unescaped())
            .and_then(|u| String::from_utf8(u).ok());
        match self.authenticate(now, req, source, user.as_deref(), Authority::Proxy) {
            Ok(()) => match user {
                Some(extension) => {
                    // Most likely a call starting: keep forged packets from banning it.
                    self.security.vouch_for_caller(now, source.addr.ip());
                    AuthVerdict::Authenticated { extension }
                }
                None => AuthVerdict::Reply(self.response(req, 403)),
            },
            Err(resp) => AuthVerdict::Reply(resp),
        }
    }

    /// The live contacts of an extension, highest q first.
    pub fn lookup(&self, now: SystemTime, aor: &str) -> Vec<Target> {
        read(&self.location).targets(aor, unix_secs(now))
    }

    /// Every live binding, for the admin API.
    pub fn registrations(&self, now: SystemTime) -> Vec<RegistrationInfo> {
        read(&self.location).registrations(unix_secs(now))
    }

    /// Removes expired bindings (from memory and the store) and bans (the ban writer
    /// updates the store); returns how many bindings went. Expired bindings are already
    /// invisible before this runs.
    pub fn purge(&self, now: SystemTime) -> Result<usize, StoreError> {
        self.security.purge(now);
        let now = unix_secs(now);
        let _writer = lock(&self.writer);
        self.store.purge_expired_bindings(now)?;
        let purged = write(&self.location).purge(now);
        self.protect_registered(now);
        Ok(purged)
    }

    /// Tells the defence where the live bindings come from, so that no forged packet
    /// can get a registered phone's address banned. Called with `writer` held (or
    /// before the registrar is shared), after every change to the bindings.
    fn protect_registered(&self, now: u64) {
        let live = read(&self.location).registrations(now);
        self.security.set_registered(
            live.iter()
                .map(|r| (r.source.ip(), now.saturating_add(r.expires_in))),
        );
    }

    /// The OPTIONS keep-alives due now, one per UDP contact every qualify interval.
    /// Send each to `peer` with `request_uri` and report the outcome to
    /// [`Registrar::ping_result`].
    pub fn due_pings(&self, now: SystemTime) -> Vec<PingTarget> {
        let interval = self.settings.qualify_interval_secs;
        if interval == 0 {
            return Vec::new();
        }
        write(&self.location).due_pings(unix_secs(now), interval)
    }

    /// A ping was answered after `rtt` (any response counts: the contact is alive), or
    /// timed out (`None`): the contact is marked reachable or unreachable.
    pub fn ping_result(&self, key: &PingKey, rtt: Option<Duration>) {
        write(&self.location).ping_result(key, rtt);
    }

    /// Applies planned changes, store first, so the index never shows what a crash
    /// would lose. A store error stops at the failed change.
    fn commit(&self, aor: &str, ops: Vec<Op>, now: u64) -> Result<(), StoreError> {
        for op in ops {
            match op {
                Op::Put(binding) => {
                    self.store.put_binding(&binding)?;
                    tracing::debug!(
                        aor,
                        contact = %binding.contact,
                        source = %binding.source,
                        expires_in = binding.expires_at_unix - now,
                        "binding stored"
                    );
                    write(&self.location).put(binding, now, self.settings.qualify_interval_secs);
                }
                Op::Remove { contact } => {
                    self.store.remove_binding(aor, &contact)?;
                    tracing::debug!(aor, %contact, "binding removed");
                    write(&self.location).remove(aor, &contact);
                }
            }
        }
        Ok(())
    }

    /// `Ok` for valid credentials of `user`; otherwise the response to send. Counts
    /// failures against the source.
    fn authenticate(
        &self,
        now: SystemTime,
        req: &Request,
        source: Peer,
        user: Option<&str>,
        authority: Authority,
    ) -> Result<(), Response> {
        let (credentials, status, challenge) = match authority {
            Authority::Registrar => (Known::Authorization, 401, Known::WwwAuthenticate),
            Authority::Proxy => (Known::ProxyAuthorization, 407, Known::ProxyAuthenticate),
        };
        let unix = unix_secs(now);
        match self.auth.check(unix, req, credentials, user) {
            Check::Authenticated => Ok(()),
            Check::Challenge { stale } => {
                let mut resp = self.response(req, status);
                for ch in self.auth.challenges(unix, user, stale) {
                    resp.headers.push(challenge, ch.to_string());
                }
                Err(resp)
            }
            Check::Failed(why) => {
                tracing::info!(source = %source.addr, user, reason = ?why, method = %req.method, "authentication failed");
                // A connection's source address cannot be forged; a datagram's can.
                let connected = source.transport.is_reliable();
                self.security
                    .record_auth_failure(now, source.addr.ip(), connected);
                Err(self.response(req, 403))
            }
            Check::Malformed(e) => {
                tracing::debug!(source = %source.addr, error = %e, "malformed credentials");
                Err(self.bad_request(req, "malformed credentials"))
            }
        }
    }

    /// A response with Via, From, To (tagged the same for every retransmission),
    /// Call-ID and CSeq copied, and our Server header.
    fn response(&self, req: &Request, status: u16) -> Response {
        let mut resp = Response::to_request(req, status, reason_phrase(status));
        resp.set_to_tag(&stateless_tag(&req.headers));
        resp.headers.push(Known::Server, self.server.as_str());
        resp
    }

    fn bad_request(&self, req: &Request, detail: &str) -> Response {
        let mut resp = self.response(req, 400);
        resp.reason = format!("Bad Request ({detail})").into();
        resp
    }
}

/// Reads the nonce secret from the store, or makes and stores a new one.
fn nonce_secret(store: &Store) -> Result<[u8; 32], StoreError> {
    let mut secret = [0u8; 32];
    if let Some(text) = store.kv_get(SECRET_NAMESPACE, SECRET_KEY)? {
        if hex::decode_to_slice(text.trim(), &mut secret).is_ok() {
            return Ok(secret);
        }
        tracing::warn!("stored nonce secret is unreadable; making a new one");
    }
    rand::rng().fill_bytes(&mut secret);
    store.kv_set(SECRET_NAMESPACE, SECRET_KEY, &hex::encode(secret))?;
    Ok(secret)
}

/// Seconds since the UNIX epoch; a clock before 1970 reads as 0.
fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// A panic elsewhere while a lock was held leaves plain data behind; keep using it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}
