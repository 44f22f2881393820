//! Scanner and brute-force defence: per source IP, count real authentication failures
//! in a sliding window and requests per second; past the `[security]` limits, or on a
//! known scanner User-Agent, ban the address for `ban_secs`. The core asks [`Security::admit`]
//! before parsing further, and drops a banned source's packets without an answer.
//!
//! A UDP source address can be forged, so one datagram must not be able to cut off a
//! phone: an address that is trusted (`security.trusted`), holds a live registration,
//! or recently authenticated a request (a call's INVITE) is never banned by anything
//! that came over UDP. Its offending packets are dropped (or, for wrong credentials,
//! answered 403) and counted as spared. Over TCP the source is real, so its failures
//! ban it as they would any address; only trusted addresses are exempt there.
//!
//! Bans live in a bounded in-memory table for the per-packet check (`max_bans`; when
//! full, the ban closest to its end goes) and in the store, so they survive a restart.
//! The store is written by a background thread that brings it in line with the table a
//! moment after it changed, one transaction for a whole burst of bans: banning costs
//! the SIP path no fsync, and a flood of sources costs one commit per batch. Loopback
//! is not exempt: the interop tests run the attacker on 127.0.0.1 and a phone on
//! 127.0.0.2.

use super::{lock, read, unix_secs, write};
use crate::config::SecurityConfig;
use crate::store::{Ban, Store, StoreError};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

/// What the core does with a packet from a source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Allow,
    /// Drop it without an answer: the source is banned (or just got banned), or it is a
    /// protected address that sent what would have banned it.
    Drop,
}

/// Shards of the per-source activity table, so shards of the SIP core checking
/// different sources rarely wait on one lock.
const SHARDS: usize = 16;
/// Sources remembered per shard. Spoofed UDP sources could otherwise grow the table
/// without bound; when full, idle sources go first, then the least recently seen.
const SOURCES_PER_SHARD: usize = 4096;
/// How long the ban writer gathers changes before committing them in one transaction.
const BATCH_WINDOW: Duration = Duration::from_millis(200);
/// How long an address that authenticated a request outside a dialog (an INVITE) stays
/// protected. Nothing tells the registrar when a call ends, so this covers the length
/// of most calls; a registered phone is protected by its registration anyway.
const CALLER_PROTECTION_SECS: u64 = 3600;

/// What one source did recently.
#[derive(Debug, Default)]
struct Activity {
    /// The second `requests` counts in (a fixed one-second window).
    second: u64,
    requests: u32,
    /// Times of authentication failures inside the window, oldest first.
    failures: VecDeque<u64>,
    last_seen: u64,
}

/// The bans in force, at most `max`: indexed by address for the per-packet check, and
/// by end time (then age) to find the ban that makes room when the table is full.
#[derive(Debug)]
struct BanTable {
    by_ip: HashMap<IpAddr, (Ban, u64)>,
    /// `(until_unix, sequence)` → address; the sequence orders bans ending in one second.
    by_end: BTreeMap<(u64, u64), IpAddr>,
    next_seq: u64,
    max: usize,
    /// Bans dropped before their end to make room, since start.
    evicted: u64,
}

impl BanTable {
    fn new(max: usize) -> BanTable {
        BanTable {
            by_ip: HashMap::new(),
            by_end: BTreeMap::new(),
            next_seq: 0,
            max: max.max(1),
            evicted: 0,
        }
    }

    fn is_banned(&self, ip: IpAddr, now: u64) -> bool {
        self.by_ip
            .get(&ip)
            .is_some_and(|(ban, _)| ban.until_unix > now)
    }

    /// Adds or replaces the ban of `ip`, first dropping the bans closest to their end
    /// if the table is full.
    fn insert(&mut self, ip: IpAddr, ban: Ban) {
        self.remove(ip);
        while self.by_ip.len() >= self.max {
            let Some((_, oldest)) = self.by_end.pop_first() else {
                break;
            };
            self.by_ip.remove(&oldest);
            self.evicted += 1;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_end.insert((ban.until_unix, seq), ip);
        self.by_ip.insert(ip, (ban, seq));
    }

    fn remove(&mut self, ip: IpAddr) -> bool {
        match self.by_ip.remove(&ip) {
            Some((ban, seq)) => {
                self.by_end.remove(&(ban.until_unix, seq));
                true
            }
            None => false,
        }
    }

    /// Drops bans that ended at or before `now`; returns how many.
    fn purge(&mut self, now: u64) -> usize {
        let mut removed = 0;
        while let Some(entry) = self.by_end.first_entry() {
            if entry.key().0 > now {
                break;
            }
            self.by_ip.remove(&entry.remove());
            removed += 1;
        }
        removed
    }
}

/// Addresses that proved themselves, with the time their protection ends.
#[derive(Debug, Default)]
struct Vouched {
    /// The source of every live binding → when its last binding there expires.
    registered: HashMap<IpAddr, u64>,
    /// The source of a recently authenticated request → until when it is protected.
    callers: HashMap<IpAddr, u64>,
}

/// Why an address is not banned.
#[derive(Clone, Copy, Debug)]
enum Protection {
    Trusted,
    Registered,
    Caller,
}

/// Tells the ban writer that the table changed, or that it should stop.
#[derive(Default)]
struct WriterSignal {
    state: Mutex<WriterState>,
    wake: Condvar,
}

#[derive(Default)]
struct WriterState {
    dirty: bool,
    stop: bool,
}

/// Counters for the admin API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BanStats {
    pub max_bans: u32,
    /// Bans dropped before their end because the table was full, since start.
    pub evicted: u64,
    /// Packets that would have banned a protected address, since start.
    pub spared: u64,
}

pub struct Security {
    limits: SecurityConfig,
    /// `limits.scanner_user_agents`, lowercased once for the per-packet check.
    scanner_agents: Vec<String>,
    /// Keyed by canonical IP (an IPv4-mapped IPv6 address is its IPv4 address).
    bans: Arc<RwLock<BanTable>>,
    vouched: RwLock<Vouched>,
    spared: AtomicU64,
    sources: Vec<Mutex<HashMap<IpAddr, Activity>>>,
    shard_hasher: std::collections::hash_map::RandomState,
    signal: Arc<WriterSignal>,
    writer: Option<JoinHandle<()>>,
}

impl Security {
    /// Loads the persisted bans still in force at `now` (the most recent `max_bans` of
    /// them) and starts the thread that persists later changes.
    pub fn new(
        now: SystemTime,
        limits: &SecurityConfig,
        store: Store,
    ) -> Result<Security, StoreError> {
        Self::with_batch_window(now, limits, store, BATCH_WINDOW)
    }

    fn with_batch_window(
        now: SystemTime,
        limits: &SecurityConfig,
        store: Store,
        window: Duration,
    ) -> Result<Security, StoreError> {
        let now = unix_secs(now);
        let mut stored = store.bans()?;
        // Oldest first, so a table too small for them keeps the newest.
        stored.sort_by_key(|(_, ban)| ban.until_unix);
        let mut table = BanTable::new(limits.max_bans as usize);
        for (ip, ban) in &stored {
            if ban.until_unix > now {
                table.insert(ip.to_canonical(), ban.clone());
            }
        }
        table.evicted = 0;
        let stored: HashMap<IpAddr, Ban> = stored.into_iter().collect();
        let signal = Arc::new(WriterSignal::default());
        // Rows that did not make it into the table are deleted by the first write.
        lock(&signal.state).dirty = stored.len() != table.by_ip.len();
        let bans = Arc::new(RwLock::new(table));
        let writer = {
            let (bans, signal) = (bans.clone(), signal.clone());
            std::thread::Builder::new()
                .name("ban-writer".into())
                .spawn(move || persist_bans(&store, &bans, &signal, stored, window))
                .map_err(StoreError::Io)?
        };
        Ok(Security {
            scanner_agents: limits
                .scanner_user_agents
                .iter()
                .map(|ua| ua.to_ascii_lowercase())
                .collect(),
            limits: limits.clone(),
            bans,
            vouched: RwLock::default(),
            spared: AtomicU64::new(0),
            sources: (0..SHARDS).map(|_| Mutex::default()).collect(),
            shard_hasher: Default::default(),
            signal,
            writer: Some(writer),
        })
    }

    /// Decides about one received message, before anything else is done with it, and
    /// counts it towards the source's request rate.
    pub fn admit(&self, now: SystemTime, ip: IpAddr, user_agent: Option<&str>) -> Admission {
        let now = unix_secs(now);
        let ip = ip.to_canonical();
        if read(&self.bans).is_banned(ip, now) {
            return Admission::Drop;
        }
        if self.limits.drop_scanner_user_agents
            && let Some(ua) = user_agent
            && let Some(scanner) = self
                .scanner_agents
                .iter()
                .find(|s| contains_ignore_ascii_case(ua, s))
        {
            self.ban_unless_protected(now, ip, || format!("scanner User-Agent {scanner:?}"));
            return Admission::Drop;
        }
        let limit = self.limits.max_requests_per_sec;
        if limit > 0 {
            let requests = self.with_activity(now, ip, |a| {
                if a.second != now {
                    a.second = now;
                    a.requests = 0;
                }
                a.requests = a.requests.saturating_add(1);
                a.requests
            });
            if requests > limit {
                self.ban_unless_protected(now, ip, || {
                    format!("more than {limit} requests per second")
                });
                return Admission::Drop;
            }
        }
        Admission::Allow
    }

    /// Counts a failed digest response (a wrong password, an unknown user, a qop
    /// without nc/cnonce), never a first challenge. `connected` says it came over a
    /// connection (TCP, TLS), whose source address is real. Returns true if this
    /// banned `ip`.
    pub fn record_auth_failure(&self, now: SystemTime, ip: IpAddr, connected: bool) -> bool {
        let now = unix_secs(now);
        let ip = ip.to_canonical();
        if let Some(why) = self.protection(now, ip, connected) {
            self.spare(ip, why, "authentication failure");
            return false;
        }
        let window = self.limits.failure_window_secs;
        let max = self.limits.max_auth_failures as usize;
        let failures = self.with_activity(now, ip, |a| {
            while a.failures.front().is_some_and(|&t| t + window <= now) {
                a.failures.pop_front();
            }
            a.failures.push_back(now);
            // Only `max + 1` entries are ever needed to decide.
            if a.failures.len() > max + 1 {
                a.failures.pop_front();
            }
            a.failures.len()
        });
        if failures > max {
            self.ban(
                now,
                ip,
                format!("{failures} failed authentications within {window} s"),
            );
            return true;
        }
        false
    }

    /// Replaces the set of addresses with live registrations: each source address
    /// with the time its last binding there expires. The registrar calls this after
    /// every change to its bindings.
    pub fn set_registered(&self, sources: impl IntoIterator<Item = (IpAddr, u64)>) {
        let mut registered = HashMap::new();
        for (ip, until) in sources {
            let entry = registered.entry(ip.to_canonical()).or_insert(until);
            *entry = (*entry).max(until);
        }
        write(&self.vouched).registered = registered;
    }

    /// Protects `ip`, which just authenticated a request outside a dialog (such as the
    /// INVITE of a call), for [`CALLER_PROTECTION_SECS`].
    pub fn vouch_for_caller(&self, now: SystemTime, ip: IpAddr) {
        let until = unix_secs(now).saturating_add(CALLER_PROTECTION_SECS);
        write(&self.vouched)
            .callers
            .insert(ip.to_canonical(), until);
    }

    /// The bans in force at `now`, ordered by address.
    pub fn bans(&self, now: SystemTime) -> Vec<(IpAddr, Ban)> {
        let now = unix_secs(now);
        let mut out: Vec<_> = read(&self.bans)
            .by_ip
            .iter()
            .filter(|(_, (ban, _))| ban.until_unix > now)
            .map(|(ip, (ban, _))| (*ip, ban.clone()))
            .collect();
        out.sort_by_key(|(ip, _)| *ip);
        out
    }

    pub fn stats(&self) -> BanStats {
        BanStats {
            max_bans: self.limits.max_bans,
            evicted: read(&self.bans).evicted,
            spared: self.spared.load(Ordering::Relaxed),
        }
    }

    /// Lifts the ban on `ip` and forgets its failures, so its next mistake does not
    /// ban it again at once. `false` if it was not banned. The store follows shortly.
    pub fn unban(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        let lifted = write(&self.bans).remove(ip);
        lock(self.shard(ip)).remove(&ip);
        if lifted {
            self.changed();
            tracing::info!(%ip, "ban lifted");
        }
        lifted
    }

    /// Forgets expired bans and protections, and sources idle for longer than the
    /// failure window; returns how many bans ended. The core calls this periodically.
    pub fn purge(&self, now: SystemTime) -> usize {
        let now = unix_secs(now);
        let ended = write(&self.bans).purge(now);
        if ended > 0 {
            self.changed();
        }
        {
            let mut vouched = write(&self.vouched);
            vouched.registered.retain(|_, until| *until > now);
            vouched.callers.retain(|_, until| *until > now);
        }
        for shard in &self.sources {
            lock(shard).retain(|_, a| !self.is_idle(a, now));
        }
        ended
    }

    /// Why `ip` must not be banned for what it sent, if it must not. Over a connection
    /// only the trust list counts: the source address is real.
    fn protection(&self, now: u64, ip: IpAddr, connected: bool) -> Option<Protection> {
        if self.limits.trusted.iter().any(|net| net.contains(ip)) {
            return Some(Protection::Trusted);
        }
        if connected {
            return None;
        }
        let vouched = read(&self.vouched);
        let live = |map: &HashMap<IpAddr, u64>| map.get(&ip).is_some_and(|&until| until > now);
        if live(&vouched.registered) {
            Some(Protection::Registered)
        } else if live(&vouched.callers) {
            Some(Protection::Caller)
        } else {
            None
        }
    }

    /// Bans for what one packet showed, unless `ip` is protected. The core does not say
    /// which transport the packet came over, so it is taken as forgeable.
    fn ban_unless_protected(&self, now: u64, ip: IpAddr, reason: impl FnOnce() -> String) {
        match self.protection(now, ip, false) {
            Some(why) => self.spare(ip, why, &reason()),
            None => self.ban(now, ip, reason()),
        }
    }

    fn spare(&self, ip: IpAddr, why: Protection, what: &str) {
        self.spared.fetch_add(1, Ordering::Relaxed);
        // Debug only: forged packets could otherwise flood the log.
        tracing::debug!(%ip, protection = ?why, what, "not banned: protected address");
    }

    fn is_idle(&self, activity: &Activity, now: u64) -> bool {
        activity.last_seen + self.limits.failure_window_secs.max(1) < now
    }

    fn ban(&self, now: u64, ip: IpAddr, reason: String) {
        let ban = Ban {
            until_unix: now.saturating_add(self.limits.ban_secs),
            reason,
            banned_at_unix: now,
        };
        tracing::warn!(%ip, reason = %ban.reason, secs = self.limits.ban_secs, "source banned");
        write(&self.bans).insert(ip, ban);
        lock(self.shard(ip)).remove(&ip);
        self.changed();
    }

    /// Wakes the ban writer.
    fn changed(&self) {
        lock(&self.signal.state).dirty = true;
        self.signal.wake.notify_one();
    }

    fn shard(&self, ip: IpAddr) -> &Mutex<HashMap<IpAddr, Activity>> {
        let i = self.shard_hasher.hash_one(ip) as usize % SHARDS;
        &self.sources[i]
    }

    /// Runs `f` on the source's activity record, creating it (and making room) if new.
    fn with_activity<T>(&self, now: u64, ip: IpAddr, f: impl FnOnce(&mut Activity) -> T) -> T {
        let mut sources = lock(self.shard(ip));
        if !sources.contains_key(&ip) && sources.len() >= SOURCES_PER_SHARD {
            sources.retain(|_, a| !self.is_idle(a, now));
            if sources.len() >= SOURCES_PER_SHARD
                && let Some(oldest) = sources
                    .iter()
                    .min_by_key(|(_, a)| a.last_seen)
                    .map(|(ip, _)| *ip)
            {
                sources.remove(&oldest);
            }
        }
        let activity = sources.entry(ip).or_default();
        activity.last_seen = now;
        f(activity)
    }
}

impl Drop for Security {
    /// Stops the writer after it has stored the last changes.
    fn drop(&mut self) {
        lock(&self.signal.state).stop = true;
        self.signal.wake.notify_one();
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!("the ban writer panicked; the latest bans may not be stored");
        }
    }
}

/// The ban writer: waits for a change, lets more gather for `window`, then writes what
/// differs between the table and `stored` (what the store holds) in one transaction.
/// A failed write is retried with the next change. Ends, after a last write, on stop.
fn persist_bans(
    store: &Store,
    table: &RwLock<BanTable>,
    signal: &WriterSignal,
    mut stored: HashMap<IpAddr, Ban>,
    window: Duration,
) {
    loop {
        let mut state = lock(&signal.state);
        while !state.dirty && !state.stop {
            state = signal
                .wake
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if !state.stop {
            state = signal
                .wake
                .wait_timeout_while(state, window, |s| !s.stop)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        state.dirty = false;
        let stop = state.stop;
        drop(state);
        let (put, lift): (Vec<(IpAddr, Ban)>, Vec<IpAddr>) = {
            let table = read(table);
            (
                table
                    .by_ip
                    .iter()
                    .filter(|(ip, (ban, _))| stored.get(ip) != Some(ban))
                    .map(|(ip, (ban, _))| (*ip, ban.clone()))
                    .collect(),
                stored
                    .keys()
                    .filter(|ip| !table.by_ip.contains_key(ip))
                    .copied()
                    .collect(),
            )
        };
        if !put.is_empty() || !lift.is_empty() {
            match store.update_bans(&put, &lift) {
                Ok(()) => {
                    for ip in &lift {
                        stored.remove(ip);
                    }
                    stored.extend(put);
                }
                Err(e) => tracing::error!(
                    error = %e,
                    bans = put.len(),
                    lifted = lift.len(),
                    "bans not stored; retried with the next change"
                ),
            }
        }
        if stop {
            return;
        }
    }
}

/// Whether `haystack` contains `needle_lower` (already lowercase), ignoring ASCII case,
/// without allocating on the per-packet path.
fn contains_ignore_ascii_case(haystack: &str, needle_lower: &str) -> bool {
    let needle = needle_lower.as_bytes();
    needle.is_empty()
        || haystack
            .as_bytes()
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::IpNetwork;
    use tempfile::TempDir;

    const NOW: u64 = 1_700_000_000;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn limits() -> SecurityConfig {
        SecurityConfig {
            max_auth_failures: 3,
            failure_window_secs: 60,
            max_requests_per_sec: 10,
            ban_secs: 600,
            ..SecurityConfig::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn security(tmp: &TempDir, limits: &SecurityConfig) -> Security {
        Security::new(at(NOW), limits, Store::open(tmp.path()).unwrap()).unwrap()
    }

    fn banned(sec: &Security, now: u64) -> Vec<IpAddr> {
        sec.bans(at(now)).into_iter().map(|(ip, _)| ip).collect()
    }

    #[test]
    fn failures_past_the_limit_ban_only_that_source() {
        let tmp = TempDir::new().unwrap();
        let sec = security(&tmp, &limits());
        let attacker = ip("127.0.0.1");
        let phone = ip("127.0.0.2");
        for i in 0..3 {
            assert!(!sec.record_auth_failure(at(NOW + i), attacker, false));
            assert_eq!(sec.admit(at(NOW + i), attacker, None), Admission::Allow);
        }
        assert!(sec.record_auth_failure(at(NOW + 3), attacker, false));
        assert_eq!(sec.admit(at(NOW + 3), attacker, None), Admission::Drop);
        // The IPv4-mapped form of the same address is the same source.
        assert_eq!(
            sec.admit(at(NOW + 3), ip("::ffff:127.0.0.1"), None),
            Admission::Drop
        );
        assert_eq!(sec.admit(at(NOW + 3), phone, None), Admission::Allow);
        // The ban ends after ban_secs.
        assert_eq!(sec.admit(at(NOW + 603), attacker, None), Admission::Allow);
        let bans = sec.bans(at(NOW + 4));
        assert_eq!(bans.len(), 1);
        assert_eq!(bans[0].0, attacker);
        assert_eq!(bans[0].1.until_unix, NOW + 603);
        assert!(bans[0].1.reason.contains("4 failed authentications"));
    }

    #[test]
    fn failures_outside_the_window_are_forgotten() {
        let tmp = TempDir::new().unwrap();
        let sec = security(&tmp, &limits());
        let src = ip("192.0.2.1");
        for t in [0, 30, 59, 61, 90, 121, 125] {
            assert!(!sec.record_auth_failure(at(NOW + t), src, false), "{t}");
        }
        // 90, 121, 125 and 126: four inside one 60 s window.
        assert!(sec.record_auth_failure(at(NOW + 126), src, false));
    }

    #[test]
    fn request_rate_limit_bans() {
        let tmp = TempDir::new().unwrap();
        let sec = security(&tmp, &limits());
        let src = ip("192.0.2.1");
        for _ in 0..10 {
            assert_eq!(sec.admit(at(NOW), src, None), Admission::Allow);
        }
        // A new second starts a new count.
        for _ in 0..10 {
            assert_eq!(sec.admit(at(NOW + 1), src, None), Admission::Allow);
        }
        assert_eq!(sec.admit(at(NOW + 1), src, None), Admission::Drop);
        assert_eq!(sec.admit(at(NOW + 2), src, None), Admission::Drop);
        assert!(
            sec.bans(at(NOW + 2))[0]
                .1
                .reason
                .contains("requests per second")
        );

        let unlimited = SecurityConfig {
            max_requests_per_sec: 0,
            ..limits()
        };
        let tmp = TempDir::new().unwrap();
        let sec = security(&tmp, &unlimited);
        for _ in 0..1000 {
            assert_eq!(sec.admit(at(NOW), src, None), Admission::Allow);
        }
    }

    #[test]
    fn scanner_user_agents_are_dropped_and_banned_when_enabled() {
        let tmp = TempDir::new().unwrap();
        let sec = security(&tmp, &limits());
        let src = ip("192.0.2.1");
        assert_eq!(
            sec.admit(at(NOW), src, Some("Yealink SIP-T46S 66.86.0.15")),
            Admission::Allow
        );
        assert_eq!(
            sec.admit(at(NOW), src, Some("Friendly-Scanner 1.8")),
            Admission::Drop
        );
        // Banned: even an innocent User-Agent from it is dropped now.
        assert_eq!(sec.admit(at(NOW), src, Some("Yealink")), Admission::Drop);

        let off = SecurityConfig {
            drop_scanner_user_agents: false,
            ..limits()
        };
        let tmp = TempDir::new().unwrap();
        let sec = security(&tmp, &off);
        assert_eq!(
            sec.admit(at(NOW), src, Some("sipvicious")),
            Admission::Allow
        );
    }

    #[test]
    fn forged_packets_never_ban_a_registered_trusted_or_calling_address() {
        let tmp = TempDir::new().unwrap();
        let trusted = IpNetwork::try_from("10.9.0.0/16".to_string()).unwrap();
        let sec = security(
            &tmp,
            &SecurityConfig {
                trusted: vec![trusted],
                ..limits()
            },
        );
        let phone = ip("127.0.0.2");
        let office = ip("10.9.4.4");
        let caller = ip("127.0.0.3");
        let stranger = ip("127.0.0.9");
        // The registrar reports the phone's binding (until NOW + 100) in mapped form.
        sec.set_registered([(ip("::ffff:127.0.0.2"), NOW + 50), (phone, NOW + 100)]);
        sec.vouch_for_caller(at(NOW), caller);
        for who in [phone, office, caller] {
            assert_eq!(sec.admit(at(NOW), who, Some("sipvicious")), Admission::Drop);
            assert_eq!(sec.admit(at(NOW), who, None), Admission::Allow, "{who}");
            // A forged flood past the rate limit is dropped, not banned.
            let admitted = (0..30)
                .filter(|_| sec.admit(at(NOW + 1), who, None) == Admission::Allow)
                .count();
            assert_eq!(admitted, 10, "{who}");
            assert_eq!(sec.admit(at(NOW + 2), who, None), Admission::Allow);
            // Forged wrong credentials over UDP count for nothing.
            for _ in 0..10 {
                assert!(!sec.record_auth_failure(at(NOW + 2), who, false));
            }
        }
        assert!(banned(&sec, NOW + 2).is_empty());
        // 1 scanner packet, 20 over the rate and 10 failures for each of the three.
        assert_eq!(sec.stats().spared, 3 * 31);
        // The same from an address nobody vouched for bans it at once.
        assert_eq!(
            sec.admit(at(NOW), stranger, Some("sipvicious")),
            Admission::Drop
        );
        assert_eq!(banned(&sec, NOW + 2), vec![stranger]);

        // Over TCP the source is real: failures ban a registered address, never a
        // trusted one.
        for _ in 0..4 {
            sec.record_auth_failure(at(NOW + 3), phone, true);
            sec.record_auth_failure(at(NOW + 3), office, true);
        }
        assert_eq!(banned(&sec, NOW + 3), vec![phone, stranger]);
        assert!(sec.unban(phone));

        // Protection ends with the registration, and with the caller's window.
        assert_eq!(
            sec.admit(at(NOW + 99), phone, Some("sipcli")),
            Admission::Drop
        );
        assert!(!banned(&sec, NOW + 99).contains(&phone));
        assert_eq!(
            sec.admit(at(NOW + 100), phone, Some("sipcli")),
            Admission::Drop
        );
        assert!(banned(&sec, NOW + 100).contains(&phone));
        let later = NOW + CALLER_PROTECTION_SECS;
        sec.admit(at(later - 1), caller, Some("sipcli"));
        assert!(!banned(&sec, later - 1).contains(&caller));
        sec.admit(at(later), caller, Some("sipcli"));
        assert!(banned(&sec, later).contains(&caller));
        // A new set of registrations replaces the old one.
        sec.set_registered([(stranger, NOW + 10_000)]);
        sec.unban(stranger);
        sec.admit(at(later), stranger, Some("sipcli"));
        assert!(!banned(&sec, later).contains(&stranger));
    }

    #[test]
    fn the_ban_table_is_bounded_and_the_oldest_bans_make_room() {
        let tmp = TempDir::new().unwrap();
        let sec = security(
            &tmp,
            &SecurityConfig {
                max_bans: 3,
                ..limits()
            },
        );
        let sources: Vec<IpAddr> = (1..=1000)
            .map(|i| ip(&format!("10.0.{}.{}", i / 256, i % 256)))
            .collect();
        // A flood of distinct sources within one second: the latest three stay.
        for src in &sources {
            assert_eq!(
                sec.admit(at(NOW), *src, Some("sipvicious")),
                Admission::Drop
            );
        }
        let mut newest = sources[997..].to_vec();
        newest.sort();
        assert_eq!(banned(&sec, NOW), newest);
        assert_eq!(sec.stats().evicted, 997);
        assert_eq!(sec.stats().max_bans, 3);
        // A ban that ends sooner goes before a newer one that ends later.
        assert!(sec.unban(sources[999]));
        sec.admit(at(NOW + 5), ip("192.0.2.1"), Some("sipvicious"));
        sec.admit(at(NOW + 6), ip("192.0.2.2"), Some("sipvicious"));
        assert_eq!(
            banned(&sec, NOW + 6),
            vec![ip("10.0.3.231"), ip("192.0.2.1"), ip("192.0.2.2")]
        );
        // A source banned again once its ban ended (before a purge) keeps one entry.
        sec.admit(at(NOW + 605), ip("192.0.2.1"), Some("sipvicious"));
        assert_eq!(
            banned(&sec, NOW + 605),
            vec![ip("192.0.2.1"), ip("192.0.2.2")]
        );
        assert_eq!(sec.bans(at(NOW + 605))[0].1.until_unix, NOW + 1205);
        let table = read(&sec.bans);
        assert_eq!((table.by_ip.len(), table.by_end.len()), (3, 3));
        assert_eq!(table.evicted, 998);
    }

    #[test]
    fn a_ban_is_stored_by_the_writer_not_on_the_packet_path() {
        let tmp = TempDir::new().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        // A window longer than the test: only stopping makes the writer write.
        let sec = Security::with_batch_window(
            at(NOW),
            &limits(),
            store.clone(),
            Duration::from_secs(3600),
        )
        .unwrap();
        assert_eq!(
            sec.admit(at(NOW), ip("192.0.2.9"), Some("sipcli")),
            Admission::Drop
        );
        assert!(store.bans().unwrap().is_empty());
        drop(sec);
        let stored = store.bans().unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].0, ip("192.0.2.9"));
    }

    #[test]
    fn the_writer_follows_bans_unbans_and_purges() {
        let tmp = TempDir::new().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let sec = Security::with_batch_window(
            at(NOW),
            &limits(),
            store.clone(),
            Duration::from_millis(10),
        )
        .unwrap();
        let stored = || -> Vec<IpAddr> {
            store
                .bans()
                .unwrap()
                .into_iter()
                .map(|(ip, _)| ip)
                .collect()
        };
        let wait_for = |want: Vec<IpAddr>| {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while stored() != want && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            assert_eq!(stored(), want);
        };
        sec.admit(at(NOW), ip("192.0.2.1"), Some("sipvicious"));
        sec.admit(at(NOW + 100), ip("192.0.2.2"), Some("sipvicious"));
        wait_for(vec![ip("192.0.2.1"), ip("192.0.2.2")]);
        assert!(sec.unban(ip("192.0.2.2")));
        wait_for(vec![ip("192.0.2.1")]);
        sec.admit(at(NOW + 100), ip("192.0.2.2"), Some("sipvicious"));
        assert_eq!(sec.purge(at(NOW + 650)), 1);
        wait_for(vec![ip("192.0.2.2")]);
        assert_eq!(banned(&sec, NOW + 650), vec![ip("192.0.2.2")]);
    }

    #[test]
    fn bans_survive_a_restart_and_can_be_lifted() {
        let tmp = TempDir::new().unwrap();
        let src = ip("192.0.2.9");
        {
            let sec = security(&tmp, &limits());
            assert_eq!(sec.admit(at(NOW), src, Some("sipcli/v1")), Admission::Drop);
        }
        let sec = security(&tmp, &limits());
        assert_eq!(sec.admit(at(NOW + 1), src, None), Admission::Drop);
        assert!(sec.unban(src));
        assert!(!sec.unban(src));
        assert_eq!(sec.admit(at(NOW + 1), src, None), Admission::Allow);
        assert!(sec.bans(at(NOW + 1)).is_empty());
        drop(sec);
        let sec = security(&tmp, &limits());
        assert_eq!(sec.admit(at(NOW + 1), src, None), Admission::Allow);
    }

    #[test]
    fn a_restart_loads_the_newest_bans_that_fit() {
        let tmp = TempDir::new().unwrap();
        {
            let store = Store::open(tmp.path()).unwrap();
            let ban = |until_unix| Ban {
                until_unix,
                reason: "sipvicious".into(),
                banned_at_unix: NOW - 10,
            };
            store
                .update_bans(
                    &[
                        (ip("192.0.2.1"), ban(NOW + 30)),
                        (ip("192.0.2.2"), ban(NOW - 1)),
                        (ip("192.0.2.3"), ban(NOW + 20)),
                        (ip("192.0.2.4"), ban(NOW + 10)),
                    ],
                    &[],
                )
                .unwrap();
        }
        let small = SecurityConfig {
            max_bans: 2,
            ..limits()
        };
        let sec = security(&tmp, &small);
        assert_eq!(banned(&sec, NOW), vec![ip("192.0.2.1"), ip("192.0.2.3")]);
        assert_eq!(sec.stats().evicted, 0);
        drop(sec);
        // The expired ban and the one that did not fit are gone from the store too.
        let store = Store::open(tmp.path()).unwrap();
        let stored: Vec<IpAddr> = store.bans().unwrap().into_iter().map(|(i, _)| i).collect();
        assert_eq!(stored, vec![ip("192.0.2.1"), ip("192.0.2.3")]);
    }

    #[test]
    fn unban_forgets_earlier_failures() {
        let tmp = TempDir::new().unwrap();
        let sec = security(&tmp, &limits());
        let src = ip("192.0.2.1");
        for _ in 0..4 {
            sec.record_auth_failure(at(NOW), src, false);
        }
        assert!(sec.unban(src));
        assert!(!sec.record_auth_failure(at(NOW), src, false));
    }

    #[test]
    fn case_insensitive_search() {
        assert!(contains_ignore_ascii_case("xxSipViciousyy", "sipvicious"));
        assert!(!contains_ignore_ascii_case("sipviciou", "sipvicious"));
        assert!(contains_ignore_ascii_case("", ""));
    }
}
