//! The scanner and brute-force defence against the real tools: sipvicious `svcrack`
//! and `svwar` on loopback. The password is never cracked, even when it is in the
//! dictionary; the attacking address ends up banned; a phone on another loopback
//! address keeps registering throughout.

mod common;

use common::{Server, require_tool};
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
