//! The registrar end to end: hand-written REGISTER and INVITE requests through the
//! parser, answered with digests computed by the client side of `sip::auth`, against a
//! store in a temporary directory. Time is virtual.

use super::*;
use crate::config::Origin;
use crate::sip::auth::{Challenge, DigestAlgorithm, ha1};
use crate::sip::transaction::TransportKind;
use crate::sip::{Message, parse_datagram};
use bytes::Bytes;
use tempfile::TempDir;

pub(super) const NOW: u64 = 1_700_000_000;
const REALM: &str = "switchboard";
const ATTACKER: &str = "127.0.0.1:5070";
pub(super) const PHONE: &str = "127.0.0.2:40000";

pub(super) fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn config() -> Config {
    let ha1_1003 = ha1(DigestAlgorithm::Md5, "1003", REALM, "pw1003");
    Config::parse(
        &format!(
            r#"
[sip]
auth_algorithms = ["SHA-256", "MD5"]
[extensions.1001]
password = "pw1001"
[extensions.1002]
password = "pw1002"
auth_algorithms = ["MD5"]
[extensions.1003]
ha1 = "{ha1_1003}"
[security]
max_auth_failures = 3
failure_window_secs = 300
max_requests_per_sec = 50
ban_secs = 600
"#
        ),
        Origin::Embedded,
    )
    .unwrap()
}

pub(super) fn open(tmp: &TempDir, now: u64) -> Registrar {
    let store = Store::open(tmp.path()).unwrap();
    Registrar::new(at(now), &config(), RegistrarSettings::default(), store).unwrap()
}

pub(super) fn udp(addr: &str) -> Peer {
    Peer::new(TransportKind::Udp, addr.parse().unwrap())
}

fn parse(text: String) -> Request {
    match parse_datagram(Bytes::from(text)).unwrap() {
        Message::Request(r) => r,
        Message::Response(_) => panic!("not a request"),
    }
}

/// A REGISTER for `user` with extra header lines (each without CRLF).
fn register(user: &str, call_id: &str, cseq: u32, extra: &[&str]) -> Request {
    let mut text = format!(
        "REGISTER sip:{REALM} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 10.0.0.5:5060;rport;branch=z9hG4bK-{call_id}-{cseq}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{user}@{REALM}>;tag=f-{call_id}\r\n\
         To: <sip:{user}@{REALM}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} REGISTER\r\n"
    );
    for line in extra {
        text.push_str(line);
        text.push_str("\r\n");
    }
    text.push_str("Content-Length: 0\r\n\r\n");
    parse(text)
}

fn invite(from_user: &str, extra: &[&str]) -> Request {
    let mut text = format!(
        "INVITE sip:1002@{REALM} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK-inv\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{from_user}@{REALM}>;tag=f-inv\r\n\
         To: <sip:1002@{REALM}>\r\n\
         Call-ID: inv-1\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:{from_user}@10.0.0.5:5060>\r\n"
    );
    for line in extra {
        text.push_str(line);
        text.push_str("\r\n");
    }
    text.push_str("Content-Length: 0\r\n\r\n");
    parse(text)
}

fn challenges(resp: &Response, header: Known) -> Vec<Challenge> {
    resp.headers
        .get_all(header)
        .map(|v| Challenge::parse(v).unwrap())
        .collect()
}

/// The challenge for `alg` in a 401/407.
fn challenge_for(resp: &Response, header: Known, alg: DigestAlgorithm) -> Challenge {
    challenges(resp, header)
        .into_iter()
        .find(|c| c.algorithm == alg)
        .unwrap_or_else(|| panic!("no {alg} challenge in {resp:?}"))
}

/// An Authorization header line answering `ch`.
fn authorization(ch: &Challenge, user: &str, password: &str, method: &str, nc: u32) -> String {
    let uri = match method {
        "REGISTER" => format!("sip:{REALM}"),
        _ => format!("sip:1002@{REALM}"),
    };
    let header = if method == "REGISTER" {
        "Authorization"
    } else {
        "Proxy-Authorization"
    };
    let credentials = ch.answer(user, password, method, &uri, "0a4f113b", nc);
    format!("{header}: {credentials}")
}

fn contacts(resp: &Response) -> Vec<String> {
    resp.headers
        .list(Known::Contact)
        .map(|c| c.to_string())
        .collect()
}

/// Registers `user` the way a phone does: a REGISTER without credentials, then the
/// same with an answer to the `alg` challenge. Returns the final response.
pub(super) fn login(
    reg: &Registrar,
    now: u64,
    source: Peer,
    (user, password): (&str, &str),
    alg: DigestAlgorithm,
    (call_id, cseq): (&str, u32),
    extra: &[&str],
) -> Response {
    let first = reg.handle_register(at(now), &register(user, call_id, cseq, extra), source);
    assert_eq!(first.status, 401, "{first:?}");
    let ch = challenge_for(&first, Known::WwwAuthenticate, alg);
    let auth = authorization(&ch, user, password, "REGISTER", 1);
    let mut lines = extra.to_vec();
    lines.push(&auth);
    reg.handle_register(at(now), &register(user, call_id, cseq + 1, &lines), source)
}

const CONTACT: &str = "Contact: <sip:1001@10.0.0.5:5060>";

#[test]
fn registrar_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Registrar>();
}

#[test]
fn register_without_credentials_is_challenged_with_every_algorithm_in_order() {
    let tmp = TempDir::new().unwrap();
    let reg = open(&tmp, NOW);
    let resp = reg.handle_register(at(NOW), &register("1001", "c1", 1, &[CONTACT]), udp(PHONE));
    assert_eq!(resp.status, 401);
    let chs = challenges(&resp, Known::WwwAuthenticate);
    let algs: Vec<_> = chs.iter().map(|c| c.algorithm).collect();
    assert_eq!(algs, [DigestAlgorithm::Sha256, DigestAlgorithm::Md5]);
    for ch in &chs {
        assert_eq!(ch.realm, REALM);
        assert!(ch.qop_auth);
        assert!(!ch.stale);
    }
    assert_ne!(chs[0].nonce, chs[1].nonce);
    assert!(resp.to().unwrap().tag().is_some());
    assert!(resp.headers.get(Known::Server).is_some());
    assert!(reg.lookup(at(NOW), "1001").is_empty());

    // An unknown user gets the same challenge, so challenges reveal nothing.
    let unknown = reg.handle_register(at(NOW), &register("9999", "c2", 1, &[]), udp(PHONE));
    assert_eq!(unknown.status, 401);
    let algs: Vec<_> = challenges(&unknown, Known::WwwAuthenticate)
        .iter()
        .map(|c| c.algorithm)
        .collect();
    assert_eq!(algs, [DigestAlgorithm::Sha256, DigestAlgorithm::Md5]);

    // Challenges are not failures: many of them ban nobody.
    for i in 0..20 {
        let resp = reg.handle_register(at(NOW), &register("1001", "c3", i, &[]), udp(PHONE));
        assert_eq!(resp.status, 401);
    }
    assert!(reg.security().bans(at(NOW)).is_empty());
}

#[test]
fn sha256_and_md5_registrations_succeed() {
    let tmp = TempDir::new().unwrap();
    let reg = open(&tmp, NOW);
    for (alg, contact) in [
        (DigestAlgorithm::Sha256, "Contact: <sip:1001@10.0.0.5:5060>"),
        (DigestAlgorithm::Md5, "Contact: <sip:1001@10.0.0.6:5060>"),
    ] {
        let resp = login(
            &reg,
            NOW,
            udp(PHONE),
            ("1001", "pw1001"),
            alg,
            (alg.name(), 1),
            &[contact],
        );
        assert_eq!(resp.status, 200, "{alg}: {resp:?}");
        assert_eq!(
            resp.headers.get(Known::Date).map(|d| d.as_str()),
            Some("Tue, 14 Nov 2023 22:13:20 GMT")
        );
    }
    let resp = reg.handle_register(at(NOW), &register("1001", "q", 1, &[]), udp(PHONE));
    assert_eq!(resp.status, 401, "queries need credentials too");
    let targets = reg.lookup(at(NOW), "1001");
    assert_eq!(targets.len(), 2);
}

#[test]
fn wrong_password_and_unknown_user_get_the_same_403_and_are_counted() {
    let tmp = TempDir::new().unwrap();
    let reg = open(&tmp, NOW);
    let attacker = udp(ATTACKER);
    let wrong = login(
        &reg,
        NOW,
        attacker,
        ("1001", "guess"),
        DigestAlgorithm::Md5,
        ("a", 1),
        &[CONTACT],
    );
    let unknown = login(
        &reg,
        NOW,
        attacker,
        ("9999", "guess"),
        DigestAlgorithm::Md5,
        ("b", 1),
        &[CONTACT],
    );
    assert_eq!(wrong.status, 403);
    assert_eq!(unknown.status, 403);
    assert_eq!(wrong.reason, unknown.reason);
    let names = |r: &Response| -> Vec<String> {
        r.headers
            .iter()
            .map(|h| h.name.as_str().to_owned())
            .collect()
    };
    assert_eq!(names(&wrong), names(&unknown));
    assert!(reg.lookup(at(NOW), "1001").is_empty());

    // max_auth_failures = 3: the fourth failure bans the attacker's address only.
    assert_eq!(
        reg.security().admit(at(NOW), attacker.addr.ip(), None),
        Admission::Allow
    );
    let third = login(
        &reg,
        NOW,
        attacker,
        ("1002", "guess"),
        DigestAlgorithm::Md5,
        ("c", 1),
        &[],
    );
    assert_eq!(third.status, 403);
    assert!(reg.security().bans(at(NOW)).is_empty());
    login(
        &reg,
        NOW,
        attacker,
        ("1001", "guess2"),
        DigestAlgorithm::Sha256,
        ("d", 1),
        &[],
    );
    assert_eq!(
        reg.security().admit(at(NOW), attacker.addr.ip(), None),
        Admission::Drop
    );
    // The phone on the other loopback address keeps registering.
    let phone = udp(PHONE);
    assert_eq!(
        reg.security()
            .admit(at(NOW), phone.addr.ip(), Some("Yealink")),
        Admission::Allow
    );
    let ok = login(
        &reg,
        NOW,
        phone,
        ("1001", "pw1001"),
        DigestAlgorithm::Sha256,
        ("e", 1),
        &[CONTACT],
    );
    assert_eq!(ok.status, 200);
}

#[test]
fn qop_without_nc_and_cnonce_is_refused_and_counted() {
    // sipvicious svcrack's shape: qop=auth, no nc, no cnonce. Even a digest computed
    // from the right password must not pass.
    let tmp = TempDir::new().unwrap();
    let reg = open(&tmp, NOW);
    let first = reg.handle_register(at(NOW), &register("1001", "s", 1, &[]), udp(ATTACKER));
    let ch = challenge_for(&first, Known::WwwAuthenticate, DigestAlgorithm::Md5);
    for i in 0..4 {
        let credentials = Challenge {
            qop_auth: false,
            ..ch.clone()
        }
        .answer("1001", "pw1001", "REGISTER", "sip:switchboard", "", 1);
        let auth = format!("Authorization: {credentials}, qop=auth");
        let resp = reg.handle_register(
            at(NOW),
            &register("1001", "s", 2 + i, &[&auth]),
            udp(ATTACKER),
        );
        assert_eq!(resp.status, 403);
    }
    assert_eq!(
        reg.security()
            .admit(at(NOW), ATTACKER.parse::<SocketAddr>().unwrap().ip(), None),
        Admission::Drop
    );
}

#[test]
fn expired_nonce_gets_a_stale_challenge_not_a_failure() {
    let tmp = TempDir::new().unwrap();
    let reg = open(&tmp, NOW);
    let first = reg.handle_register(at(NOW), &register("1001", "n", 1, &[]), udp(PHONE));
    let ch = challenge_for(&first, Known::WwwAuthenticate, DigestAlgorithm::Sha256);
    let later = NOW + RegistrarSettings::default().nonce_lifetime_secs + 1;
    for nc in 1..=5 {
        let auth = authorization(&ch, "1001", "pw1001", "REGISTER", nc);
        let resp = reg.handle_register(
            at(later),
            &register("1001", "n", 1 + nc, &[CONTACT, &auth]),
            udp(PHONE),
        );
        assert_eq!(resp.status, 401);
        let fresh = challenges(&resp, Known::WwwAuthenticate);
        assert!(fresh.iter().all(|c| c.stale), "{resp:?}");
    }
    assert!(reg.security().bans(at(later)).is_empty());
    // The client retries with the new nonce and succeeds.
    let resp = reg.handle_register(at(later), &register("1001", "n", 7, &[]), udp(PHONE));
    let ch = challenge_for(&resp, Known::WwwAuthenticate, DigestAlgorithm::Sha256);
    let auth = authorization(&ch, "1001", "pw1001", "REGISTER", 1);
    let resp = reg.handle_register(
        at(later),
        &register("1001", "n", 8, &[CONTACT, &auth]),
        udp(PHONE),
    );
    assert_eq!(resp.status, 200);
}

#[test]
fn several_contacts_expiry_sources_and_q_order() {
    let tmp = TempDir::new().unwrap();
    let reg = open(&tmp, NOW);
    let resp = login(
        &reg,
        NOW,
        udp(PHONE),
        ("1001", "pw1001"),
        DigestAlgorithm::Sha256,
        ("m", 1),
        &[
            "Contact: <sip:1001@10.0.0.5:5060>;q=0.5, <sip:1001@10.0.0.6:5060>;expires=120",
            "Contact: \"Desk\" <sip:1001@10.0.0.7:5060;transport=udp>;expires=99999;q=0.7",
            "Expires: 600",
        ],
    );
    assert_eq!(resp.status, 200, "{resp:?}");
    let mut listed = contacts(&resp);
    listed.sort();
    assert_eq!(
        listed,
        [
            "<sip:1001@10.0.0.5:5060>;expires=600;q=0.5",
            "<sip:1001@10.0.0.6:5060>;expires=120",
            // Capped at max_expires.
            "<sip:1001@10.0.0.7:5060;transport=udp>;expires=7200;q=0.7",
        ]
    );
    let order: Vec<String> = reg
        .lookup(at(NOW), "1001")
        .iter()
        .map(|t| format!("{};{}", t.contact, t.q_thousandths))
        .collect();
    assert_eq!(
        order,
        [
            "sip:1001@10.0.0.6:5060;1000",
            "sip:1001@10.0.0.7:5060;transport=udp;700",
            "sip:1001@10.0.0.5:5060;500",
        ]
    );
    // After two minutes the 120 s contact is gone from lookups and from the 200.
    let targets = reg.lookup(at(NOW + 120), "1001");
    assert_eq!(targets.len(), 2);
}

#[test]
fn expiry_below_the_minimum_is_423_and_changes_nothing() {
    let tmp = TempDir::new().unwrap();
    let reg = open(&tmp, NOW);
    let resp = login(
        &reg,
        NOW,
        udp(PHONE),
        ("1001", "pw1001"),
        DigestAlgorithm::Sha256,
        ("x", 1),
        &["Contact: <sip:1001@10.0.0.5:5060>, <sip:1001@10.0.0.6:5060>;expires=30"],
    );
    assert_eq!(resp.status, 423);
    assert_eq!(
        resp.headers.get(Known::MinExpires).map(|v| v.as_str()),
        Some("60")
    );
    assert!(reg.lookup(at(NOW), "1001").is_empty());
    let resp = login(
        &reg,
        NOW,
        udp(PHONE),
        ("1001", "pw1001"),
        DigestAlgorithm::Sha256,
        ("y", 1),
        &[CONTACT, "Expires: 59"],
    );
    assert_eq!(resp.status, 423);
    let resp = login(
        &reg,
        NOW,
        udp(PHONE),
        ("1001", "pw1001"),
        DigestAlgorithm::Sha256,
        ("z", 1),
        &[CONTACT, "Expires: 60"],
    );
    assert_eq!(resp.status, 200);
    assert_eq!(contacts(&resp), ["<sip:1001@10.0.0.5:5060>;expires=60"]);
}

/// A registered phone that keeps one nonce and counts up, as phones do.
struct Session<'a> {
    reg: &'a Registrar,
    challenge: Challenge,
    call_id: &'static str,
    cseq: u32,
    nc: u32,
    source: Peer,
}

impl<'a> Session<'a> {
    fn start(reg: &'a Registrar, call_id: &'static str) -> Session<'a> {
        let first = reg.handle_register(at(NOW), &register("1001", call_id, 1, &[]), udp(PHONE));
        Session {
            reg,
            challenge: challenge_for(&first, Known::WwwAuthenticate, DigestAlgorithm::Sha256),
            call_id,
            cseq: 1,
            nc: 0,
            source: udp(PHONE),
        }
    }

    /// Sends an authenticated REGISTER with the next CSeq (or `cseq`).
    fn send(&mut self, now: u64, cseq: Option<u32>, extra: &[&str]) -> Response {
        self.nc += 1;
        self.cseq = cseq.unwrap_or(self.cseq + 1);
        let auth = authorization(&self.challenge, "1001", "pw1001", "REGISTER", self.nc);
        let mut lines = extra.to_vec();
        lines.push(&auth);
        self.reg.handle_register(
            at(now),
            &register("1001", self.call_id, self.cseq, &lines),
            self.source,
        )
    }
}

#[test]
fn contact_expires_zero_removes_one_binding() {
    let tmp = TempDir::new().unwrap();
    let reg = open(&tmp, NOW);
    let mut phone = Session::start(&reg, "r");
    let both = "Contact: <sip:1001@10.0.0.5:5060>, <sip:1001@10.0.0.6:5060>";
    assert_eq!(phone.send(NOW, None, &[both]).status, 200);
    // An equivalent spelling of the URI names the same binding.
    let resp = phone.send(NOW, None, &["Contact: <sip:1001@10.0.0.6:5060>;expires=0"]);
    assert_eq!(resp.status, 200);
    assert_eq!(contacts(&resp), ["<sip:1001@10.0.0.5:5060>;expires=3600"]);
    let resp = phone.send(
        NOW + 10,
        None,
        &["Contact: <sip:1001@10.0.0.5:5060>", "Expires: 0"],
    );
    assert_eq!(resp.status, 200);
    assert!(contacts(&resp).is_empty());
    assert!(reg.lookup(at(NOW + 10), "1001").is_empty());
}

#[test]
fn star_removes_every_binding_only_with_expires_zero() {
    let tmp = TempDir::new().unwrap();
    let store_dir = tmp.path().to_owned();
    let reg = open(&tmp, NOW);
    let mut phone = Session::start(&reg, "s");
    let both = "Contact: <sip:1001@10.0.0.5:5060>, <sip:1001@10.0.0.6:5060>";
    assert_eq!(phone.send(NOW, None, &[both]).status, 200);
    for extra in [&["Contact: *"][..], &["Contact: *", "Expires: 300"]] {
        let resp = phone.send(NOW, None, extra);
        assert_eq!(resp.status, 400, "{extra:?}");
    }
    assert_eq!(reg.lookup(at(NOW), "1001").len(), 2);
    let resp = phone.send(NOW, None, &["Contact: *", "Expires: 0"]);
    assert_eq!(resp.status, 200);
    assert!(contacts(&resp).is_empty());
    assert!(reg.lookup(at(NOW), "1001").is_empty());
    drop(reg);
    assert!(
        Store::open(&store_dir)
            .unwrap()
            .all_bindings()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn register_without_contact_is_a_query() {
    let tmp = TempDir::new().unwrap();
    let reg = open(&tmp, NOW);
    let mut phone = Session::start(&reg, "q");
    assert_eq!(phone.send(NOW, None, &[CONTACT]).status, 200);
    let resp = phone.send(NOW + 100, None, &[]);
    assert_eq!(resp.status, 200);
    assert_eq!(contacts(&resp), ["<sip:1001@10.0.0.5:5060>;expires=3500"]);
    assert_eq!(reg.lookup(at(NOW + 100), "1001").len(), 1);
}

#[test]
fn same_call_id_needs_a_higher_cseq() {
    let tmp = TempDir::new().unwrap();
    let reg = open(&tmp, NOW);
    let mut phone = Session::start(&reg, "o");
    assert_eq!(phone.send(NOW, Some(5), &[CONTACT]).status, 200);
    for cseq in [5, 4] {
        let resp = phone.send(NOW, Some(cseq), &[CONTACT, "Expires: 0"]);
        assert_eq!(resp.status, 500, "CSeq {cseq}");
    }
    assert_eq!(reg.lookup(at(NOW), "1001").len(), 1);
    assert_eq!(
        phone
            .send(NOW, Some(3), &["Contact: *", "Expires: 0"])
            .status,
        500
    );
    // Another Call-ID (a rebooted phone) may start its CSeq anywhere.
    phone.call_id = "o2";
    assert_eq!(
        phone.send(NOW, Some(2), &[CONTACT, "Expires: 0"]).status,
        200
    );
    assert!(reg.lookup(at(NOW), "1001").is_empty());
}

#[test]
fn bindings_and_nonce_secret_survive_a_restart() {
    let tmp = TempDir::new().unwrap();
    let pending;
    {
        let reg = open(&tmp, NOW);
        let tcp = Peer {
            conn: Some(7),
            ..Peer::new(TransportKind::Tcp, PHONE.parse().unwrap())
        };
        let resp = login(
            &reg,
            NOW,
            tcp,
            ("1001", "pw1001"),
            DigestAlgorithm::Sha256,
            ("k", 1),
            &[
                "Contact: <sip:1001@10.0.0.5:5060;transport=tcp>",
                "User-Agent: Yealink T46",
            ],
        );
        assert_eq!(resp.status, 200);
        assert_eq!(reg.lookup(at(NOW), "1001")[0].peer, tcp);
        let resp = reg.handle_register(at(NOW), &register("1002", "k2", 1, &[]), udp(PHONE));
        pending = challenge_for(&resp, Known::WwwAuthenticate, DigestAlgorithm::Md5);
    }
    let reg = open(&tmp, NOW + 10);
    let targets = reg.lookup(at(NOW + 10), "1001");
    assert_eq!(targets.len(), 1);
    assert_eq!(
        targets[0].contact.to_string(),
        "sip:1001@10.0.0.5:5060;transport=tcp"
    );
    // The connection closed with the old process; the address remains.
    assert_eq!(
        targets[0].peer,
        Peer::new(TransportKind::Tcp, PHONE.parse().unwrap())
    );
    let info = &reg.registrations(at(NOW + 10))[0];
    assert_eq!(info.user_agent.as_deref(), Some("Yealink T46"));
    assert_eq!(info.expires_in, 3590);

    // A nonce issued before the restart still verifies.
    let auth = authorization(&pending, "1002", "pw1002", "REGISTER", 1);
    let resp = reg.handle_register(
        at(NOW + 10),
        &register("1002", "k2", 2, &["Contact: <sip:1002@10.0.0.9>", &auth]),
        udp(PHONE),
    );
    assert_eq!(resp.status, 200, "{resp:?}");
}

#[test]
fn expired_bindings_vanish_and_purge_removes_them() {
    let tmp = TempDir::new().unwrap();
    let reg = open(&tmp, NOW);
    let resp = login(
        &reg,
        NOW,
        udp(PHONE),
        ("1001", "pw1001"),
        DigestAlgorithm::Sha256,
        ("p", 1),
        &[CONTACT, "Expires: 60"],
    );
    assert_eq!(resp.status, 200);
    assert_eq!(reg.lookup(at(NOW + 59), "1001").len(), 1);
    assert!(reg.lookup(at(NOW + 60), "1001").is_empty());
    assert!(reg.registrations(at(NOW + 60)).is_empty());
    assert_eq!(reg.purge(at(NOW + 59)).unwrap(), 0);
    assert_eq!(reg.purge(at(NOW + 60)).unwrap(), 1);
    drop(reg);
    // Gone from the store too: a restart before expiry would not bring it back.
    let reg = open(&tmp, NOW);
    assert!(reg.lookup(at(NOW), "1001").is_empty());
}

#[test]
fn requests_go_to_the_source_address_not_the_private_contact() {
    let tmp = TempDir::new().unwrap();
    let reg = open(&tmp, NOW);
    let natted = udp("203.0.113.9:61000");
    let resp = login(
        &reg,
        NOW,
        natted,
        ("1001", "pw1001"),
        DigestAlgorithm::Sha256,
        ("nat", 1),
        &["Contact: <sip:1001@192.168.1.20:5060>"],
    );
    assert_eq!(resp.status, 200);
    let targets = reg.lookup(at(NOW), "1001");
    assert_eq!(targets[0].contact.to_string(), "sip:1001@192.168.1.20:5060");
    assert_eq!(targets[0].peer, natted);
    let info = &reg.registrations(at(NOW))[0];
    assert_eq!(info.source, natted.addr);
    assert_eq!(info.transport, "UDP");
}

#[test]
fn qualify_pings_udp_contacts_and_records_reachability() {
    let tmp = TempDir::new().unwrap();
    let reg = open(&tmp, NOW);
    let mut phone = Session::start(&reg, "ping");
    assert_eq!(phone.send(NOW, None, &[CONTACT]).status, 200);
    phone.source = Peer {
        conn: Some(3),
        ..Peer::new(TransportKind::Tcp, "127.0.0.2:40001".parse().unwrap())
    };
    let tcp_contact = "Contact: <sip:1001@10.0.0.5:5062;transport=tcp>";
    assert_eq!(phone.send(NOW, None, &[tcp_contact]).status, 200);

    assert!(reg.due_pings(at(NOW + 29)).is_empty());
    let due = reg.due_pings(at(NOW + 30));
    assert_eq!(due.len(), 1, "only the UDP contact: {due:?}");
    assert_eq!(due[0].peer, udp(PHONE));
    assert_eq!(due[0].request_uri.to_string(), "sip:1001@10.0.0.5:5060");
    assert!(reg.due_pings(at(NOW + 30)).is_empty());
    let reachability = |now| -> Vec<(Option<bool>, Option<f64>)> {
        reg.registrations(at(now))
            .into_iter()
            .map(|r| (r.reachable, r.rtt_ms))
            .collect()
    };
    assert_eq!(reachability(NOW + 30), [(None, None), (None, None)]);
    reg.ping_result(&due[0].key, Some(Duration::from_millis(20)));
    assert_eq!(
        reachability(NOW + 30),
        [(Some(true), Some(20.0)), (None, None)]
    );

    let next = reg.due_pings(at(NOW + 60));
    assert_eq!(next.len(), 1);
    reg.ping_result(&next[0].key, None);
    assert_eq!(reachability(NOW + 60), [(Some(false), None), (None, None)]);
    // A late answer to the older ping does not overrule the newer result.
    reg.ping_result(&due[0].key, Some(Duration::from_millis(20)));
    assert_eq!(reachability(NOW + 60), [(Some(false), None), (None, None)]);
    assert_eq!(reg.lookup(at(NOW + 60), "1001")[0].reachable, Some(false));

    // After a restart reachability is unknown, so contacts are pinged at once.
    drop(phone);
    drop(reg);
    let reg = open(&tmp, NOW + 70);
    assert_eq!(reg.due_pings(at(NOW + 70)).len(), 1);
}

#[test]
fn out_of_dialog_requests_authenticate_with_407_as_their_from_user() {
    let tmp = TempDir::new().unwrap();
    let reg = open(&tmp, NOW);
    let AuthVerdict::Reply(resp) =
        reg.authenticate_request(at(NOW), &invite("1001", &[]), udp(PHONE))
    else {
        panic!("an INVITE without credentials passed");
    };
    assert_eq!(resp.status, 407);
    assert!(resp.headers.get(Known::WwwAuthenticate).is_none());
    let ch = challenge_for(&resp, Known::ProxyAuthenticate, DigestAlgorithm::Sha256);
    assert_eq!(challenges(&resp, Known::ProxyAuthenticate).len(), 2);

    let auth = authorization(&ch, "1001", "pw1001", "INVITE", 1);
    assert_eq!(
        reg.authenticate_request(at(NOW), &invite("1001", &[&auth]), udp(PHONE)),
        AuthVerdict::Authenticated {
            extension: "1001".into()
        }
    );
    // 1001's credentials do not make a call from 1002, nor from a non-extension.
    for from in ["1002", "0800123456"] {
        let auth = authorization(&ch, "1001", "pw1001", "INVITE", 2);
        match reg.authenticate_request(at(NOW), &invite(from, &[&auth]), udp(PHONE)) {
            AuthVerdict::Reply(resp) => assert_eq!(resp.status, 403, "{from}"),
            other => panic!("{from}: {other:?}"),
        }
    }
    assert!(reg.is_extension("1001"));
    assert!(!reg.is_extension("0800123456"));
}

#[test]
fn authorization_username_must_be_the_registered_extension() {
    let tmp = TempDir::new().unwrap();
    let reg = open(&tmp, NOW);
    let first = reg.handle_register(at(NOW), &register("1002", "u", 1, &[]), udp(PHONE));
    let ch = challenge_for(&first, Known::WwwAuthenticate, DigestAlgorithm::Md5);
    let auth = authorization(&ch, "1001", "pw1001", "REGISTER", 1);
    let resp = reg.handle_register(
        at(NOW),
        &register("1002", "u", 2, &["Contact: <sip:1002@10.0.0.5>", &auth]),
        udp(PHONE),
    );
    assert_eq!(resp.status, 403);
    assert!(reg.lookup(at(NOW), "1002").is_empty());
}

#[test]
fn per_extension_algorithms_override_the_default() {
    let tmp = TempDir::new().unwrap();
    let reg = open(&tmp, NOW);
    // 1002 is configured MD5-only (a phone without SHA-256); 1003 has an MD5 HA1.
    for (user, password) in [("1002", "pw1002"), ("1003", "pw1003")] {
        let first = reg.handle_register(at(NOW), &register(user, user, 1, &[]), udp(PHONE));
        let algs: Vec<_> = challenges(&first, Known::WwwAuthenticate)
            .iter()
            .map(|c| c.algorithm)
            .collect();
        assert_eq!(algs, [DigestAlgorithm::Md5], "{user}");
        let contact = format!("Contact: <sip:{user}@10.0.0.5>");
        let resp = login(
            &reg,
            NOW,
            udp(PHONE),
            (user, password),
            DigestAlgorithm::Md5,
            (user, 3),
            &[&contact],
        );
        assert_eq!(resp.status, 200, "{user}");
    }
}

#[test]
fn malformed_credentials_are_a_bad_request() {
    let tmp = TempDir::new().unwrap();
    let reg = open(&tmp, NOW);
    let resp = reg.handle_register(
        at(NOW),
        &register(
            "1001",
            "bad",
            1,
            &[r#"Authorization: Digest username="1001", realm"#],
        ),
        udp(PHONE),
    );
    assert_eq!(resp.status, 400);
    // A scheme we do not speak is not malformed: the client just gets a challenge.
    let resp = reg.handle_register(
        at(NOW),
        &register("1001", "bad", 2, &["Authorization: Basic MTAwMTpwdw=="]),
        udp(PHONE),
    );
    assert_eq!(resp.status, 401);
}

#[test]
fn forged_packets_cannot_ban_a_registered_phone_or_a_caller() {
    let tmp = TempDir::new().unwrap();
    let reg = open(&tmp, NOW);
    let phone = udp(PHONE);
    let phone_ip = phone.addr.ip();
    let ok = login(
        &reg,
        NOW,
        phone,
        ("1001", "pw1001"),
        DigestAlgorithm::Md5,
        ("p", 1),
        &[CONTACT],
    );
    assert_eq!(ok.status, 200);
    // A scanner User-Agent and wrong passwords from the phone's address, as a forger
    // would send them: dropped and refused, but nothing is banned.
    let sec = reg.security();
    assert_eq!(
        sec.admit(at(NOW), phone_ip, Some("friendly-scanner")),
        Admission::Drop
    );
    for i in 0..5 {
        let wrong = login(
            &reg,
            NOW,
            phone,
            ("1001", "guess"),
            DigestAlgorithm::Md5,
            ("w", 10 * i + 1),
            &[CONTACT],
        );
        assert_eq!(wrong.status, 403);
    }
    assert!(sec.bans(at(NOW)).is_empty());
    assert_eq!(
        sec.admit(at(NOW), phone_ip, Some("Yealink")),
        Admission::Allow
    );

    // A caller that authenticated an INVITE is spared too, without a registration.
    let caller = udp("127.0.0.3:5060");
    let AuthVerdict::Reply(resp) = reg.authenticate_request(at(NOW), &invite("1002", &[]), caller)
    else {
        panic!("an INVITE without credentials passed");
    };
    let ch = challenge_for(&resp, Known::ProxyAuthenticate, DigestAlgorithm::Md5);
    let auth = authorization(&ch, "1002", "pw1002", "INVITE", 1);
    assert!(matches!(
        reg.authenticate_request(at(NOW), &invite("1002", &[&auth]), caller),
        AuthVerdict::Authenticated { .. }
    ));
    sec.admit(at(NOW), caller.addr.ip(), Some("sipvicious"));
    assert!(sec.bans(at(NOW)).is_empty());

    // Once the phone has unregistered, its address is an address like any other.
    let gone = login(
        &reg,
        NOW,
        phone,
        ("1001", "pw1001"),
        DigestAlgorithm::Md5,
        ("p", 100),
        &["Contact: *", "Expires: 0"],
    );
    assert_eq!(gone.status, 200);
    sec.admit(at(NOW), phone_ip, Some("friendly-scanner"));
    let banned: Vec<_> = sec.bans(at(NOW)).into_iter().map(|(ip, _)| ip).collect();
    assert_eq!(banned, vec![phone_ip]);
    // Registrations are protected again after a restart.
    drop(reg);
    let reg = open(&tmp, NOW);
    assert!(reg.security().unban(phone_ip));
    let ok = login(
        &reg,
        NOW,
        phone,
        ("1001", "pw1001"),
        DigestAlgorithm::Md5,
        ("p", 200),
        &[CONTACT],
    );
    assert_eq!(ok.status, 200);
    drop(reg);
    let reg = open(&tmp, NOW + 1);
    reg.security()
        .admit(at(NOW + 1), phone_ip, Some("friendly-scanner"));
    assert!(reg.security().bans(at(NOW + 1)).is_empty());
}
