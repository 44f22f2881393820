//! Registration through the real binary with SIPp over UDP and TCP: digest
//! authentication, the wrong password refused, bindings listed by
//! `switchboard registrations`, and bindings kept across a restart.

mod common;

use common::{Server, admin_json, sipp_register};

const EXTENSION: &str = "[extensions.1001]\npassword = \"pw1001\"\nauth_algorithms = [\"MD5\"]\n";

/// One SIPp REGISTER for 1001 over `transport` (`u1` or `t1`) with `password`; the
/// Contact names `contact_port`. True when SIPp saw its 200.
fn register(server: &Server, transport: &str, password: &str, contact_port: u16) -> bool {
    sipp_register(
        server,
        ("127.0.0.1", transport),
        ("1001", password),
        contact_port,
    )
    .status
    .success()
}

fn contacts(server: &Server) -> Vec<String> {
    let regs = admin_json(server, "registrations");
    let mut c: Vec<String> = regs["registrations"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["contact"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    c.sort();
    c
}

#[test]
fn sipp_registers_over_udp_and_tcp_and_bindings_survive_a_restart() {
    let mut server = Server::start(EXTENSION);
    assert!(
        !register(&server, "u1", "wrong", 5071),
        "a wrong password must not register"
    );
    assert!(contacts(&server).is_empty());

    assert!(
        register(&server, "u1", "pw1001", 5071),
        "UDP registration failed"
    );
    assert!(
        register(&server, "t1", "pw1001", 5072),
        "TCP registration failed"
    );
    let before = contacts(&server);
    assert_eq!(before.len(), 2, "{before:?}");
    assert!(
        before.iter().any(|c| c.contains(":5071")) && before.iter().any(|c| c.contains(":5072")),
        "{before:?}"
    );
    let regs = admin_json(&server, "registrations");
    let transports: Vec<&str> = regs["registrations"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|r| r["transport"].as_str())
        .collect();
    assert!(
        transports.contains(&"UDP") && transports.contains(&"TCP"),
        "{regs}"
    );

    server.restart();
    assert_eq!(
        contacts(&server),
        before,
        "bindings lost across the restart"
    );
}
