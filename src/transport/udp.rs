//! UDP: one receive loop per socket; each datagram is one message (RFC 3261 §18.3).

use super::Hub;
use crate::sip::transaction::{Peer, TransportKind};
use bytes::BytesMut;
use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::UdpSocket;
use tokio::sync::watch;

/// Socket buffers sized for signaling bursts (a load test's INVITEs, a reboot storm of
/// phones registering).
const SOCKET_BUFFER: usize = 4 << 20;
/// The largest datagram read; bigger ones are truncated and fail to parse.
const MAX_DATAGRAM: usize = 65_535;

pub(super) fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // "udp:[::]:5060" beside "udp:0.0.0.0:5060" must not collide.
        sock.set_only_v6(true)?;
    }
    let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = sock.set_send_buffer_size(SOCKET_BUFFER);
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    UdpSocket::from_std(sock.into())
}

pub(super) async fn receive_loop(
    hub: Arc<Hub>,
    sock: Arc<UdpSocket>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut buf = BytesMut::with_capacity(MAX_DATAGRAM * 4);
    loop {
        if buf.capacity() < MAX_DATAGRAM {
            buf.reserve(MAX_DATAGRAM * 4);
        }
        // Received into the spare capacity, which needs no zeroing first.
        let received = tokio::select! {
            r = sock.recv_buf_from(&mut buf) => r,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        match received {
            Ok((_, from)) => {
                let datagram = buf.split().freeze();
                hub.on_message(datagram, Peer::new(TransportKind::Udp, from), false);
            }
            // ICMP port unreachable from an earlier send surfaces here on Linux; the
            // socket itself is fine.
            Err(e) => tracing::debug!(error = %e, "UDP receive error"),
        }
    }
}
