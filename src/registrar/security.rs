//! Scanner and brute-force defence: per source IP, count real authentication failures
//! in a sliding window and requests per second; past the `[security]` limits, or on a
//! known scanner User-Agent, ban the address for `ban_secs`. The core asks [`Security::admit`]
//! before parsing further, and drops a banned source's packets without an answer.
//!
//! Bans live in memory for the per-packet check and in the store so they survive a
//! restart. Nothing is exempt, loopback included: the interop tests run the attacker on
//! 127.0.0.1 and a legitimate phone on 127.0.0.2.

use super::{lock, read, unix_secs, write};
use crate::config::SecurityConfig;
use crate::store::{Ban, Store, StoreError};
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Mutex, RwLock};
use std::time::SystemTime;

/// What the core does with a packet from a source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Allow,
    /// Drop it without an answer: the source is banned (or just got banned).
    Drop,
}

/// Shards of the per-source activity table, so shards of the SIP core checking
/// different sources rarely wait on one lock.
const SHARDS: usize = 16;
/// Sources remembered per shard. Spoofed UDP sources could otherwise grow the table
/// without bound; when full, idle sources go first, then the least recently seen.
const SOURCES_PER_SHARD: usize = 4096;

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

pub struct Security {
    limits: SecurityConfig,
    /// `limits.scanner_user_agents`, lowercased once for the per-packet check.
    scanner_agents: Vec<String>,
    store: Store,
    /// Keyed by canonical IP (an IPv4-mapped IPv6 address is its IPv4 address).
    bans: RwLock<HashMap<IpAddr, Ban>>,
    sources: Vec<Mutex<HashMap<IpAddr, Activity>>>,
    shard_hasher: std::collections::hash_map::RandomState,
}

impl Security {
    /// Loads the persisted bans (expired ones are dropped later by [`Security::purge`]).
    pub fn new(limits: &SecurityConfig, store: Store) -> Result<Security, StoreError> {
        let bans = store
            .bans()?
            .into_iter()
            .map(|(ip, ban)| (ip.to_canonical(), ban))
            .collect();
        Ok(Security {
            scanner_agents: limits
                .scanner_user_agents
                .iter()
                .map(|ua| ua.to_ascii_lowercase())
                .collect(),
            limits: limits.clone(),
            store,
            bans: RwLock::new(bans),
            sources: (0..SHARDS).map(|_| Mutex::default()).collect(),
            shard_hasher: Default::default(),
        })
    }

    /// Decides about one received message, before anything else is done with it, and
    /// counts it towards the source's request rate.
    pub fn admit(&self, now: SystemTime, ip: IpAddr, user_agent: Option<&str>) -> Admission {
        let now = unix_secs(now);
        let ip = ip.to_canonical();
        if self.is_banned(now, ip) {
            return Admission::Drop;
        }
        if self.limits.drop_scanner_user_agents
            && let Some(ua) = user_agent
            && let Some(scanner) = self
                .scanner_agents
                .iter()
                .find(|s| contains_ignore_ascii_case(ua, s))
        {
            self.ban(now, ip, format!("scanner User-Agent {scanner:?}"));
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
                self.ban(now, ip, format!("more than {limit} requests per second"));
                return Admission::Drop;
            }
        }
        Admission::Allow
    }

    /// Counts a failed digest response (a wrong password, an unknown user, a qop
    /// without nc/cnonce), never a first challenge. Returns true if this banned `ip`.
    pub fn record_auth_failure(&self, now: SystemTime, ip: IpAddr) -> bool {
        let now = unix_secs(now);
        let ip = ip.to_canonical();
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

    /// The bans in force at `now`, ordered by address.
    pub fn bans(&self, now: SystemTime) -> Vec<(IpAddr, Ban)> {
        let now = unix_secs(now);
        let mut out: Vec<_> = read(&self.bans)
            .iter()
            .filter(|(_, ban)| ban.until_unix > now)
            .map(|(ip, ban)| (*ip, ban.clone()))
            .collect();
        out.sort_by_key(|(ip, _)| *ip);
        out
    }

    /// Lifts the ban on `ip` and forgets its failures, so its next mistake does not
    /// ban it again at once. `false` if it was not banned.
    pub fn unban(&self, ip: IpAddr) -> Result<bool, StoreError> {
        let ip = ip.to_canonical();
        let in_memory = write(&self.bans).remove(&ip).is_some();
        let stored = self.store.remove_ban(ip)?;
        lock(self.shard(ip)).remove(&ip);
        tracing::info!(%ip, "ban lifted");
        Ok(in_memory || stored)
    }

    /// Forgets expired bans (in memory and in the store) and sources idle for longer
    /// than the failure window. The core calls this periodically.
    pub fn purge(&self, now: SystemTime) -> Result<(), StoreError> {
        let now = unix_secs(now);
        write(&self.bans).retain(|_, ban| ban.until_unix > now);
        for shard in &self.sources {
            lock(shard).retain(|_, a| !self.is_idle(a, now));
        }
        self.store.purge_expired_bans(now)?;
        Ok(())
    }

    fn is_banned(&self, now: u64, ip: IpAddr) -> bool {
        read(&self.bans)
            .get(&ip)
            .is_some_and(|ban| ban.until_unix > now)
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
        // The in-memory ban protects this run even if the store cannot keep it.
        if let Err(e) = self.store.put_ban(ip, &ban) {
            tracing::error!(%ip, error = %e, "ban not persisted");
        }
        write(&self.bans).insert(ip, ban);
        lock(self.shard(ip)).remove(&ip);
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
    use std::time::Duration;
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
        Security::new(limits, Store::open(tmp.path()).unwrap()).unwrap()
    }

    #[test]
    fn failures_past_the_limit_ban_only_that_source() {
        let tmp = TempDir::new().unwrap();
        let sec = security(&tmp, &limits());
        let attacker = ip("127.0.0.1");
        let phone = ip("127.0.0.2");
        for i in 0..3 {
            assert!(!sec.record_auth_failure(at(NOW + i), attacker));
            assert_eq!(sec.admit(at(NOW + i), attacker, None), Admission::Allow);
        }
        assert!(sec.record_auth_failure(at(NOW + 3), attacker));
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
            assert!(!sec.record_auth_failure(at(NOW + t), src), "{t}");
        }
        // 90, 121, 125 and 126: four inside one 60 s window.
        assert!(sec.record_auth_failure(at(NOW + 126), src));
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
    fn bans_survive_a_restart_and_can_be_lifted() {
        let tmp = TempDir::new().unwrap();
        let src = ip("192.0.2.9");
        {
            let sec = security(&tmp, &limits());
            assert_eq!(sec.admit(at(NOW), src, Some("sipcli/v1")), Admission::Drop);
        }
        let sec = security(&tmp, &limits());
        assert_eq!(sec.admit(at(NOW + 1), src, None), Admission::Drop);
        assert!(sec.unban(src).unwrap());
        assert!(!sec.unban(src).unwrap());
        assert_eq!(sec.admit(at(NOW + 1), src, None), Admission::Allow);
        assert!(sec.bans(at(NOW + 1)).is_empty());
        drop(sec);
        let sec = security(&tmp, &limits());
        assert_eq!(sec.admit(at(NOW + 1), src, None), Admission::Allow);
    }

    #[test]
    fn unban_forgets_earlier_failures() {
        let tmp = TempDir::new().unwrap();
        let sec = security(&tmp, &limits());
        let src = ip("192.0.2.1");
        for _ in 0..4 {
            sec.record_auth_failure(at(NOW), src);
        }
        assert!(sec.unban(src).unwrap());
        assert!(!sec.record_auth_failure(at(NOW), src));
    }

    #[test]
    fn purge_drops_expired_bans_from_the_store() {
        let tmp = TempDir::new().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let sec = Security::new(&limits(), store.clone()).unwrap();
        sec.admit(at(NOW), ip("192.0.2.1"), Some("sipvicious"));
        sec.admit(at(NOW + 100), ip("192.0.2.2"), Some("sipvicious"));
        sec.purge(at(NOW + 650)).unwrap();
        let stored: Vec<IpAddr> = store.bans().unwrap().into_iter().map(|(i, _)| i).collect();
        assert_eq!(stored, vec![ip("192.0.2.2")]);
        assert_eq!(sec.bans(at(NOW + 650)).len(), 1);
    }

    #[test]
    fn case_insensitive_search() {
        assert!(contains_ignore_ascii_case("xxSipViciousyy", "sipvicious"));
        assert!(!contains_ignore_ascii_case("sipviciou", "sipvicious"));
        assert!(contains_ignore_ascii_case("", ""));
    }
}
