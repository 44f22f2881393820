//! RTP/RTCP port pairs from the `[media] rtp_ports` range.
//!
//! A pair is reserved by binding both sockets, so a port some other program holds is
//! skipped rather than handed out. Slots are claimed round-robin from a shared cursor:
//! allocation is O(1) while the range is not nearly full, and a freed pair is not
//! reused soon, so late packets of an ended call don't land in a new one.
//!
//! Creating, binding, registering and closing four sockets costs more per call than
//! the rest of its media setup, so a freed pair is kept bound (and registered with the
//! runtime) in an idle queue and handed out again instead of a new one, oldest first,
//! once [`IDLE_KEPT`] newer pairs have been freed after it and [`QUARANTINE`] has
//! passed; whatever reached it meanwhile is discarded before reuse.

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

/// Freed pairs held back before the oldest is reused: a pair goes to a new call only
/// after this many others were freed after it.
const IDLE_KEPT: usize = 128;
/// Freed pairs kept bound at most (twice as many file descriptors); more are closed.
const IDLE_MAX: usize = 256;
/// The least time a freed pair rests before reuse, so packets still on their way
/// from an ended call's phones arrive while nobody listens.
const QUARANTINE: Duration = Duration::from_millis(100);
/// Datagrams discarded at most from each socket of a reused pair; a socket still
/// receiving after that is being flooded, and the relay's latch deals with it.
const DRAIN_MAX: usize = 64;

/// An inclusive port range such as `20000-29999`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    /// The RTP port of the first pair: RTP takes the even port (RFC 3550 §11).
    fn first_even(&self) -> u32 {
        u32::from(self.first).next_multiple_of(2)
    }

    /// How many even/odd pairs fit in the range.
    pub fn pairs(&self) -> usize {
        ((u32::from(self.last) + 1).saturating_sub(self.first_even()) / 2) as usize
    }
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<PortRange, String> {
        let bad = || format!("port range {s:?} is not <first>-<last>");
        let (first, last) = s.split_once('-').ok_or_else(bad)?;
        let first: u16 = first.trim().parse().map_err(|_| bad())?;
        let last: u16 = last.trim().parse().map_err(|_| bad())?;
        let range = PortRange { first, last };
        if first == 0 || range.pairs() == 0 {
            return Err(format!("port range {s:?} holds no even/odd port pair"));
        }
        Ok(range)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// Hands out [`RtpPortPair`]s; cheap to clone, shared by every call.
#[derive(Clone)]
pub struct PortAllocator {
    pool: Arc<Pool>,
}

struct Pool {
    bind_ip: IpAddr,
    slots: Arc<Slots>,
    cursor: AtomicUsize,
    in_use: AtomicUsize,
    /// Freed pairs still bound, oldest first, with when they were freed.
    idle: Mutex<VecDeque<(Instant, Arc<Bound>)>>,
}

/// The range's pairs; apart from the pool so an idle pair doesn't keep the pool alive.
struct Slots {
    first_port: u16,
    /// One flag per pair: its ports are bound by us (in use or idle).
    taken: Box<[AtomicBool]>,
}

/// A pair's two bound sockets. Dropping it closes them and then frees the slot.
pub(super) struct Bound {
    pub(super) rtp: UdpSocket,
    pub(super) rtcp: UdpSocket,
    /// Declared last: fields drop in order, so the sockets are closed before the pair
    /// can be bound again.
    slot: Slot,
}

/// A pair's claim on its slot in the allocator.
struct Slot {
    slots: Arc<Slots>,
    index: usize,
}

/// An RTP socket on an even port and its RTCP socket on the next, bound, non-blocking
/// and registered with the tokio runtime. Dropping it returns the pair to the allocator.
pub struct RtpPortPair {
    /// Shared only with the idle queue, between this pair's drop and its reuse.
    bound: Arc<Bound>,
    pool: Arc<Pool>,
}

impl PortAllocator {
    /// `bind_ip` is the local address media sockets bind to; `::` binds dual-stack.
    pub fn new(bind_ip: IpAddr, range: PortRange) -> PortAllocator {
        let pairs = range.pairs();
        PortAllocator {
            pool: Arc::new(Pool {
                bind_ip,
                slots: Arc::new(Slots {
                    // pairs() > 0 implies first_even() + 1 <= last <= u16::MAX.
                    first_port: u16::try_from(range.first_even()).unwrap_or(u16::MAX),
                    taken: (0..pairs).map(|_| AtomicBool::new(false)).collect(),
                }),
                cursor: AtomicUsize::new(0),
                in_use: AtomicUsize::new(0),
                idle: Mutex::new(VecDeque::new()),
            }),
        }
    }

    /// Reserves a pair: a rested idle one, else the next free one, skipping ports
    /// another socket holds, else any idle one. Must run inside a tokio runtime.
    pub fn allocate(&self) -> io::Result<RtpPortPair> {
        self.allocate_at(Instant::now())
    }

    fn allocate_at(&self, now: Instant) -> io::Result<RtpPortPair> {
        let pool = &self.pool;
        if let Some(bound) = pool.take_idle(|idle| {
            idle.len() > IDLE_KEPT
                && idle
                    .front()
                    .is_some_and(|(freed, _)| now.saturating_duration_since(*freed) >= QUARANTINE)
        }) {
            return Ok(pool.hand_out(bound));
        }
        match pool.bind_next() {
            Ok(bound) => Ok(pool.hand_out(bound)),
            // The range is exhausted, or we ran out of file descriptors: idle pairs are
            // better reused early than a call refused.
            Err(e) => match pool.take_idle(|idle| !idle.is_empty()) {
                Some(bound) => Ok(pool.hand_out(bound)),
                None => Err(e),
            },
        }
    }

    /// Pairs currently reserved; equal before and after a run when nothing leaks.
    pub fn in_use(&self) -> usize {
        self.pool.in_use.load(Ordering::Relaxed)
    }

    pub fn capacity(&self) -> usize {
        self.pool.slots.taken.len()
    }
}

impl Pool {
    fn idle(&self) -> MutexGuard<'_, VecDeque<(Instant, Arc<Bound>)>> {
        // The queue stays consistent whatever a panicking holder did.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The oldest idle pair if `ready` says the queue may give one up, emptied of
    /// what arrived while it was idle.
    fn take_idle(
        &self,
        ready: impl FnOnce(&VecDeque<(Instant, Arc<Bound>)>) -> bool,
    ) -> Option<Arc<Bound>> {
        let bound = {
            let mut idle = self.idle();
            if !ready(&idle) {
                return None;
            }
            idle.pop_front()?.1
        };
        drain(&bound.rtp);
        drain(&bound.rtcp);
        Some(bound)
    }

    /// Binds the next free slot's ports.
    fn bind_next(&self) -> io::Result<Arc<Bound>> {
        let slots = self.slots.taken.len();
        for _ in 0..slots {
            let index = self.cursor.fetch_add(1, Ordering::Relaxed) % slots;
            if self.slots.taken[index]
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            let slot = Slot {
                slots: Arc::clone(&self.slots),
                index,
            };
            match bind_pair(self.bind_ip, slot.rtp_port()) {
                Ok((rtp, rtcp)) => return Ok(Arc::new(Bound { rtp, rtcp, slot })),
                // Dropping the slot frees it again.
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "no free RTP port pair",
        ))
    }

    fn hand_out(self: &Arc<Self>, bound: Arc<Bound>) -> RtpPortPair {
        self.in_use.fetch_add(1, Ordering::Relaxed);
        RtpPortPair {
            bound,
            pool: Arc::clone(self),
        }
    }
}

impl RtpPortPair {
    pub fn rtp_port(&self) -> u16 {
        self.bound.slot.rtp_port()
    }

    pub fn rtcp_port(&self) -> u16 {
        self.rtp_port() + 1
    }

    pub(super) fn sockets(&self) -> &Bound {
        &self.bound
    }
}

impl Drop for RtpPortPair {
    fn drop(&mut self) {
        let pool = &self.pool;
        pool.in_use.fetch_sub(1, Ordering::Relaxed);
        let mut idle = pool.idle();
        if idle.len() < IDLE_MAX {
            idle.push_back((Instant::now(), Arc::clone(&self.bound)));
        }
        // Otherwise the sockets close when `bound` drops, after this.
    }
}

impl Slot {
    fn rtp_port(&self) -> u16 {
        // index < pairs, so the port fits in the range (see `PortAllocator::new`).
        self.slots.first_port + (self.index as u16) * 2
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.taken[self.index].store(false, Ordering::Release);
    }
}

/// Discards the datagrams waiting on a socket. Reads the socket directly: the runtime
/// may not have seen yet that something arrived.
fn drain(socket: &UdpSocket) {
    let mut buf = [0u8; 64];
    let sock = SockRef::from(socket);
    for _ in 0..DRAIN_MAX {
        match (&*sock).read(&mut buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            // A datagram (truncated to the buffer), or an error reported for an earlier send.
            _ => {}
        }
    }
}

fn bind_pair(ip: IpAddr, rtp_port: u16) -> io::Result<(UdpSocket, UdpSocket)> {
    let rtp = bind(SocketAddr::new(ip, rtp_port))?;
    let rtcp = bind(SocketAddr::new(ip, rtp_port + 1))?;
    Ok((rtp, rtcp))
}

/// Binds without SO_REUSEADDR, so a port in use fails with AddrInUse.
fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.ip() == IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED) {
        socket.set_only_v6(false)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::net::UdpSocket as StdUdpSocket;

    const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    #[test]
    fn parses_ranges() {
        assert_eq!(
            "20000-29999".parse(),
            Ok(PortRange {
                first: 20000,
                last: 29999
            })
        );
        assert_eq!("20000-29999".parse::<PortRange>().unwrap().pairs(), 5000);
        assert_eq!(
            "20001-20004".parse::<PortRange>().unwrap().pairs(),
            1,
            "only 20002/20003"
        );
        assert_eq!("20000-20001".parse::<PortRange>().unwrap().pairs(), 1);
        assert_eq!("65534-65535".parse::<PortRange>().unwrap().pairs(), 1);
        for bad in [
            "",
            "20000",
            "20000-",
            "a-b",
            "20001-20002",
            "30000-20000",
            "0-10",
            "1-70000",
        ] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn pairs_are_even_odd_and_distinct() {
        let ports = PortAllocator::new(LOOPBACK, "31000-31019".parse().unwrap());
        let pairs: Vec<RtpPortPair> = (0..4).map(|_| ports.allocate().unwrap()).collect();
        let mut seen = Vec::new();
        for p in &pairs {
            assert_eq!(p.rtp_port() % 2, 0);
            assert_eq!(p.rtcp_port(), p.rtp_port() + 1);
            assert_eq!(p.sockets().rtp.local_addr().unwrap().port(), p.rtp_port());
            assert_eq!(p.sockets().rtcp.local_addr().unwrap().port(), p.rtcp_port());
            assert!((31000..=31019).contains(&p.rtcp_port()));
            assert!(!seen.contains(&p.rtp_port()));
            seen.push(p.rtp_port());
        }
        assert_eq!(ports.in_use(), 4);
        drop(pairs);
        assert_eq!(ports.in_use(), 0);
    }

    #[tokio::test]
    async fn skips_ports_held_by_someone_else_and_reports_exhaustion() {
        // Another program holds the RTCP port of the first pair.
        let squatter = StdUdpSocket::bind((LOOPBACK, 31101)).unwrap();
        let ports = PortAllocator::new(LOOPBACK, "31100-31103".parse().unwrap());
        let pair = ports.allocate().unwrap();
        assert_eq!(pair.rtp_port(), 31102);
        let err = ports.allocate().err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert_eq!(ports.in_use(), 1);
        drop(squatter);
        drop(pair);
        assert_eq!(ports.in_use(), 0);
        let pairs = [ports.allocate().unwrap(), ports.allocate().unwrap()];
        assert_eq!(ports.in_use(), 2);
        assert_ne!(pairs[0].rtp_port(), pairs[1].rtp_port());
    }

    #[tokio::test]
    async fn a_thousand_cycles_leave_nothing_reserved() {
        let ports = PortAllocator::new(LOOPBACK, "31200-31219".parse().unwrap());
        for _ in 0..1000 {
            let a = ports.allocate().unwrap();
            let b = ports.allocate().unwrap();
            assert_eq!(ports.in_use(), 2);
            drop((a, b));
        }
        assert_eq!(ports.in_use(), 0);
        // Every pair can be had again.
        let all: Vec<RtpPortPair> = (0..ports.capacity())
            .map(|_| ports.allocate().unwrap())
            .collect();
        assert_eq!(all.len(), 10);
    }

    #[tokio::test]
    async fn threads_never_share_a_pair() {
        let ports = PortAllocator::new(LOOPBACK, "31300-31399".parse().unwrap());
        let runtime = tokio::runtime::Handle::current();
        let held: Vec<RtpPortPair> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        let _runtime = runtime.enter();
                        (0..10)
                            .map(|_| ports.allocate().unwrap())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect()
        });
        assert_eq!(ports.in_use(), 40);
        let mut all: Vec<u16> = held.iter().map(RtpPortPair::rtp_port).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 40);
        drop(held);
        assert_eq!(ports.in_use(), 0);
    }

    #[tokio::test]
    async fn freed_pairs_rest_before_reuse_and_come_back_empty() {
        let ports = PortAllocator::new(LOOPBACK, "33000-33599".parse().unwrap());
        let first = ports.allocate().unwrap();
        let first_port = first.rtp_port();
        // A late packet of the ended call is waiting when the pair is freed.
        let phone = StdUdpSocket::bind((LOOPBACK, 0)).unwrap();
        phone.send_to(b"late", (LOOPBACK, first_port)).unwrap();
        drop(first);
        let now = Instant::now();
        let mut later = Vec::new();
        for _ in 0..IDLE_KEPT {
            let pair = ports.allocate_at(now).unwrap();
            assert_ne!(pair.rtp_port(), first_port);
            later.push(pair);
        }
        drop(later);
        // Enough pairs were freed after it, but it has not rested long enough.
        let pair = ports.allocate_at(now).unwrap();
        assert_ne!(pair.rtp_port(), first_port);
        let reused = ports.allocate_at(now + QUARANTINE).unwrap();
        assert_eq!(reused.rtp_port(), first_port);
        // Asked of the socket itself: the runtime's view of it may lag.
        let mut buf = [0u8; 16];
        let stale = (&*SockRef::from(&reused.sockets().rtp)).read(&mut buf);
        assert_eq!(stale.map_err(|e| e.kind()), Err(io::ErrorKind::WouldBlock));
        assert_eq!(ports.in_use(), 2);
    }
}
