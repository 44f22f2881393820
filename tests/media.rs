//! The media engine with real phones: baresip pairs in network namespaces that share
//! no codec each hear the other's tone, at the right frequency, through switchboard's
//! transcoding; the CDR says which codecs each leg used and that the call transcoded.
//! Needs root (network namespaces) and baresip with its g711, g722 and opus modules.

mod common;

use common::baresip::{Lab, PhoneSpec, assert_tone};

/// A call from a phone that offers only `caller_codecs` to one that offers only
/// `callee_codecs`: both hear each other, and the CDR names the codecs.
fn transcoded_call(caller_codecs: &str, callee_codecs: &str, legs: (&str, &str)) {
    let lab = Lab::start("");
    let caller = PhoneSpec {
        user: "1000",
        codecs: caller_codecs,
        tone_hz: 1000.0,
    };
    let callee = PhoneSpec {
        user: "1001",
        codecs: callee_codecs,
        tone_hz: 600.0,
    };
    let (caller, callee) = lab.call(&caller, &callee, 8);
    assert_tone(&callee.heard(), "the callee", 1000.0);
    assert_tone(&caller.heard(), "the caller", 600.0);
    let cdr = common::only_cdr(&lab.server);
    assert_eq!(cdr["disposition"], "answered", "{cdr}");
    assert_eq!(cdr["caller_codec"], legs.0, "{cdr}");
    assert_eq!(cdr["callee_codec"], legs.1, "{cdr}");
    assert_eq!(cdr["media_path"], "transcoded", "{cdr}");
}

#[test]
fn pcmu_and_pcma_phones_hear_each_other() {
    transcoded_call("PCMU", "PCMA", ("PCMU", "PCMA"));
}

#[test]
fn pcmu_and_g722_phones_hear_each_other() {
    transcoded_call("PCMU", "G722/16000/1", ("PCMU", "G722"));
}

#[test]
fn pcma_and_opus_phones_hear_each_other() {
    transcoded_call("PCMA", "opus/48000/2", ("PCMA", "opus"));
}

#[test]
fn phones_sharing_a_codec_are_relayed_not_transcoded() {
    let lab = Lab::start("");
    let caller = PhoneSpec {
        user: "1000",
        codecs: "G722/16000/1,PCMU",
        tone_hz: 1000.0,
    };
    let callee = PhoneSpec {
        user: "1001",
        codecs: "G722/16000/1,PCMA",
        tone_hz: 600.0,
    };
    let (caller, callee) = lab.call(&caller, &callee, 6);
    assert_tone(&callee.heard(), "the callee", 1000.0);
    assert_tone(&caller.heard(), "the caller", 600.0);
    let cdr = common::only_cdr(&lab.server);
    assert_eq!(
        (
            &cdr["caller_codec"],
            &cdr["callee_codec"],
            &cdr["media_path"]
        ),
        (&"G722".into(), &"G722".into(), &"relayed".into()),
        "{cdr}"
    );
}
