//! The RFC 3261 §17 timers (Table 4) and RFC 6026's L and M, derived from T1, T2, T4.

use std::time::Duration;

/// The base intervals every transaction timer is derived from (RFC 3261 §17.1.1.1,
/// §17.1.2.2). Raise T1 on links with a round trip above 500 ms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerConfig {
    /// Round-trip estimate: the first retransmission interval.
    pub t1: Duration,
    /// The cap on retransmission intervals for non-INVITE requests and INVITE responses.
    pub t2: Duration,
    /// How long a message may linger in the network.
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

/// The transaction timers, named as in RFC 3261 Table 4 and RFC 6026.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Timer {
    /// INVITE client: request retransmission (unreliable only), doubling each time.
    A,
    /// INVITE client: no response in "Calling"; or no final response 64*T1 after
    /// the TU sent a CANCEL (RFC 3261 §9.1).
    B,
    /// INVITE client: absorbs final-response retransmissions in "Completed".
    D,
    /// Non-INVITE client: request retransmission (unreliable only), capped at T2.
    E,
    /// Non-INVITE client: no final response.
    F,
    /// INVITE server: final-response retransmission (unreliable only), capped at T2.
    G,
    /// INVITE server: no ACK for a non-2xx final response.
    H,
    /// INVITE server: absorbs ACK retransmissions in "Confirmed".
    I,
    /// Non-INVITE server: absorbs request retransmissions in "Completed".
    J,
    /// Non-INVITE client: absorbs response retransmissions in "Completed".
    K,
    /// INVITE server (RFC 6026): absorbs INVITE retransmissions after a 2xx.
    L,
    /// INVITE client (RFC 6026): passes 2xx retransmissions and forks to the TU.
    M,
}

impl Timer {
    /// Whether this timer firing means the transaction failed (the TU is told).
    pub fn is_timeout(self) -> bool {
        matches!(self, Timer::B | Timer::F | Timer::H)
    }
}

impl TimerConfig {
    /// The initial value of `timer`. Over reliable transports the timers that only wait
    /// for network stragglers (D, I, J, K) are zero; the retransmission timers (A, E, G)
    /// are never started there, which the transactions decide.
    pub fn duration(&self, timer: Timer, reliable: bool) -> Duration {
        let wait = |d: Duration| if reliable { Duration::ZERO } else { d };
        match timer {
            Timer::A | Timer::E | Timer::G => self.t1,
            Timer::B | Timer::F | Timer::H | Timer::L | Timer::M => self.t1 * 64,
            // "At least 32 seconds" (§17.1.1.2), and long enough to see every
            // retransmission a server with the same T1 sends before its Timer H.
            Timer::D => wait((self.t1 * 64).max(Duration::from_secs(32))),
            Timer::I | Timer::K => wait(self.t4),
            Timer::J => wait(self.t1 * 64),
        }
    }

    /// The next retransmission interval after `current`: Timer A doubles without
    /// bound (Timer B ends it), E and G double up to T2.
    pub fn backoff(&self, timer: Timer, current: Duration) -> Duration {
        match timer {
            Timer::A => current * 2,
            _ => (current * 2).min(self.t2),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_defaults_and_reliable_zeroes() {
        let c = TimerConfig::default();
        assert_eq!(c.duration(Timer::B, false), Duration::from_secs(32));
        assert_eq!(c.duration(Timer::D, false), Duration::from_secs(32));
        assert_eq!(c.duration(Timer::I, false), Duration::from_secs(5));
        assert_eq!(c.duration(Timer::J, false), Duration::from_secs(32));
        for t in [Timer::D, Timer::I, Timer::J, Timer::K] {
            assert_eq!(c.duration(t, true), Duration::ZERO, "{t:?}");
        }
        assert_eq!(c.duration(Timer::H, true), Duration::from_secs(32));
        assert_eq!(
            c.backoff(Timer::E, Duration::from_secs(2)),
            Duration::from_secs(4)
        );
        assert_eq!(
            c.backoff(Timer::G, Duration::from_secs(4)),
            Duration::from_secs(4)
        );
        assert_eq!(
            c.backoff(Timer::A, Duration::from_secs(16)),
            Duration::from_secs(32)
        );
        let slow = TimerConfig {
            t1: Duration::from_secs(1),
            ..c
        };
        assert_eq!(slow.duration(Timer::D, false), Duration::from_secs(64));
    }
}
