//! Symmetric RTP latching: which source address a leg's media is accepted from, and
//! where media for that leg is sent.
//!
//! A phone behind NAT writes its private address in SDP, but its packets arrive from
//! the NAT's public address; sending back to where they come from (symmetric RTP,
//! RFC 4961) is what gets it audio. Latching to any source is also how media gets
//! hijacked (an attacker spraying packets at relay ports), so it is limited:
//! - latching is possible only in a window after the relay starts and after each
//!   [`Latch::set_sdp`] (a new offer or answer from that leg);
//! - in a window, the first source latches; a later one is refused, except the
//!   address the SDP named, which always wins (it is the address the phone claimed);
//! - outside a window only the latched (or SDP) address is accepted.
//!
//! Time comes in as an argument so the rules are tested with virtual time.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct Latch {
    sdp: Option<SocketAddr>,
    /// Where media for this leg goes, and the only source accepted outside a window.
    current: Option<SocketAddr>,
    /// A source has been accepted in the current window.
    confirmed: bool,
    window_end: Instant,
    window: Duration,
}

impl Latch {
    /// A latch with no address yet, open for `window` from `now`.
    pub fn new(now: Instant, window: Duration) -> Latch {
        Latch {
            sdp: None,
            current: None,
            confirmed: false,
            window_end: now + window,
            window,
        }
    }

    /// Takes the address from a new SDP of this leg (`None` when it gave none, or put
    /// the stream on hold with 0.0.0.0) and reopens the window. A changed address is
    /// used at once; an unchanged one keeps the latched address until the phone's
    /// next packet confirms or replaces it.
    pub fn set_sdp(&mut self, addr: Option<SocketAddr>, now: Instant) {
        if addr != self.sdp {
            self.sdp = addr;
            self.current = addr;
        }
        self.confirmed = false;
        self.window_end = now + self.window;
    }

    /// Whether a packet from `source` is accepted, latching to it if the rules allow.
    pub fn accept(&mut self, source: SocketAddr, now: Instant) -> bool {
        let open = now < self.window_end;
        if Some(source) == self.current {
            self.confirmed |= open;
            return true;
        }
        if !open || (self.confirmed && Some(source) != self.sdp) {
            return false;
        }
        self.current = Some(source);
        self.confirmed = true;
        true
    }

    /// Where to send media for this leg.
    pub fn destination(&self) -> Option<SocketAddr> {
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(5);

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn latch_with_sdp(t0: Instant) -> Latch {
        let mut l = Latch::new(t0, WINDOW);
        l.set_sdp(Some(addr("192.168.1.10:4000")), t0);
        l
    }

    #[test]
    fn latches_to_the_nat_address_and_refuses_others() {
        let t0 = Instant::now();
        let mut l = latch_with_sdp(t0);
        assert_eq!(l.destination(), Some(addr("192.168.1.10:4000")));
        let nat = addr("203.0.113.5:61000");
        assert!(l.accept(nat, t0 + Duration::from_millis(100)));
        assert_eq!(l.destination(), Some(nat));
        // Another source in the window doesn't take over...
        assert!(!l.accept(addr("198.51.100.66:5000"), t0 + Duration::from_millis(200)));
        assert_eq!(l.destination(), Some(nat));
        // ...nor after it; the latched source goes on being accepted.
        assert!(!l.accept(addr("198.51.100.66:5000"), t0 + WINDOW * 2));
        assert!(l.accept(nat, t0 + WINDOW * 2));
    }

    #[test]
    fn the_sdp_address_wins_within_the_window() {
        let t0 = Instant::now();
        let mut l = latch_with_sdp(t0);
        assert!(l.accept(addr("198.51.100.66:5000"), t0));
        assert!(l.accept(addr("192.168.1.10:4000"), t0 + Duration::from_secs(1)));
        assert_eq!(l.destination(), Some(addr("192.168.1.10:4000")));
        assert!(!l.accept(addr("198.51.100.66:5000"), t0 + Duration::from_secs(2)));
    }

    #[test]
    fn nothing_latches_after_the_window() {
        let t0 = Instant::now();
        let mut l = latch_with_sdp(t0);
        assert!(!l.accept(addr("203.0.113.5:61000"), t0 + WINDOW));
        assert_eq!(l.destination(), Some(addr("192.168.1.10:4000")));
        assert!(l.accept(addr("192.168.1.10:4000"), t0 + WINDOW));
    }

    #[test]
    fn a_new_sdp_reopens_the_window() {
        let t0 = Instant::now();
        let mut l = latch_with_sdp(t0);
        let nat = addr("203.0.113.5:61000");
        assert!(l.accept(nat, t0));
        // Same address re-offered (e.g. resume): the latched address stays in use and
        // the NAT may have rebound the phone to a new port.
        let t1 = t0 + Duration::from_secs(60);
        l.set_sdp(Some(addr("192.168.1.10:4000")), t1);
        assert_eq!(l.destination(), Some(nat));
        let rebound = addr("203.0.113.5:62000");
        assert!(l.accept(rebound, t1 + Duration::from_secs(1)));
        assert_eq!(l.destination(), Some(rebound));
        // A new address (another phone) is used at once.
        let t2 = t1 + Duration::from_secs(60);
        l.set_sdp(Some(addr("192.168.1.11:4002")), t2);
        assert_eq!(l.destination(), Some(addr("192.168.1.11:4002")));
        assert!(!l.accept(rebound, t2 + WINDOW));
    }

    #[test]
    fn the_phone_confirming_its_address_closes_the_latch_to_others() {
        let t0 = Instant::now();
        let mut l = latch_with_sdp(t0);
        assert!(l.accept(addr("192.168.1.10:4000"), t0));
        assert!(!l.accept(addr("198.51.100.66:5000"), t0 + Duration::from_millis(10)));
    }

    #[test]
    fn hold_with_no_address_sends_nowhere_until_a_packet_latches() {
        let t0 = Instant::now();
        let mut l = latch_with_sdp(t0);
        l.set_sdp(None, t0);
        assert_eq!(l.destination(), None);
        let start = Latch::new(t0, WINDOW);
        assert_eq!(start.destination(), None);
        assert!(l.accept(addr("203.0.113.5:61000"), t0));
        assert_eq!(l.destination(), Some(addr("203.0.113.5:61000")));
    }
}
