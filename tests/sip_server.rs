//! The running server over real sockets: every torture message byte-exact over UDP and
//! TCP, OPTIONS, unknown methods, IPv6, a garbage flood, and SIPp.

mod common;

use common::{Server, expectations, options, status_of, udp_exchange};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const ANSWER_WAIT: Duration = Duration::from_secs(3);
const SILENCE_WAIT: Duration = Duration::from_millis(500);

/// Checks one answer against the table's expectation; returns a failure description.
fn judge(path: &str, expect: &str, answer: Option<Vec<u8>>) -> Option<String> {
    let status = answer.as_deref().and_then(status_of);
    let ok = match expect {
        "drop" => answer.is_none(),
        "ok" => status.is_some_and(|s| ![400, 416, 420, 505].contains(&s)),
        code => status.map(|s| s.to_string()).as_deref() == Some(code),
    };
    (!ok).then(|| format!("{path}: expected {expect}, got {status:?}"))
}

fn tcp_exchange(to: SocketAddr, bytes: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect(to).expect("connect");
    s.set_read_timeout(Some(wait)).expect("timeout");
    s.write_all(bytes).expect("write");
    let mut buf = vec![0u8; 65536];
    let mut got = Vec::new();
    // Read until one whole response head has arrived (or the wait ends).
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    (!got.is_empty()).then_some(got)
}

/// Several RFC 5118 messages share a branch, so to the server a second one is a
/// retransmission of the first, absorbed while the first's transaction lives (Timer J,
/// 64*T1). The servers here run with T1 = 10 ms and the sender waits that out.
const SHORT_T1: &str = "t1_ms = 10\n";

fn wait_out_reused_branch(bytes: &[u8], seen: &mut std::collections::HashSet<Vec<u8>>) {
    let text = String::from_utf8_lossy(bytes);
    if let Some(at) = text.find("branch=") {
        let branch: Vec<u8> = text[at..]
            .bytes()
            .take_while(|b| !b";,\r\n ".contains(b))
            .collect();
        if !seen.insert(branch) {
            std::thread::sleep(Duration::from_millis(900));
        }
    }
}

fn fast_server() -> Server {
    Server::start_sip(SHORT_T1)
}

/// Sends every torture message over one transport and checks each answer against
/// the table; `on_stream` marks the messages that are incomplete on a stream.
fn torture_over(exchange: fn(SocketAddr, &[u8], Duration) -> Option<Vec<u8>>, on_stream: bool) {
    let mut server = fast_server();
    let mut failures = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (path, expect) in expectations() {
        let bytes = std::fs::read(&path).expect("fixture");
        wait_out_reused_branch(&bytes, &mut seen);
        // Over a stream, a Content-Length beyond the data, or headers with no empty line
        // after them, mean "wait for the rest" (RFC 4475 §3.1.2.2), so no answer comes.
        let incomplete = on_stream && (path.ends_with("clerr.dat") || path.ends_with("baddn.dat"));
        let expect = if incomplete {
            "drop".to_string()
        } else {
            expect
        };
        let wait = if expect == "drop" {
            SILENCE_WAIT
        } else {
            ANSWER_WAIT
        };
        failures.extend(judge(&path, &expect, exchange(server.sip, &bytes, wait)));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(server.alive());
}

#[test]
fn torture_messages_over_udp_get_their_expected_answers() {
    torture_over(udp_exchange, false);
}

#[test]
fn torture_messages_over_tcp_get_their_expected_answers() {
    torture_over(tcp_exchange, true);
}

#[test]
fn options_answered_with_allow_accept_supported_over_udp_tcp_and_ipv6() {
    let server = Server::start_with("", true);
    let udp =
        udp_exchange(server.sip, &options(server.sip, "UDP", 1), ANSWER_WAIT).expect("UDP answer");
    let text = String::from_utf8(udp).expect("utf8");
    assert!(text.starts_with("SIP/2.0 200 OK\r\n"), "{text}");
    for h in [
        "\r\nAllow: ",
        "\r\nAccept: application/sdp",
        "\r\nSupported:",
    ] {
        assert!(text.contains(h), "missing {h:?} in {text}");
    }
    assert!(text.contains(";received=127.0.0.1;rport="), "{text}");
    let tcp =
        tcp_exchange(server.sip, &options(server.sip, "TCP", 2), ANSWER_WAIT).expect("TCP answer");
    assert_eq!(status_of(&tcp), Some(200));
    let v6: SocketAddr = format!("[::1]:{}", server.sip.port())
        .parse()
        .expect("addr");
    let answer = udp_exchange(v6, &options(v6, "UDP", 3), ANSWER_WAIT).expect("IPv6 answer");
    assert_eq!(status_of(&answer), Some(200));
    let answer = tcp_exchange(v6, &options(v6, "TCP", 4), ANSWER_WAIT).expect("IPv6 TCP answer");
    assert_eq!(status_of(&answer), Some(200));
}

#[test]
fn unknown_and_unsupported_methods_are_never_met_with_silence() {
    let server = Server::start("");
    let base = String::from_utf8(options(server.sip, "UDP", 5)).expect("utf8");
    let unknown = base
        .replace("OPTIONS sip", "FROB sip")
        .replace("1 OPTIONS", "1 FROB");
    let answer = udp_exchange(server.sip, unknown.as_bytes(), ANSWER_WAIT).expect("answer");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("SIP/2.0 501 "), "{text}");
    assert!(text.contains("\r\nAllow: "), "{text}");
    let message = base
        .replace("OPTIONS sip", "MESSAGE sip")
        .replace("1 OPTIONS", "1 MESSAGE");
    let answer = udp_exchange(server.sip, message.as_bytes(), ANSWER_WAIT).expect("answer");
    assert_eq!(status_of(&answer), Some(405));
    let hops = base.replace("Max-Forwards: 70", "Max-Forwards: 0");
    let answer = udp_exchange(server.sip, hops.as_bytes(), ANSWER_WAIT).expect("answer");
    assert_eq!(status_of(&answer), Some(483));
}

#[test]
fn garbage_flood_leaves_the_server_answering() {
    let mut server = Server::start("");
    // The flood comes from its own address: past the request-rate limit that source is
    // banned, which must not stop the server answering everyone else.
    let sock = std::net::UdpSocket::bind("127.0.0.3:0").expect("bind");
    let fixtures: Vec<Vec<u8>> = expectations()
        .iter()
        .map(|(p, _)| std::fs::read(p).expect("fixture"))
        .collect();
    // A deterministic xorshift so a failure can be replayed.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..20_000u32 {
        let packet: Vec<u8> = match i % 4 {
            // Pure noise of random length.
            0 => (0..(next() % 1500)).map(|_| next() as u8).collect(),
            // A torture message with bytes flipped.
            1 | 2 => {
                let mut m = fixtures[(next() % fixtures.len() as u64) as usize].clone();
                for _ in 0..(1 + next() % 8) {
                    let at = (next() % m.len() as u64) as usize;
                    m[at] = next() as u8;
                }
                m
            }
            // A torture message cut short.
            _ => {
                let m = &fixtures[(next() % fixtures.len() as u64) as usize];
                m[..(next() % m.len() as u64) as usize].to_vec()
            }
        };
        let _ = sock.send_to(&packet, server.sip);
        if i % 2000 == 0 {
            // Let the socket buffer drain now and then, as a real flood would be paced.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    assert!(server.alive(), "server died under garbage");
    let ok = common::wait_until(Duration::from_secs(10), || {
        udp_exchange(
            server.sip,
            &options(server.sip, "UDP", 77),
            Duration::from_secs(1),
        )
        .is_some_and(|a| status_of(&a) == Some(200))
    });
    assert!(ok, "no OPTIONS answer after the flood");
}

#[test]
fn sipp_options_ping_is_answered() {
    let sipp = common::require_tool("sipp", "sip-tester");
    let server = Server::start("");
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sipp/options.xml");
    let out = std::process::Command::new(sipp)
        .args([
            "-sf",
            scenario,
            "-m",
            "20",
            "-r",
            "20",
            "-l",
            "5",
            "-timeout",
            "20s",
            "-timeout_error",
        ])
        .args(["-buff_size", "4194304", "-i", "127.0.0.1", "-nostdin"])
        .arg(server.sip.to_string())
        .output()
        .expect("run sipp");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "sipp failed: {text}");
}
