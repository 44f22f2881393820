//! Every RFC 4475 / RFC 5118 torture message, byte-exact from tests/fixtures, through
//! the parser and the UAS checks: the outcome must be the one torture-expect.tsv names.

mod common;

use bytes::Bytes;
use common::expectations;
use switchboard::sip::checks::{Capabilities, check_request};
use switchboard::sip::{Message, ParseError, parse_datagram};

/// What the server would do: a status code, "ok" for accepted, "drop" for silence.
fn outcome(bytes: Vec<u8>) -> String {
    match parse_datagram(Bytes::from(bytes)) {
        Ok(Message::Request(req)) => match check_request(&req, &Capabilities::pbx()) {
            Ok(()) if req.method == switchboard::sip::Method::Options => "200".into(),
            Ok(()) => "ok".into(),
            Err(r) => r.status.to_string(),
        },
        Ok(Message::Response(_)) => "drop".into(),
        Err(ParseError::Reject { status, .. }) => status.to_string(),
        Err(ParseError::Drop(_)) => "drop".into(),
    }
}

#[test]
fn every_torture_message_gets_its_expected_handling() {
    let rows = expectations();
    assert_eq!(rows.len(), 61, "49 RFC 4475 + 12 RFC 5118 messages");
    let mut failures = Vec::new();
    for (path, expect) in rows {
        let bytes = std::fs::read(&path).expect("fixture");
        let got = outcome(bytes);
        let ok = got == expect || (expect == "ok" && (got == "ok" || got == "200"));
        if !ok {
            failures.push(format!("{path}: expected {expect}, got {got}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn archived_rfc5118_messages_with_bare_lf_parse() {
    // The RFC's archive uses bare LF line ends; the valid ones whose Content-Length
    // matches must still parse.
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/conformance/rfc5118/archive"
    );
    for name in [
        "ipv6-good.dat",
        "port-ambiguous.dat",
        "via-received-param-no-delim.dat",
        "ipv6-bug-abnf-3-colons.dat",
    ] {
        let bytes = std::fs::read(format!("{dir}/{name}")).expect("fixture");
        assert!(
            matches!(parse_datagram(Bytes::from(bytes)), Ok(Message::Request(_))),
            "{name}"
        );
    }
}

#[test]
fn fixtures_are_byte_exact_copies() {
    // SHA256SUMS ships with the fixtures; a changed byte (a CRLF lost in a checkout)
    // would make the tests above meaningless.
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/conformance");
    let sums = std::fs::read_to_string(format!("{dir}/SHA256SUMS")).expect("sums");
    let mut checked = 0;
    for line in sums.lines() {
        let (sum, file) = line.split_once("  ").expect("sha256sum format");
        let bytes = std::fs::read(format!("{dir}/{file}")).expect("listed file");
        use sha2::Digest;
        assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), sum, "{file}");
        checked += 1;
    }
    assert!(checked >= 61);
}
