//! Phones register on the default settings: no extension here sets `auth_algorithms`,
//! so they meet the default `[sip] auth_algorithms`. baresip 1.0 (Debian 12) gives up
//! on a 401 that carries any SHA-256 challenge, even beside an MD5 one, and SIPp reads
//! only the first challenge and knows only MD5; both register on the default.

mod common;

use common::Server;
use common::baresip::{Lab, PhoneSpec};

#[test]
fn baresip_registers_on_the_default_auth_algorithms() {
    let lab = Lab::start_with_default_algorithms("");
    let phone = lab.registered_phone(&PhoneSpec {
        user: "1000",
        codecs: "PCMU",
        tone_hz: 440.0,
    });
    assert!(
        !phone.log().contains("Function not implemented"),
        "{}",
        phone.log()
    );
}

#[test]
fn sipp_registers_on_the_default_auth_algorithms() {
    let server = Server::start("[extensions.1000]\npassword = \"pw1000\"\n");
    let out = common::sipp_register(&server, ("127.0.0.1", "u1"), ("1000", "pw1000"), 5099);
    assert!(
        out.status.success(),
        "SIPp did not register:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
