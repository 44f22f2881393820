//! The reference relay: the least a relay must do, measured beside switchboard in the
//! same run. Per call, two UDP sockets; per socket, one task that receives a packet,
//! latches its source as that side's phone, and sends it on from the other socket to
//! the other side's latched phone. No parsing, no rewriting, no statistics. It runs on
//! the same runtime switchboard uses (tokio, one worker per core), so the CPU-per-packet
//! ratio is switchboard's relay path against a bare recv/send loop.
//!
//! Run as a child process (`rtp_load relay --ip IP`): it prints `ready`, reads
//! `open N`, prints `pairs A1-B1 A2-B2 ...` (socket addresses), and exits when its
//! stdin closes.

use std::io::{self, BufRead, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::net::UdpSocket;

pub fn serve(ip: Ipv4Addr) -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_io()
        .build()?;
    let stdin = io::stdin();
    let mut stdout = io::stdout();
    writeln!(stdout, "ready")?;
    stdout.flush()?;

    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    let n: usize = line
        .trim()
        .strip_prefix("open ")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| io::Error::other(format!("expected `open N`, got {line:?}")))?;
    let pairs = runtime.block_on(open_pairs(ip, n))?;
    let listing: Vec<String> = pairs.iter().map(|(a, b)| format!("{a}-{b}")).collect();
    writeln!(stdout, "pairs {}", listing.join(" "))?;
    stdout.flush()?;

    // Relays until the parent closes our stdin.
    line.clear();
    while stdin.lock().read_line(&mut line)? > 0 {
        line.clear();
    }
    runtime.shutdown_background();
    Ok(())
}

async fn open_pairs(ip: Ipv4Addr, n: usize) -> io::Result<Vec<(SocketAddr, SocketAddr)>> {
    let mut pairs = Vec::with_capacity(n);
    for _ in 0..n {
        let a = Arc::new(UdpSocket::bind((ip, 0)).await?);
        let b = Arc::new(UdpSocket::bind((ip, 0)).await?);
        pairs.push((a.local_addr()?, b.local_addr()?));
        let phones = Arc::new([NO_PHONE, NO_PHONE].map(AtomicU64::new));
        tokio::spawn(forward(a.clone(), b.clone(), phones.clone(), 0));
        tokio::spawn(forward(b, a, phones, 1));
    }
    Ok(pairs)
}

/// A latched IPv4 address and port packed into one atomic word; 0 means none yet.
const NO_PHONE: u64 = 0;

fn pack(addr: SocketAddr) -> u64 {
    match addr {
        SocketAddr::V4(v4) => (u64::from(v4.ip().to_bits()) << 16) | u64::from(v4.port()),
        SocketAddr::V6(_) => NO_PHONE,
    }
}

fn unpack(word: u64) -> Option<SocketAddr> {
    (word != NO_PHONE).then(|| {
        SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::from_bits((word >> 16) as u32),
            word as u16,
        ))
    })
}

/// Receives on `inbound` (side `side`'s phone sends there) and forwards out of
/// `outbound` to the other side's phone.
async fn forward(
    inbound: Arc<UdpSocket>,
    outbound: Arc<UdpSocket>,
    phones: Arc<[AtomicU64; 2]>,
    side: usize,
) {
    let mut buf = [0u8; 2048];
    loop {
        let Ok((n, from)) = inbound.recv_from(&mut buf).await else {
            continue;
        };
        phones[side].store(pack(from), Ordering::Relaxed);
        if let Some(to) = unpack(phones[1 - side].load(Ordering::Relaxed)) {
            let _ = outbound.send_to(&buf[..n], to).await;
        }
    }
}

/// The parent's handle on a running reference relay.
pub struct RelayProcess {
    child: std::process::Child,
    pub pairs: Vec<(SocketAddr, SocketAddr)>,
}

impl RelayProcess {
    /// Starts `exe relay --ip IP`, then calls `before_open(pid)` (to read its memory
    /// before any socket exists) and opens `n` call pairs.
    pub fn start(
        exe: &std::path::Path,
        ip: IpAddr,
        n: usize,
        before_open: impl FnOnce(u32),
    ) -> io::Result<RelayProcess> {
        use std::process::{Command, Stdio};
        let mut child = Command::new(exe)
            .args(["relay", "--ip", &ip.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let pid = child.id();
        let (Some(stdin), Some(stdout)) = (child.stdin.as_mut(), child.stdout.take()) else {
            return Err(io::Error::other("relay pipes missing"));
        };
        let mut lines = io::BufReader::new(stdout).lines();
        let mut next_line = || -> io::Result<String> {
            lines
                .next()
                .unwrap_or_else(|| Err(io::Error::other("relay exited")))
        };
        if next_line()? != "ready" {
            return Err(io::Error::other("relay did not say ready"));
        }
        before_open(pid);
        writeln!(stdin, "open {n}")?;
        stdin.flush()?;
        let listing = next_line()?;
        let pairs = listing
            .strip_prefix("pairs")
            .ok_or_else(|| io::Error::other(format!("relay said {listing:?}")))?
            .split_whitespace()
            .map(|pair| {
                let (a, b) = pair.split_once('-')?;
                Some((a.parse().ok()?, b.parse().ok()?))
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| io::Error::other("unreadable pair list from relay"))?;
        if pairs.len() != n {
            return Err(io::Error::other(format!(
                "relay opened {} of {n} pairs",
                pairs.len()
            )));
        }
        Ok(RelayProcess { child, pairs })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for RelayProcess {
    /// Closing its stdin ends the relay; waiting reaps it.
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latched_addresses_pack_into_one_word_and_back() {
        let addr: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        assert_eq!(unpack(pack(addr)), Some(addr));
        let high: SocketAddr = "255.255.255.255:65535".parse().unwrap();
        assert_eq!(unpack(pack(high)), Some(high));
        assert_eq!(unpack(NO_PHONE), None);
    }

    #[tokio::test]
    async fn a_pair_forwards_both_ways_between_latched_phones() {
        let ip = Ipv4Addr::LOCALHOST;
        let pairs = open_pairs(ip, 1).await.unwrap();
        let (a_port, b_port) = pairs[0];
        let phone_a = UdpSocket::bind((ip, 0)).await.unwrap();
        let phone_b = UdpSocket::bind((ip, 0)).await.unwrap();
        let mut buf = [0u8; 64];
        // B speaks first: nobody to send to yet, but B is now latched.
        phone_b.send_to(b"hello A", b_port).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        phone_a.send_to(b"hello B", a_port).await.unwrap();
        let (n, from) = phone_b.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"hello B");
        assert_eq!(from, b_port, "forwarded from the B-side socket");
        phone_b.send_to(b"back to A", b_port).await.unwrap();
        let (n, from) = phone_a.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"back to A");
        assert_eq!(from, a_port);
    }
}
