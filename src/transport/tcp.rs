//! TCP: an accept loop, and per connection a reader that frames messages by
//! Content-Length and a writer fed by a queue, so the core never waits on a socket.
//! Connections are reused both ways: responses go back on the connection a request
//! came in on, and requests to a peer that connected to us use its connection.

use super::Hub;
use crate::sip::transaction::{Peer, TransportKind};
use crate::sip::{Frame, frame_stream};
use bytes::{Bytes, BytesMut};
use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// How long a partly received message may wait for the rest before the connection is
/// closed (RFC 4475 §3.1.2.2: a Content-Length larger than what arrives).
const PARTIAL_MESSAGE_TIMEOUT: Duration = Duration::from_secs(32);

pub(super) fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_reuse_address(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(1024)?;
    TcpListener::from_std(sock.into())
}

pub(super) async fn accept_loop(
    hub: Arc<Hub>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        match accepted {
            Ok((stream, remote)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(run_connection(
                    hub.clone(),
                    stream,
                    remote,
                    shutdown.clone(),
                ));
            }
            Err(e) => {
                tracing::warn!(error = %e, "TCP accept failed");
                // Out of file descriptors and the like: don't spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Opens a connection for a request to a peer we have none with, then keeps it for
/// whatever else goes there or comes back.
pub(super) async fn connect_and_send(hub: Arc<Hub>, remote: SocketAddr, first: Bytes) {
    match tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(remote)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            let (_, shutdown) = watch::channel(false);
            let (tx, rx) = mpsc::unbounded_channel();
            // The receiver is alive until `serve` ends, so this send can't fail.
            let _ = tx.send(first);
            let id = hub.register_stream(TransportKind::Tcp, remote, tx);
            serve(hub, stream, remote, id, rx, shutdown).await;
        }
        Ok(Err(e)) => tracing::warn!(%remote, error = %e, "TCP connect failed"),
        Err(_) => tracing::warn!(%remote, "TCP connect timed out"),
    }
}

async fn run_connection(
    hub: Arc<Hub>,
    stream: TcpStream,
    remote: SocketAddr,
    shutdown: watch::Receiver<bool>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let id = hub.register_stream(TransportKind::Tcp, remote, tx);
    serve(hub, stream, remote, id, rx, shutdown).await;
}

async fn serve(
    hub: Arc<Hub>,
    stream: TcpStream,
    remote: SocketAddr,
    id: u64,
    mut outgoing: mpsc::UnboundedReceiver<Bytes>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (mut reader, mut writer) = stream.into_split();
    let writer_task = tokio::spawn(async move {
        while let Some(bytes) = outgoing.recv().await {
            if writer.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });
    let peer = Peer {
        transport: TransportKind::Tcp,
        addr: remote,
        conn: Some(id),
    };
    let mut buf = BytesMut::with_capacity(8192);
    'read: loop {
        let partial = !buf.is_empty();
        let read = tokio::select! {
            r = reader.read_buf(&mut buf) => r,
            _ = tokio::time::sleep(PARTIAL_MESSAGE_TIMEOUT), if partial => {
                tracing::debug!(%remote, "incomplete message timed out; closing");
                break;
            }
            _ = shutdown.wait_for(|s| *s) => break,
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        loop {
            match frame_stream(&buf) {
                Frame::Message(n) => {
                    let msg = buf.split_to(n).freeze();
                    hub.on_message(msg, peer, true);
                }
                Frame::Ping(n) => {
                    let _ = buf.split_to(n);
                    // RFC 5626 §4.4.1: answer a double-CRLF ping with a single CRLF pong.
                    hub.send(&peer, Bytes::from_static(b"\r\n"));
                }
                Frame::Skip(n) => {
                    let _ = buf.split_to(n);
                }
                Frame::Incomplete => break,
                Frame::Broken(reason) => {
                    // Framing is lost: answer what can be answered, then close
                    // (RFC 4475 §3.1.2.3, §3.3.9).
                    tracing::debug!(%remote, reason, "unrecoverable stream framing; closing");
                    let head = buf.split().freeze();
                    hub.on_message(head, peer, false);
                    break 'read;
                }
            }
        }
    }
    hub.unregister_stream(id);
    // Let queued answers (a 400 for broken framing) go out before closing.
    let _ = tokio::time::timeout(Duration::from_secs(2), writer_task).await;
}
