//! The scanner and brute-force defence against the real tools: sipvicious `svcrack`
//! and `svwar` on loopback. The password is never cracked, even when it is in the
//! dictionary; the attacking address ends up banned; a phone on another loopback
//! address keeps registering throughout.
//!
//! Forged sources: a UDP socket bound to 127.0.0.x sends "as" that address, as an
//! attacker forging a registered phone's address would. Such packets must not get the
//! phone banned, while the same from an unregistered address ban it; and a flood of
//! distinct sources leaves the ban table at `max_bans`.

mod common;

use common::{Server, require_tool};
use std::net::UdpSocket;
use std::process::Command;
use std::time::Duration;

const PASSWORD: &str = "Correct-Horse-7";

fn config(drop_scanners: bool) -> String {
    format!(
        "[security]\nmax_auth_failures = 5\nmax_requests_per_sec = 0\ndrop_scanner_user_agents = {drop_scanners}\n\
         [extensions.1000]\npassword = \"{PASSWORD}\"\nauth_algorithms = [\"MD5\"]\n"
    )
}

fn bans(server: &Server) -> serde_json::Value {
    common::admin_json(server, "bans")
}

/// Runs a sipvicious tool from 127.0.0.1 against the server (at most 90 s) and returns
/// everything it printed.
fn attack(tool: &std::path::Path, args: &[&str], server: &Server) -> String {
    let out = Command::new("timeout")
        .arg("90")
        .arg(tool)
        .args(args)
        .args([
            "-b",
            "127.0.0.1",
            "-p",
            &server.sip.port().to_string(),
            "127.0.0.1",
        ])
        .output()
        .expect("sipvicious");
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

fn banned(server: &Server, ip: &str) -> bool {
    bans(server)["bans"]
        .as_array()
        .is_some_and(|b| b.iter().any(|x| x["address"] == ip))
}

/// A SIPp REGISTER with the right password from `ip`; true when it got its 200.
fn phone_registers(server: &Server, ip: &str) -> bool {
    common::sipp_register(server, (ip, "u1"), ("1000", PASSWORD), 5099)
        .status
        .success()
}

#[test]
fn svcrack_finds_nothing_gets_banned_and_a_real_phone_keeps_registering() {
    let svcrack = require_tool("svcrack", "sipvicious");
    let server = Server::start(&config(false));
    let dir = tempfile::tempdir().expect("tempdir");
    let dict = dir.path().join("words.txt");
    let mut words: Vec<String> = (0..40).map(|i| format!("guess{i}")).collect();
    words.push(PASSWORD.to_string());
    std::fs::write(&dict, words.join("\n") + "\n").expect("dictionary");

    assert!(
        phone_registers(&server, "127.0.0.2"),
        "the phone registers before the attack"
    );
    let dict = dict.to_string_lossy();
    // The phone keeps registering while the attack runs, and every time it succeeds.
    let attacking = std::sync::atomic::AtomicBool::new(true);
    let (report, during) = std::thread::scope(|s| {
        let attacker = s.spawn(|| {
            let report = attack(&svcrack, &["-u", "1000", "-d", &dict], &server);
            attacking.store(false, std::sync::atomic::Ordering::Relaxed);
            report
        });
        let mut during = Vec::new();
        while attacking.load(std::sync::atomic::Ordering::Relaxed) {
            during.push(phone_registers(&server, "127.0.0.2"));
            std::thread::sleep(Duration::from_millis(200));
        }
        (attacker.join().expect("attack thread"), during)
    });
    assert!(
        !during.is_empty() && during.iter().all(|ok| *ok),
        "the phone's registrations during the attack: {during:?}"
    );
    assert!(
        !report.contains(PASSWORD),
        "svcrack cracked the password:\n{report}"
    );
    assert!(
        banned(&server, "127.0.0.1"),
        "the attacker is not banned: {}",
        bans(&server)
    );
    assert!(!banned(&server, "127.0.0.2"));
    assert!(
        phone_registers(&server, "127.0.0.2"),
        "the phone registers after the attack"
    );
}

#[test]
fn svwar_with_its_own_user_agent_is_dropped_and_banned_at_once() {
    let svwar = require_tool("svwar", "sipvicious");
    let server = Server::start(&config(true));
    let report = attack(&svwar, &["-e", "990-1010", "-m", "REGISTER"], &server);
    assert!(
        !report.contains("| 1000 "),
        "svwar found extension 1000:\n{report}"
    );
    assert!(
        common::wait_until(Duration::from_secs(5), || banned(&server, "127.0.0.1")),
        "svwar's source is not banned: {}",
        bans(&server)
    );
    assert!(phone_registers(&server, "127.0.0.2"));
}

/// Sends `count` OPTIONS from `ip` (any loopback address) with `user_agent`, each with
/// its own Call-ID. Nothing is read: a dropped request gets no answer anyway.
fn send_as(server: &Server, ip: &str, user_agent: &str, count: u32) {
    let sock = UdpSocket::bind((ip, 0)).expect("bind a loopback address");
    let port = sock.local_addr().expect("local address").port();
    for n in 0..count {
        let request = format!(
            "OPTIONS sip:1000@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {ip}:{port};branch=z9hG4bK-f{n}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:100@{ip}>;tag=f{n}\r\nTo: <sip:1000@{to}>\r\n\
             Call-ID: forged-{ip}-{n}\r\nCSeq: 1 OPTIONS\r\nUser-Agent: {user_agent}\r\n\
             Content-Length: 0\r\n\r\n",
            to = server.sip
        );
        sock.send_to(request.as_bytes(), server.sip).expect("send");
    }
}

/// A counter from `switchboard bans` (`count`, `evicted`, `spared`).
fn ban_counter(server: &Server, name: &str) -> u64 {
    bans(server)[name].as_u64().unwrap_or(0)
}

fn banned_addresses(server: &Server) -> Vec<String> {
    let mut out: Vec<String> = bans(server)["bans"]
        .as_array()
        .map(|b| {
            b.iter()
                .filter_map(|x| x["address"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[test]
fn forged_packets_from_a_registered_phone_address_do_not_ban_it() {
    let server = Server::start(&format!(
        "[security]\nmax_auth_failures = 3\nmax_requests_per_sec = 20\n\
         [extensions.1000]\npassword = \"{PASSWORD}\"\nauth_algorithms = [\"MD5\"]\n"
    ));
    let phone = "127.0.0.2";
    assert!(phone_registers(&server, phone), "the phone registers");

    // A scanner User-Agent "from" the phone: dropped, counted as spared, no ban.
    send_as(&server, phone, "friendly-scanner", 5);
    assert!(
        common::wait_until(Duration::from_secs(5), || ban_counter(&server, "spared")
            >= 5),
        "the forged scanner packets were not spared: {}",
        bans(&server)
    );
    // Wrong passwords "from" the phone over UDP: answered 403, no ban.
    for _ in 0..5 {
        let out = common::sipp_register(&server, (phone, "u1"), ("1000", "wrong"), 5099);
        assert!(!out.status.success(), "a wrong password registered");
    }
    // A flood past the request rate "from" the phone: the excess is dropped, no ban.
    send_as(&server, phone, "Yealink SIP-T46S", 200);
    assert!(
        common::wait_until(Duration::from_secs(5), || {
            ban_counter(&server, "spared") >= 5 + 5 + 100
        }),
        "the forged flood was not spared: {}",
        bans(&server)
    );
    assert!(
        !banned(&server, phone),
        "the phone is banned: {}",
        bans(&server)
    );
    assert!(
        phone_registers(&server, phone),
        "the phone registers after the forged packets"
    );

    // The very same packets from an address with no registration ban it at once.
    let stranger = "127.0.0.3";
    send_as(&server, stranger, "friendly-scanner", 1);
    assert!(
        common::wait_until(Duration::from_secs(5), || banned(&server, stranger)),
        "the unregistered scanner is not banned: {}",
        bans(&server)
    );
    assert_eq!(banned_addresses(&server), vec![stranger.to_string()]);
}

#[test]
fn a_flood_of_scanner_sources_leaves_max_bans_and_they_survive_a_restart() {
    let mut server = Server::start("[security]\nmax_bans = 50\n");
    let sources: Vec<String> = (10..=250).map(|i| format!("127.0.0.{i}")).collect();
    for ip in &sources {
        send_as(&server, ip, "sipvicious", 1);
        // Paced a little, so the server's socket buffer cannot overflow.
        std::thread::sleep(Duration::from_millis(1));
    }
    let evicted = (sources.len() - 50) as u64;
    assert!(
        common::wait_until(Duration::from_secs(10), || {
            ban_counter(&server, "evicted") == evicted
        }),
        "not every source was banned, or the table grew past 50: {}",
        bans(&server)
    );
    assert_eq!(ban_counter(&server, "count"), 50);
    assert_eq!(ban_counter(&server, "max_bans"), 50);
    let kept = banned_addresses(&server);
    assert_eq!(kept.len(), 50);
    assert!(kept.iter().all(|ip| sources.contains(ip)), "{kept:?}");

    // Written by the background writer, the bans outlive the process.
    server.restart();
    assert_eq!(banned_addresses(&server), kept);
    assert_eq!(ban_counter(&server, "evicted"), 0);
}
