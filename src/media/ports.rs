//! RTP/RTCP port pairs from the `[media] rtp_ports` range.
//!
//! A pair is reserved by binding both sockets, so a port some other program holds is
//! skipped rather than handed out. Slots are claimed round-robin from a shared cursor:
//! allocation is O(1) while the range is not nearly full, and a freed pair is the
//! last to be reused, so late packets of an ended call don't land in a new one.

use socket2::{Domain, Protocol, Socket, Type};
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

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
    first_port: u16,
    /// One flag per pair: reserved by a live [`RtpPortPair`].
    taken: Box<[AtomicBool]>,
    cursor: AtomicUsize,
    in_use: AtomicUsize,
}

/// An RTP socket on an even port and its RTCP socket on the next, bound and
/// non-blocking. Dropping it closes both and returns the pair to the allocator.
pub struct RtpPortPair {
    pub(super) rtp: UdpSocket,
    pub(super) rtcp: UdpSocket,
    /// Declared last: fields drop in order, so the sockets are closed before the pair
    /// can be handed out again.
    pub(super) reservation: Reservation,
}

/// A pair's claim on its slot in the allocator.
pub(super) struct Reservation {
    pool: Arc<Pool>,
    slot: usize,
}

impl PortAllocator {
    /// `bind_ip` is the local address media sockets bind to; `::` binds dual-stack.
    pub fn new(bind_ip: IpAddr, range: PortRange) -> PortAllocator {
        let pairs = range.pairs();
        PortAllocator {
            pool: Arc::new(Pool {
                bind_ip,
                // pairs() > 0 implies first_even() + 1 <= last <= u16::MAX.
                first_port: u16::try_from(range.first_even()).unwrap_or(u16::MAX),
                taken: (0..pairs).map(|_| AtomicBool::new(false)).collect(),
                cursor: AtomicUsize::new(0),
                in_use: AtomicUsize::new(0),
            }),
        }
    }

    /// Reserves the next free pair, skipping ports another socket holds.
    pub fn allocate(&self) -> io::Result<RtpPortPair> {
        let pool = &self.pool;
        let slots = pool.taken.len();
        for _ in 0..slots {
            let slot = pool.cursor.fetch_add(1, Ordering::Relaxed) % slots;
            if pool.taken[slot]
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            // slot < pairs, so the port fits in the range (see `new`).
            let rtp_port = pool.first_port + (slot as u16) * 2;
            match bind_pair(pool.bind_ip, rtp_port) {
                Ok((rtp, rtcp)) => {
                    pool.in_use.fetch_add(1, Ordering::Relaxed);
                    let reservation = Reservation {
                        pool: Arc::clone(pool),
                        slot,
                    };
                    return Ok(RtpPortPair {
                        rtp,
                        rtcp,
                        reservation,
                    });
                }
                Err(e) => {
                    pool.taken[slot].store(false, Ordering::Release);
                    if e.kind() != io::ErrorKind::AddrInUse {
                        return Err(e);
                    }
                }
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "no free RTP port pair",
        ))
    }

    /// Pairs currently reserved; equal before and after a run when nothing leaks.
    pub fn in_use(&self) -> usize {
        self.pool.in_use.load(Ordering::Relaxed)
    }

    pub fn capacity(&self) -> usize {
        self.pool.taken.len()
    }
}

impl RtpPortPair {
    pub fn rtp_port(&self) -> u16 {
        self.reservation.rtp_port()
    }

    pub fn rtcp_port(&self) -> u16 {
        self.rtp_port() + 1
    }
}

impl Reservation {
    pub(super) fn rtp_port(&self) -> u16 {
        self.pool.first_port + (self.slot as u16) * 2
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.pool.taken[self.slot].store(false, Ordering::Release);
        self.pool.in_use.fetch_sub(1, Ordering::Relaxed);
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
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

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

    #[test]
    fn pairs_are_even_odd_and_distinct() {
        let ports = PortAllocator::new(LOOPBACK, "31000-31019".parse().unwrap());
        let pairs: Vec<RtpPortPair> = (0..4).map(|_| ports.allocate().unwrap()).collect();
        let mut seen = Vec::new();
        for p in &pairs {
            assert_eq!(p.rtp_port() % 2, 0);
            assert_eq!(p.rtcp_port(), p.rtp_port() + 1);
            assert_eq!(p.rtp.local_addr().unwrap().port(), p.rtp_port());
            assert_eq!(p.rtcp.local_addr().unwrap().port(), p.rtcp_port());
            assert!((31000..=31019).contains(&p.rtcp_port()));
            assert!(!seen.contains(&p.rtp_port()));
            seen.push(p.rtp_port());
        }
        assert_eq!(ports.in_use(), 4);
        drop(pairs);
        assert_eq!(ports.in_use(), 0);
    }

    #[test]
    fn skips_ports_held_by_someone_else_and_reports_exhaustion() {
        // Another program holds the RTCP port of the first pair.
        let squatter = UdpSocket::bind((LOOPBACK, 31101)).unwrap();
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

    #[test]
    fn a_thousand_cycles_leave_nothing_reserved() {
        let ports = PortAllocator::new(LOOPBACK, "31200-31219".parse().unwrap());
        for _ in 0..1000 {
            let a = ports.allocate().unwrap();
            let b = ports.allocate().unwrap();
            assert_eq!(ports.in_use(), 2);
            drop((a, b));
        }
        assert_eq!(ports.in_use(), 0);
        // Every port is really free again.
        let all: Vec<RtpPortPair> = (0..ports.capacity())
            .map(|_| ports.allocate().unwrap())
            .collect();
        assert_eq!(all.len(), 10);
    }

    #[test]
    fn threads_never_share_a_pair() {
        let ports = PortAllocator::new(LOOPBACK, "31300-31399".parse().unwrap());
        let held: Vec<RtpPortPair> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
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
}
