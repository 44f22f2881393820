//! The media engine as a caller meets it, over real sockets on loopback: SIPp does the
//! signalling and a media phone owned by the test (tests/common/media_phone.rs) talks
//! and listens where SIPp's SDP points. Keys pressed as RFC 4733 events or as in-band
//! tones reach the dialplan once each and in order, voice and keys cross from one
//! phone to the other once each, a prompt is heard for as long as
//! its files last, a recording holds what the caller said after the beep, and a party
//! on hold hears music until resumed. The plan is tests/media_flows/dialplans/default.lua;
//! the SIPp scenarios are beside it.

mod common;

use common::media_phone::{
    FRAME, Frame, MediaPhone, RATE, rms, samples, strongest_tone, switchboard_rtp, tone_share,
};
use common::{
    Callee, ONE_CALL_TIMEOUT, SIPP_EXTENSIONS, Server, assert_first_call_becomes,
    assert_sipp_succeeded, free_port, one_call_callee, only_cdr, wait_until,
};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::thread::JoinHandle;
use std::time::Duration;
use switchboard::media::codec::{CodecKind, Decoder, Encoder};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// A 20 ms frame whose RMS is above this (about -40 dBFS) is not silence.
const SILENCE_RMS: f64 = 330.0;

/// A server routing with the test plan, prompts and hold music from the shipped sounds.
fn server() -> Server {
    let extra = format!(
        "{SIPP_EXTENSIONS}[media]\nsounds_dir = \"{ROOT}/sounds\"\nmoh_dir = \"{ROOT}/sounds/moh\"\n"
    );
    Server::start_with_dialplans(&extra, &Path::new(ROOT).join("tests/media_flows/dialplans"))
}

/// A SIPp caller (1000) running `scenario` from tests/media_flows once towards
/// `number`, pausing `pause_ms` where the scenario pauses, with `-set` variables; on
/// another thread, so the test's media phone can talk meanwhile.
fn call(
    server: &Server,
    scenario: &str,
    number: &str,
    pause_ms: u32,
    vars: &[(&str, &str)],
) -> JoinHandle<Output> {
    let mut cmd = common::sipp(
        &[
            "-sf",
            &format!("{ROOT}/tests/media_flows/{scenario}"),
            "-p",
            &free_port().to_string(),
            "-mp",
            &free_port().to_string(),
            "-s",
            number,
            "-au",
            "1000",
            "-ap",
            "pw1000",
            "-set",
            "caller",
            "1000",
            "-d",
            &pause_ms.to_string(),
            "-m",
            "1",
            "-timeout",
            ONE_CALL_TIMEOUT,
            "-timeout_error",
        ],
        server,
    );
    for (name, value) in vars {
        cmd.args(["-set", name, value]);
    }
    std::thread::spawn(move || cmd.output().expect("run the SIPp caller"))
}

/// A call whose SDP names `phone`, offering `formats` (see caller.xml).
fn call_with_phone(
    server: &Server,
    scenario: &str,
    number: &str,
    pause_ms: u32,
    phone: &MediaPhone,
    formats: &str,
) -> JoinHandle<Output> {
    let port = phone.port.to_string();
    call(
        server,
        scenario,
        number,
        pause_ms,
        &[("rtp_port", &port), ("formats", formats)],
    )
}

/// A SIPp callee registered as 1001 running `scenario` from tests/media_flows for one
/// call (common's callee helpers take scenarios from tests/sipp, hence the `..`).
fn callee_from(server: &Server, scenario: &str, options: &[&str]) -> Callee {
    one_call_callee(server, &format!("../media_flows/{scenario}"), options)
}

fn joined(caller: JoinHandle<Output>) -> Output {
    caller.join().expect("the SIPp caller's thread")
}

#[derive(Clone, Copy)]
enum Keys {
    Rfc4733,
    InBand,
}

/// The caller presses 1 0 0 1 # on the plan's number that reads four keys and dials
/// them: the callee 1001 must be reached and bridged, and the CDR must list every key
/// once, in order.
fn keys_dial_the_callee(number: &str, formats: &str, keys: Keys) {
    let server = server();
    let mut callee = callee_from(&server, "callee_keys.xml", &[]);
    let mut phone = MediaPhone::new();
    let caller = call_with_phone(&server, "caller.xml", number, 5000, &phone, formats);
    phone.send_to(switchboard_rtp(&server, "a_leg"));
    phone.send_silence(Duration::from_millis(300));
    for key in "1001#".chars() {
        match keys {
            Keys::Rfc4733 => phone.press_key(key, Duration::from_millis(100)),
            Keys::InBand => phone.press_key_inband(key),
        }
        phone.send_silence(Duration::from_millis(140));
    }
    assert_first_call_becomes(&server, "the keys did not reach 1001", |call| {
        call["state"] == "bridged"
    });
    assert_sipp_succeeded(&joined(caller), "the caller's call failed");
    callee.finish(Duration::from_secs(40));
    let cdr = only_cdr(&server);
    assert_eq!(cdr["disposition"], "answered", "{cdr}");
    assert_eq!(cdr["dtmf"], "1001#", "each key once, in order: {cdr}");
}

#[test]
fn rfc_4733_keys_reach_the_plan_once_each_and_in_order() {
    keys_dial_the_callee("701", "0 101", Keys::Rfc4733);
}

#[test]
fn in_band_keys_are_heard_on_a_leg_without_telephone_event() {
    keys_dial_the_callee("702", "0", Keys::InBand);
}

/// Frames of audio that are not silence.
fn voiced(pcm: &[i16]) -> usize {
    pcm.chunks(FRAME).filter(|f| rms(f) > SILENCE_RMS).count()
}

#[test]
fn the_caller_hears_the_digit_prompts_and_then_switchboard_hangs_up() {
    // What the plan says: the shipped prompts, each padded to whole 20 ms frames (the
    // speaker starts every prompt on a frame), through PCMU.
    let mut expected = Vec::new();
    for digit in ["1", "0", "0", "2"] {
        let path = Path::new(ROOT).join(format!("sounds/en/digits/{digit}.wav"));
        let wav = switchboard::media::wav::read(&path).expect("a shipped prompt");
        assert_eq!((wav.sample_rate, wav.channels), (RATE, 1), "{path:?}");
        expected.extend_from_slice(&wav.samples);
        expected.resize(expected.len().div_ceil(FRAME) * FRAME, 0);
    }
    let expected = through_pcmu(&expected);

    let server = server();
    let phone = MediaPhone::new();
    let caller = call_with_phone(&server, "caller_until_bye.xml", "743", 0, &phone, "0 101");
    let switchboard = switchboard_rtp(&server, "a_leg");
    assert_sipp_succeeded(
        &joined(caller),
        "the call failed, or switchboard did not hang up after the prompts",
    );
    let frames = phone.audio();
    assert_from(&frames, switchboard);
    let heard: Vec<i16> = frames.iter().flat_map(|f| f.pcm.iter().copied()).collect();
    let ms = |n: usize| n as u64 * 1000 / u64::from(RATE);
    assert_eq!(
        ms(heard.len()),
        ms(expected.len()),
        "heard {} ms of audio for {} ms of prompts",
        ms(heard.len()),
        ms(expected.len())
    );
    let (voiced_heard, voiced_expected) = (voiced(&heard), voiced(&expected));
    assert!(
        voiced_heard * 10 >= voiced_expected * 9 && voiced_heard <= voiced_expected + 2,
        "{voiced_heard} frames not silent, the prompts have {voiced_expected}"
    );
    let correlation = correlation(&heard, &expected);
    assert!(
        correlation > 0.9,
        "what the caller heard is not the prompts (correlation {correlation:.2})"
    );
    // Played as they last, not in a burst.
    let span = arrival_span(&frames).as_secs_f64();
    let length = expected.len() as f64 / f64::from(RATE);
    assert!(
        span > length * 0.8 && span < length * 1.3,
        "{:.2} s of prompts arrived over {span:.2} s",
        length
    );
}

/// Every frame came from `switchboard`'s port for the leg (symmetric RTP, which
/// phones behind NAT rely on).
fn assert_from(frames: &[Frame], switchboard: SocketAddr) {
    if let Some(stray) = frames.iter().find(|f| f.from != switchboard) {
        panic!(
            "audio from {}, not from switchboard's {switchboard}",
            stray.from
        );
    }
}

/// `pcm` as a PCMU phone hears it.
fn through_pcmu(pcm: &[i16]) -> Vec<i16> {
    let mut encoder = Encoder::new(CodecKind::Pcmu).expect("encoder");
    let mut decoder = Decoder::new(CodecKind::Pcmu).expect("decoder");
    let (mut payload, mut out) = ([0u8; FRAME], [0i16; FRAME]);
    let mut result = Vec::with_capacity(pcm.len());
    for frame in pcm.chunks(FRAME) {
        let n = encoder.encode(frame, &mut payload).expect("encode");
        let m = decoder.decode(&payload[..n], &mut out).expect("decode");
        result.extend_from_slice(&out[..m]);
    }
    result
}

/// Normalized correlation of two signals over their common length.
fn correlation(a: &[i16], b: &[i16]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        return 0.0;
    }
    ab / (aa * bb).sqrt()
}

/// From the first frame's arrival to the end of the last.
fn arrival_span(frames: &[Frame]) -> Duration {
    match (frames.first(), frames.last()) {
        (Some(first), Some(last)) => last.at - first.at + Duration::from_millis(20),
        _ => Duration::ZERO,
    }
}

#[test]
fn a_recording_holds_what_the_caller_said_after_the_beep() {
    let server = server();
    let mut phone = MediaPhone::new();
    let caller = call_with_phone(&server, "caller_until_bye.xml", "744", 0, &phone, "0 101");
    phone.send_to(switchboard_rtp(&server, "a_leg"));
    // A caller talks once the beep is over: audio came, and none for 200 ms.
    let beep_over = wait_until(Duration::from_secs(10), || {
        phone
            .audio()
            .last()
            .is_some_and(|f| phone.now() > f.at + Duration::from_millis(200))
    });
    assert!(beep_over, "no beep came, or it never ended");
    let talking = phone.now();
    phone.send_tone(1000.0, 8000.0, Duration::from_secs(2));
    phone.press_key('#', Duration::from_millis(100));
    assert_sipp_succeeded(
        &joined(caller),
        "the call failed, or switchboard did not hang up after the recording",
    );

    let frames = phone.audio();
    assert!(
        frames.iter().all(|f| f.at < talking),
        "switchboard said something after the beep"
    );
    let beep: Vec<i16> = frames.iter().flat_map(|f| f.pcm.iter().copied()).collect();
    let beep_ms = beep.len() as u64 * 1000 / u64::from(RATE);
    let share = tone_share(&beep, 1000.0);
    assert!(
        (200..=600).contains(&beep_ms) && share > 0.8,
        "the beep: {beep_ms} ms, {share:.2} of it at 1 kHz"
    );

    let file = server.dir.path().join("data/recordings/t/msg.wav");
    let wav = switchboard::media::wav::read(&file)
        .unwrap_or_else(|e| panic!("no recording at {}: {e}", file.display()));
    assert_eq!((wav.sample_rate, wav.channels), (8000, 1));
    let secs = wav.duration().as_secs_f64();
    assert!(
        (secs - 2.0).abs() <= 0.3,
        "the recording lasts {secs:.2} s for 2 s of talk"
    );
    let n = wav.samples.len();
    let share = tone_share(&wav.samples[n / 4..3 * n / 4], 1000.0);
    assert!(
        share > 0.8,
        "the recording's middle is not the caller's 1 kHz tone ({share:.2} of it)"
    );
}

/// How long the caller keeps the call on hold (caller_hold_resume.xml's pause).
const HOLD: Duration = Duration::from_secs(4);
/// How long the resumed call lasts before the caller hangs up (in the scenario).
const AFTER_RESUME: Duration = Duration::from_secs(2);

#[test]
fn a_party_on_hold_hears_music_until_resumed_and_then_the_other_phone_again() {
    let server = server();
    let phone = MediaPhone::new();
    // The callee's SDP names one media phone, the caller's another, which says a
    // 600 Hz tone all along, on hold too (switchboard must not let it through then).
    let mut callee = callee_from(
        &server,
        "callee_hold.xml",
        &["-set", "rtp_port", &phone.port.to_string()],
    );
    let mut talker = MediaPhone::new();
    let talker_port = talker.port.to_string();
    let caller = call(
        &server,
        "caller_hold_resume.xml",
        "1001",
        HOLD.as_millis() as u32,
        &[("rtp_port", &talker_port)],
    );
    let switchboard = switchboard_rtp(&server, "b_leg");
    talker.send_to(switchboard_rtp(&server, "a_leg"));
    let talking = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let still = talking.clone();
    let voice = std::thread::spawn(move || {
        while still.load(std::sync::atomic::Ordering::Relaxed) {
            talker.send_tone(600.0, 8000.0, Duration::from_millis(100));
        }
    });
    assert_sipp_succeeded(&joined(caller), "the caller's hold or resume failed");
    talking.store(false, std::sync::atomic::Ordering::Relaxed);
    voice.join().expect("the caller's voice");
    callee.finish(Duration::from_secs(40));

    let frames = phone.audio();
    assert!(!frames.is_empty(), "the callee heard nothing");
    assert_from(&frames, switchboard);
    // Each 20 ms frame is the caller's voice or the hold music.
    let is_voice = |f: &Frame| tone_share(&f.pcm, 600.0) > 0.8;
    let first_music = frames
        .iter()
        .position(|f| !is_voice(f) && rms(&f.pcm) > SILENCE_RMS);
    let Some(first_music) = first_music else {
        panic!("the held callee heard no music");
    };
    let after = frames[first_music..].iter().position(&is_voice);
    let Some(after) = after else {
        panic!("the callee never heard the caller again after the hold");
    };
    let held = &frames[first_music..first_music + after];
    if let Some(gap) = held
        .windows(2)
        .map(|w| w[1].at - w[0].at)
        .find(|gap| *gap > Duration::from_millis(300))
    {
        panic!("the music stopped for {gap:?} during the hold");
    }
    let span = arrival_span(held);
    assert!(
        span > HOLD - Duration::from_millis(600) && span < HOLD + Duration::from_millis(600),
        "music for {span:?} during a hold of {HOLD:?}"
    );
    assert!(
        frames[..first_music].iter().filter(|f| is_voice(f)).count() > 5,
        "the callee did not hear the caller before the hold"
    );
    let resumed = &frames[first_music + after..];
    let voiced = resumed.iter().filter(|f| is_voice(f)).count();
    assert!(
        voiced * 10 >= resumed.len() * 9 && arrival_span(resumed) > AFTER_RESUME / 2,
        "after the resume the callee heard the caller in {voiced} of {} frames",
        resumed.len()
    );

    let music: Vec<i16> = held.iter().flat_map(|f| f.pcm.iter().copied()).collect();
    let level = rms(&music);
    assert!(level > 1000.0, "the music is too quiet: RMS {level:.0}");
    let windows: Vec<&[i16]> = music
        .chunks_exact(samples(Duration::from_millis(200)))
        .collect();
    let silent = windows.iter().filter(|w| rms(w) < SILENCE_RMS).count();
    assert!(
        silent * 10 <= windows.len(),
        "{silent} of {} 200 ms windows of the music are silent",
        windows.len()
    );
    // Music, not a tone: no single frequency carries it (a tone's holds nearly all of
    // its energy), and its strongest note changes (the shipped piece's bass gives way
    // to its arpeggio within its first 3 s).
    let strongest: Vec<(f64, f64)> = windows.iter().map(|w| strongest_tone(w)).collect();
    let share = strongest.iter().map(|s| s.1).sum::<f64>() / strongest.len() as f64;
    let notes = strongest
        .iter()
        .fold(Vec::<f64>::new(), |mut notes, &(hz, _)| {
            if notes.iter().all(|n| (n - hz).abs() > 20.0) {
                notes.push(hz);
            }
            notes
        });
    assert!(
        share < 0.8 && notes.len() > 1,
        "the hold music sounds like a tone: its strongest frequencies {notes:?} hold {share:.2} of it"
    );
    let cdr = only_cdr(&server);
    assert_eq!(
        (&cdr["disposition"], &cdr["hangup_by"]),
        (&"answered".into(), &"caller".into()),
        "{cdr}"
    );
}

/// The RFC 4733 keys among `received`: one per event (its packets share a timestamp),
/// in order.
fn keys_in(received: &[common::media_phone::Received]) -> String {
    let mut keys = String::new();
    let mut last = None;
    for p in received.iter().filter(|p| p.header.payload_type == 101) {
        let Some(event) = switchboard::media::dtmf::TelephoneEvent::parse(&p.payload) else {
            continue;
        };
        if last != Some(p.header.timestamp) {
            last = Some(p.header.timestamp);
            keys.extend(switchboard::media::dtmf::event_to_digit(event.event));
        }
    }
    keys
}

#[test]
fn voice_and_keys_cross_from_one_phone_to_the_other_once_each() {
    let server = server();
    let callee_phone = MediaPhone::new();
    let callee_port = callee_phone.port.to_string();
    let mut callee = callee_from(
        &server,
        "callee_talks.xml",
        &["-set", "rtp_port", &callee_port, "-set", "formats", "0 101"],
    );
    let mut phone = MediaPhone::new();
    let caller = call_with_phone(&server, "caller.xml", "1001", 3000, &phone, "0 101");
    // The callee's leg has a port once the call is bridged: talk from then on.
    switchboard_rtp(&server, "b_leg");
    phone.send_to(switchboard_rtp(&server, "a_leg"));
    phone.send_tone(1000.0, 8000.0, Duration::from_millis(800));
    for key in ['4', '2', '4'] {
        phone.press_key(key, Duration::from_millis(100));
        phone.send_tone(1000.0, 8000.0, Duration::from_millis(200));
    }
    assert_sipp_succeeded(&joined(caller), "the caller's call failed");
    callee.finish(Duration::from_secs(40));

    // The other phone heard the caller's voice, and each key once, in order, as
    // events in its own stream (not as an INFO: its scenario would refuse one).
    let heard: Vec<i16> = callee_phone
        .audio()
        .iter()
        .flat_map(|f| f.pcm.iter().copied())
        .collect();
    let loud: Vec<i16> = heard.into_iter().skip_while(|s| s.abs() < 2000).collect();
    assert!(
        loud.len() > samples(Duration::from_millis(500)),
        "the callee heard {} loud samples",
        loud.len()
    );
    let share = tone_share(&loud[..samples(Duration::from_millis(500))], 1000.0);
    assert!(
        share > 0.8,
        "the callee heard the 1 kHz voice at {share:.2}"
    );
    assert_eq!(keys_in(&callee_phone.received()), "424");
    let cdr = only_cdr(&server);
    assert_eq!(cdr["dtmf"], "424", "{cdr}");
    assert_eq!(
        (
            &cdr["caller_codec"],
            &cdr["callee_codec"],
            &cdr["media_path"]
        ),
        (&"PCMU".into(), &"PCMU".into(), &"relayed".into()),
        "{cdr}"
    );
}
