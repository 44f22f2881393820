//! The four state machines, their timers and matching, in virtual time: every
//! instant is a fixed base plus a duration, and timers fire only when a test calls
//! `handle_timeout`.

use super::*;
use crate::sip::{Known, Message, parse_datagram, reason_phrase};
use std::time::Duration;

fn udp() -> Peer {
    Peer::new(TransportKind::Udp, "192.0.2.1:5060".parse().unwrap())
}

fn tcp() -> Peer {
    Peer {
        conn: Some(7),
        ..Peer::new(TransportKind::Tcp, "192.0.2.1:40123".parse().unwrap())
    }
}

fn parse_request(text: &str) -> Request {
    match parse_datagram(Bytes::from(text.to_owned())) {
        Ok(Message::Request(r)) => r,
        other => panic!("{other:?}"),
    }
}

/// A request whose top Via is `via`; Call-ID and tags are fixed so RFC 2543 matching
/// sees the same request each time.
fn request_via(method: &str, via: &str) -> Request {
    parse_request(&format!(
        "{method} sip:bob@example.com SIP/2.0\r\n\
         Via: {via}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@example.com>;tag=f1\r\n\
         To: <sip:bob@example.com>\r\n\
         Call-ID: c1@example.com\r\n\
         CSeq: 1 {method}\r\n\
         Content-Length: 0\r\n\r\n"
    ))
}

fn request(method: &str, branch: &str) -> Request {
    request_via(
        method,
        &format!("SIP/2.0/UDP 192.0.2.1:5060;branch={branch}"),
    )
}

fn with_to_tag(mut req: Request, tag: &str) -> Request {
    req.headers
        .set(Known::To, format!("<sip:bob@example.com>;tag={tag}"));
    req
}

fn reply(req: &Request, status: u16) -> Response {
    let mut r = Response::to_request(req, status, reason_phrase(status));
    if status > 100 {
        r.set_to_tag("t1");
    }
    r
}

/// Virtual time: `at(ms)` is the base plus `ms` milliseconds.
struct Clock(Instant);

impl Clock {
    fn new() -> Clock {
        Clock(Instant::now())
    }

    fn at(&self, ms: u64) -> Instant {
        self.0 + Duration::from_millis(ms)
    }

    fn ms(&self, t: Instant) -> u64 {
        (t - self.0).as_millis() as u64
    }
}

fn drain(layer: &mut TransactionLayer) -> Vec<Output> {
    std::iter::from_fn(|| layer.poll_output()).collect()
}

fn transmits(outs: &[Output]) -> Vec<&Transmit> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Transmit(t) => Some(t),
            Output::Event(_) => None,
        })
        .collect()
}

fn events(outs: &[Output]) -> Vec<&Event> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e),
            Output::Transmit(_) => None,
        })
        .collect()
}

fn first_line(t: &Transmit) -> String {
    let text = String::from_utf8_lossy(&t.bytes);
    text.lines().next().unwrap_or("").to_owned()
}

/// Fires timers in order up to `end`, returning each output with the millisecond it
/// happened at.
fn run_until(layer: &mut TransactionLayer, clock: &Clock, end_ms: u64) -> Vec<(u64, Output)> {
    let mut log = Vec::new();
    while let Some(t) = layer.poll_timeout() {
        if t > clock.at(end_ms) {
            break;
        }
        layer.handle_timeout(t);
        log.extend(drain(layer).into_iter().map(|o| (clock.ms(t), o)));
    }
    log
}

fn transmit_times(log: &[(u64, Output)]) -> Vec<u64> {
    log.iter()
        .filter(|(_, o)| matches!(o, Output::Transmit(_)))
        .map(|(t, _)| *t)
        .collect()
}

fn event_log(log: &[(u64, Output)]) -> Vec<(u64, Event)> {
    log.iter()
        .filter_map(|(t, o)| match o {
            Output::Event(e) => Some((*t, e.clone())),
            Output::Transmit(_) => None,
        })
        .collect()
}

fn layer() -> TransactionLayer {
    TransactionLayer::new(TimerConfig::default())
}

#[test]
fn new_branches_are_rfc3261_and_distinct() {
    let (a, b) = (new_branch(), new_branch());
    assert_ne!(a, b);
    let via = request_via("OPTIONS", &format!("SIP/2.0/UDP h;branch={a}"))
        .top_via()
        .unwrap();
    assert!(via.has_rfc3261_branch());
}

// ---- INVITE client ----

#[test]
fn invite_client_timer_a_doubles_until_timer_b() {
    let (clock, mut l) = (Clock::new(), layer());
    let invite = request("INVITE", "z9hG4bKa1");
    let key = l.send_request(clock.at(0), udp(), invite.clone()).unwrap();
    let outs = drain(&mut l);
    assert_eq!(transmits(&outs).len(), 1);
    assert_eq!(transmits(&outs)[0].bytes, Bytes::from(invite.to_bytes()));
    assert_eq!(transmits(&outs)[0].key, Some(key));
    assert_eq!(l.state(key), Some(State::Calling));

    let log = run_until(&mut l, &clock, 60_000);
    assert_eq!(transmit_times(&log), [500, 1500, 3500, 7500, 15500, 31500]);
    assert_eq!(
        event_log(&log),
        [
            (
                32_000,
                Event::Timeout {
                    key,
                    timer: Timer::B
                }
            ),
            (32_000, Event::Terminated { key })
        ]
    );
    assert!(l.is_empty());
    assert_eq!(l.poll_timeout(), None);
}

#[test]
fn invite_client_provisional_stops_a_and_b_then_accepts_every_2xx_until_m() {
    let (clock, mut l) = (Clock::new(), layer());
    let invite = request("INVITE", "z9hG4bKa2");
    let key = l.send_request(clock.at(0), udp(), invite.clone()).unwrap();
    drain(&mut l);

    let ringing = reply(&invite, 180);
    assert_eq!(
        l.handle_response(clock.at(200), ringing.clone()),
        Disposition::Delivered(Some(key))
    );
    assert_eq!(
        events(&drain(&mut l)),
        [&Event::Response {
            key,
            response: ringing
        }]
    );
    assert_eq!(l.state(key), Some(State::Proceeding));
    assert_eq!(l.poll_timeout(), None, "A and B stop in Proceeding");

    let ok = reply(&invite, 200);
    assert_eq!(
        l.handle_response(clock.at(5_000), ok.clone()),
        Disposition::Delivered(Some(key))
    );
    assert_eq!(l.state(key), Some(State::Accepted));
    let outs = drain(&mut l);
    assert!(transmits(&outs).is_empty(), "the ACK for a 2xx is the TU's");
    assert_eq!(
        events(&outs),
        [&Event::Response {
            key,
            response: ok.clone()
        }]
    );

    // A retransmission, or another fork's 2xx, reaches the TU too (RFC 6026).
    let mut fork = ok.clone();
    fork.headers
        .set(Known::To, "<sip:bob@example.com>;tag=other");
    assert_eq!(
        l.handle_response(clock.at(5_500), ok.clone()),
        Disposition::Delivered(Some(key))
    );
    assert_eq!(
        l.handle_response(clock.at(5_600), fork),
        Disposition::Delivered(Some(key))
    );
    assert_eq!(
        l.handle_response(clock.at(5_700), ringing_after(&invite)),
        Disposition::Absorbed
    );
    assert_eq!(events(&drain(&mut l)).len(), 2);

    let log = run_until(&mut l, &clock, 60_000);
    assert_eq!(event_log(&log), [(37_000, Event::Terminated { key })]);
    assert_eq!(
        l.handle_response(clock.at(38_000), ok),
        Disposition::Dropped
    );
}

fn ringing_after(invite: &Request) -> Response {
    reply(invite, 180)
}

#[test]
fn invite_client_acks_each_non_2xx_until_timer_d() {
    let (clock, mut l) = (Clock::new(), layer());
    let mut invite = request("INVITE", "z9hG4bKa3");
    invite
        .headers
        .push(Known::Route, "<sip:proxy.example.com;lr>");
    let key = l.send_request(clock.at(0), udp(), invite.clone()).unwrap();
    drain(&mut l);

    let busy = reply(&invite, 486);
    assert_eq!(
        l.handle_response(clock.at(1_000), busy.clone()),
        Disposition::Delivered(Some(key))
    );
    let outs = drain(&mut l);
    let ack = Bytes::from(ack_for(&invite, &busy).to_bytes());
    assert_eq!(
        transmits(&outs),
        [&Transmit {
            dest: udp(),
            bytes: ack.clone(),
            key: Some(key)
        }]
    );
    assert_eq!(
        events(&outs),
        [&Event::Response {
            key,
            response: busy.clone()
        }]
    );
    let text = String::from_utf8_lossy(&ack).into_owned();
    assert!(text.starts_with("ACK sip:bob@example.com SIP/2.0\r\n"));
    assert!(text.contains("\r\nTo: <sip:bob@example.com>;tag=t1\r\n"));
    assert!(text.contains("\r\nRoute: <sip:proxy.example.com;lr>\r\n"));
    assert!(text.contains("\r\nCSeq: 1 ACK\r\n"));
    assert_eq!(l.state(key), Some(State::Completed));

    // The 486 again: our ACK was lost, so it is repeated; the TU hears nothing.
    assert_eq!(
        l.handle_response(clock.at(1_500), busy.clone()),
        Disposition::Absorbed
    );
    let outs = drain(&mut l);
    assert_eq!(transmits(&outs).len(), 1);
    assert_eq!(transmits(&outs)[0].bytes, ack);
    assert!(events(&outs).is_empty());

    let log = run_until(&mut l, &clock, 60_000);
    assert!(
        transmit_times(&log).is_empty(),
        "no timer-driven ACK resends"
    );
    assert_eq!(event_log(&log), [(33_000, Event::Terminated { key })]);
    assert_eq!(
        l.handle_response(clock.at(34_000), busy),
        Disposition::Dropped
    );
}

#[test]
fn invite_client_over_tcp_never_retransmits_and_skips_timer_d() {
    let (clock, mut l) = (Clock::new(), layer());
    let invite = request("INVITE", "z9hG4bKa4");
    let key = l.send_request(clock.at(0), tcp(), invite.clone()).unwrap();
    drain(&mut l);
    assert_eq!(l.poll_timeout(), Some(clock.at(32_000)), "only Timer B");
    assert!(run_until(&mut l, &clock, 31_000).is_empty());

    l.handle_response(clock.at(31_000), reply(&invite, 603));
    let outs = drain(&mut l);
    assert_eq!(transmits(&outs).len(), 1, "the ACK");
    assert_eq!(transmits(&outs)[0].dest, tcp());
    assert!(matches!(
        events(&outs)[..],
        [Event::Response { .. }, Event::Terminated { .. }]
    ));
    assert!(l.is_empty());
    assert_eq!(l.state(key), None);
}

// ---- non-INVITE client ----

#[test]
fn non_invite_client_timer_e_caps_at_t2_until_timer_f() {
    let (clock, mut l) = (Clock::new(), layer());
    let key = l
        .send_request(clock.at(0), udp(), request("OPTIONS", "z9hG4bKb1"))
        .unwrap();
    assert_eq!(l.state(key), Some(State::Trying));
    drain(&mut l);
    let log = run_until(&mut l, &clock, 60_000);
    assert_eq!(
        transmit_times(&log),
        [
            500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
        ]
    );
    assert_eq!(
        event_log(&log),
        [
            (
                32_000,
                Event::Timeout {
                    key,
                    timer: Timer::F
                }
            ),
            (32_000, Event::Terminated { key })
        ]
    );
}

#[test]
fn non_invite_client_proceeding_repeats_every_t2_and_completed_absorbs_until_k() {
    let (clock, mut l) = (Clock::new(), layer());
    let bye = request("BYE", "z9hG4bKb2");
    let key = l.send_request(clock.at(0), udp(), bye.clone()).unwrap();
    drain(&mut l);
    assert_eq!(transmit_times(&run_until(&mut l, &clock, 600)), [500]);

    assert_eq!(
        l.handle_response(clock.at(700), reply(&bye, 100)),
        Disposition::Delivered(Some(key))
    );
    assert_eq!(l.state(key), Some(State::Proceeding));
    drain(&mut l);
    // The timer set before the 100 (at 1.5 s) still runs; after it, every T2.
    assert_eq!(
        transmit_times(&run_until(&mut l, &clock, 10_000)),
        [1500, 5500, 9500]
    );

    let ok = reply(&bye, 200);
    assert_eq!(
        l.handle_response(clock.at(10_000), ok.clone()),
        Disposition::Delivered(Some(key))
    );
    assert_eq!(l.state(key), Some(State::Completed));
    drain(&mut l);
    assert_eq!(
        l.handle_response(clock.at(12_000), ok),
        Disposition::Absorbed
    );
    assert!(drain(&mut l).is_empty());
    let log = run_until(&mut l, &clock, 60_000);
    assert_eq!(
        event_log(&log),
        [(15_000, Event::Terminated { key })],
        "Timer K = T4"
    );
    assert!(transmit_times(&log).is_empty());
}

#[test]
fn non_invite_client_over_tcp_ends_at_the_final_response() {
    let (clock, mut l) = (Clock::new(), layer());
    let options = request("OPTIONS", "z9hG4bKb3");
    let key = l.send_request(clock.at(0), tcp(), options.clone()).unwrap();
    drain(&mut l);
    assert_eq!(l.poll_timeout(), Some(clock.at(32_000)), "only Timer F");
    l.handle_response(clock.at(100), reply(&options, 200));
    let outs = drain(&mut l);
    assert!(
        matches!(events(&outs)[..], [Event::Response { .. }, Event::Terminated { key: k }] if *k == key)
    );
    assert!(l.is_empty());
}

#[test]
fn configured_t1_t2_t4_drive_every_timer() {
    let config = TimerConfig {
        t1: Duration::from_millis(100),
        t2: Duration::from_millis(400),
        t4: Duration::from_millis(1_000),
    };
    let (clock, mut l) = (Clock::new(), TransactionLayer::new(config));
    let options = request("OPTIONS", "z9hG4bKb4");
    l.send_request(clock.at(0), udp(), options.clone()).unwrap();
    drain(&mut l);
    assert_eq!(
        transmit_times(&run_until(&mut l, &clock, 1_600)),
        [100, 300, 700, 1100, 1500]
    );
    l.handle_response(clock.at(1_600), reply(&options, 200));
    drain(&mut l);
    assert_eq!(l.poll_timeout(), Some(clock.at(2_600)), "Timer K = T4");

    let invite = request("INVITE", "z9hG4bKb5");
    let key = l.send_request(clock.at(3_000), udp(), invite).unwrap();
    drain(&mut l);
    let log = run_until(&mut l, &clock, 20_000);
    assert!(
        event_log(&log).contains(&(
            9_400,
            Event::Timeout {
                key,
                timer: Timer::B
            }
        )),
        "64*T1"
    );
}

// ---- INVITE server ----

#[test]
fn invite_server_sends_100_after_200_ms_without_a_response_and_replays_the_last_provisional() {
    let (clock, mut l) = (Clock::new(), layer());
    let invite = request("INVITE", "z9hG4bKc1");
    let Disposition::New(key) = l.handle_request(clock.at(0), udp(), invite.clone()) else {
        panic!("not new");
    };
    assert_eq!(
        events(&drain(&mut l)),
        [&Event::Request {
            key,
            source: udp(),
            request: invite.clone()
        }]
    );
    assert_eq!(l.state(key), Some(State::Proceeding));
    assert_eq!(
        l.handle_request(clock.at(100), udp(), invite.clone()),
        Disposition::Absorbed
    );
    assert!(drain(&mut l).is_empty(), "nothing to replay yet");

    // The TU says nothing for 200 ms: the transaction sends 100 Trying, once.
    let log = run_until(&mut l, &clock, 5_000);
    assert_eq!(transmit_times(&log), [200]);
    let Output::Transmit(trying) = &log[0].1 else {
        panic!("not a transmit");
    };
    assert_eq!(first_line(trying), "SIP/2.0 100 Trying");
    assert!(String::from_utf8_lossy(&trying.bytes).contains("\r\nTo: <sip:bob@example.com>\r\n"));
    assert_eq!(
        l.handle_request(clock.at(5_100), udp(), invite.clone()),
        Disposition::Absorbed
    );
    assert_eq!(transmits(&drain(&mut l)), [trying]);

    l.send_response(clock.at(5_200), key, reply(&invite, 180))
        .unwrap();
    drain(&mut l);
    l.handle_request(clock.at(5_300), udp(), invite);
    assert_eq!(
        first_line(transmits(&drain(&mut l))[0]),
        "SIP/2.0 180 Ringing"
    );
    assert_eq!(
        l.poll_timeout(),
        None,
        "provisional responses are not retransmitted"
    );
}

#[test]
fn invite_server_sends_no_100_of_its_own_once_the_tu_answered() {
    let (clock, mut l) = (Clock::new(), layer());
    let invite = request("INVITE", "z9hG4bKc1b");
    let Disposition::New(key) = l.handle_request(clock.at(0), udp(), invite.clone()) else {
        panic!("not new");
    };
    drain(&mut l);
    l.send_trying(clock.at(10), key).unwrap();
    assert_eq!(transmits(&drain(&mut l)).len(), 1);
    l.send_response(clock.at(50), key, reply(&invite, 180))
        .unwrap();
    drain(&mut l);
    let log = run_until(&mut l, &clock, 5_000);
    assert!(
        transmit_times(&log).is_empty(),
        "only the TU's responses are sent: {log:?}"
    );
    assert_eq!(l.state(key), Some(State::Proceeding));
}

#[test]
fn invite_server_timer_g_until_ack_then_confirmed_absorbs_until_i() {
    let (clock, mut l) = (Clock::new(), layer());
    let invite = request("INVITE", "z9hG4bKc2");
    let Disposition::New(key) = l.handle_request(clock.at(0), udp(), invite.clone()) else {
        panic!("not new");
    };
    drain(&mut l);
    l.send_response(clock.at(0), key, reply(&invite, 486))
        .unwrap();
    assert_eq!(l.state(key), Some(State::Completed));
    drain(&mut l);
    assert_eq!(
        transmit_times(&run_until(&mut l, &clock, 4_000)),
        [500, 1500, 3500]
    );

    let ack = with_to_tag(request("ACK", "z9hG4bKc2"), "t1");
    assert_eq!(
        l.handle_request(clock.at(4_000), udp(), ack.clone()),
        Disposition::Absorbed
    );
    assert_eq!(l.state(key), Some(State::Confirmed));
    assert!(
        drain(&mut l).is_empty(),
        "the ACK of a non-2xx stays in the layer"
    );
    assert_eq!(
        l.handle_request(clock.at(4_100), udp(), ack),
        Disposition::Absorbed
    );
    assert_eq!(
        l.handle_request(clock.at(4_200), udp(), invite),
        Disposition::Absorbed
    );
    assert!(drain(&mut l).is_empty());

    let log = run_until(&mut l, &clock, 60_000);
    assert!(transmit_times(&log).is_empty(), "G stopped at the ACK");
    assert_eq!(
        event_log(&log),
        [(9_000, Event::Terminated { key })],
        "Timer I = T4"
    );
    // A straggling ACK after Timer I is the TU's to ignore (it matches no dialog).
    let late = with_to_tag(request("ACK", "z9hG4bKc2"), "t1");
    assert_eq!(
        l.handle_request(clock.at(9_500), udp(), late),
        Disposition::Delivered(None)
    );
}

#[test]
fn invite_server_lost_ack_retransmits_with_g_and_times_out_with_h() {
    let (clock, mut l) = (Clock::new(), layer());
    let invite = request("INVITE", "z9hG4bKc3");
    let Disposition::New(key) = l.handle_request(clock.at(0), udp(), invite.clone()) else {
        panic!("not new");
    };
    l.send_response(clock.at(0), key, reply(&invite, 404))
        .unwrap();
    let sent = transmits(&drain(&mut l))[0].clone();

    // A retransmitted INVITE is answered with the final response at once.
    assert_eq!(
        l.handle_request(clock.at(200), udp(), invite),
        Disposition::Absorbed
    );
    assert_eq!(transmits(&drain(&mut l)), [&sent]);

    let log = run_until(&mut l, &clock, 60_000);
    assert_eq!(
        transmit_times(&log),
        [
            500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
        ]
    );
    assert!(
        log.iter()
            .all(|(_, o)| !matches!(o, Output::Transmit(t) if t.bytes != sent.bytes))
    );
    assert_eq!(
        event_log(&log),
        [
            (
                32_000,
                Event::Timeout {
                    key,
                    timer: Timer::H
                }
            ),
            (32_000, Event::Terminated { key })
        ]
    );
}

#[test]
fn invite_server_accepted_absorbs_retransmitted_invites_and_passes_acks_and_2xx_resends() {
    let (clock, mut l) = (Clock::new(), layer());
    let invite = request("INVITE", "z9hG4bKc4");
    let Disposition::New(key) = l.handle_request(clock.at(0), udp(), invite.clone()) else {
        panic!("not new");
    };
    let ok = reply(&invite, 200);
    l.send_response(clock.at(100), key, ok.clone()).unwrap();
    assert_eq!(l.state(key), Some(State::Accepted));
    drain(&mut l);

    // The 200 was lost: the caller retransmits its INVITE. The layer absorbs it and
    // leaves the 2xx retransmission to the TU.
    assert_eq!(
        l.handle_request(clock.at(500), udp(), invite.clone()),
        Disposition::Absorbed
    );
    assert!(drain(&mut l).is_empty());
    l.send_response(clock.at(600), key, ok.clone()).unwrap();
    assert_eq!(
        transmits(&drain(&mut l))[0].bytes,
        Bytes::from(ok.to_bytes())
    );

    // The ACK for a 2xx is its own transaction (new branch): the TU gets it.
    let ack = with_to_tag(request("ACK", "z9hG4bKc4ack"), "t1");
    assert_eq!(
        l.handle_request(clock.at(700), udp(), ack.clone()),
        Disposition::Delivered(None)
    );
    assert_eq!(
        events(&drain(&mut l)),
        [&Event::Ack {
            invite: None,
            source: udp(),
            request: ack
        }]
    );
    // One reusing the INVITE's branch matches the transaction and reaches the TU too.
    let same_branch_ack = with_to_tag(request("ACK", "z9hG4bKc4"), "t1");
    assert_eq!(
        l.handle_request(clock.at(800), udp(), same_branch_ack),
        Disposition::Delivered(Some(key))
    );
    assert!(
        matches!(events(&drain(&mut l))[..], [Event::Ack { invite: Some(k), .. }] if *k == key)
    );

    assert_eq!(
        l.send_response(clock.at(900), key, reply(&invite, 486)),
        Err(SendError::WrongState(State::Accepted))
    );
    let log = run_until(&mut l, &clock, 60_000);
    assert!(
        transmit_times(&log).is_empty(),
        "the layer never resends a 2xx"
    );
    assert_eq!(
        event_log(&log),
        [(32_100, Event::Terminated { key })],
        "Timer L = 64*T1"
    );
    // After L, a straggling INVITE is a new request for the TU (see the module docs).
    assert!(
        matches!(l.handle_request(clock.at(33_000), udp(), invite), Disposition::New(k) if k != key)
    );
}

#[test]
fn invite_server_over_tcp_has_no_g_and_ends_at_the_ack() {
    let (clock, mut l) = (Clock::new(), layer());
    let invite = request_via("INVITE", "SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bKc5");
    let Disposition::New(key) = l.handle_request(clock.at(0), tcp(), invite.clone()) else {
        panic!("not new");
    };
    l.send_response(clock.at(0), key, reply(&invite, 480))
        .unwrap();
    assert_eq!(
        transmits(&drain(&mut l))[0].dest,
        tcp(),
        "back on the same connection"
    );
    assert_eq!(l.poll_timeout(), Some(clock.at(32_000)), "only Timer H");
    let ack = with_to_tag(
        request_via("ACK", "SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bKc5"),
        "t1",
    );
    assert_eq!(
        l.handle_request(clock.at(50), tcp(), ack),
        Disposition::Absorbed
    );
    assert_eq!(
        events(&drain(&mut l)),
        [&Event::Terminated { key }],
        "Timer I = 0"
    );
    assert!(l.is_empty());
}

// ---- non-INVITE server ----

#[test]
fn non_invite_server_trying_proceeding_completed_until_j() {
    let (clock, mut l) = (Clock::new(), layer());
    let register = request("REGISTER", "z9hG4bKd1");
    let Disposition::New(key) = l.handle_request(clock.at(0), udp(), register.clone()) else {
        panic!("not new");
    };
    drain(&mut l);
    assert_eq!(l.state(key), Some(State::Trying));
    assert_eq!(
        l.handle_request(clock.at(500), udp(), register.clone()),
        Disposition::Absorbed
    );
    assert!(drain(&mut l).is_empty(), "Trying absorbs silently");

    l.send_response(clock.at(600), key, reply(&register, 100))
        .unwrap();
    assert_eq!(l.state(key), Some(State::Proceeding));
    drain(&mut l);
    l.handle_request(clock.at(1_500), udp(), register.clone());
    assert_eq!(
        first_line(transmits(&drain(&mut l))[0]),
        "SIP/2.0 100 Trying"
    );

    l.send_response(clock.at(2_000), key, reply(&register, 200))
        .unwrap();
    assert_eq!(l.state(key), Some(State::Completed));
    drain(&mut l);
    l.handle_request(clock.at(3_500), udp(), register.clone());
    assert_eq!(first_line(transmits(&drain(&mut l))[0]), "SIP/2.0 200 OK");
    assert_eq!(
        l.send_response(clock.at(3_600), key, reply(&register, 500)),
        Err(SendError::WrongState(State::Completed))
    );

    let log = run_until(&mut l, &clock, 60_000);
    assert!(
        transmit_times(&log).is_empty(),
        "non-INVITE responses are never retransmitted by timer"
    );
    assert_eq!(
        event_log(&log),
        [(34_000, Event::Terminated { key })],
        "Timer J = 64*T1"
    );
    assert!(
        matches!(l.handle_request(clock.at(35_000), udp(), register), Disposition::New(k) if k != key)
    );
}

#[test]
fn non_invite_server_over_tcp_ends_at_the_final_response() {
    let (clock, mut l) = (Clock::new(), layer());
    let options = request_via("OPTIONS", "SIP/2.0/TCP 192.0.2.1;branch=z9hG4bKd2");
    let Disposition::New(key) = l.handle_request(clock.at(0), tcp(), options.clone()) else {
        panic!("not new");
    };
    drain(&mut l);
    l.send_response(clock.at(10), key, reply(&options, 200))
        .unwrap();
    let outs = drain(&mut l);
    assert_eq!(transmits(&outs).len(), 1);
    assert_eq!(events(&outs), [&Event::Terminated { key }], "Timer J = 0");
}

#[test]
fn responses_go_to_the_via_port_unless_rport_was_asked() {
    let (clock, mut l) = (Clock::new(), layer());
    let nat = Peer::new(TransportKind::Udp, "203.0.113.9:31000".parse().unwrap());
    let plain = request_via("OPTIONS", "SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bKd3");
    let Disposition::New(k1) = l.handle_request(clock.at(0), nat, plain.clone()) else {
        panic!("not new");
    };
    l.send_response(clock.at(0), k1, reply(&plain, 200))
        .unwrap();
    let rport = request_via(
        "OPTIONS",
        "SIP/2.0/UDP 10.0.0.5:5070;rport;branch=z9hG4bKd4",
    );
    let Disposition::New(k2) = l.handle_request(clock.at(0), nat, rport.clone()) else {
        panic!("not new");
    };
    l.send_response(clock.at(0), k2, reply(&rport, 200))
        .unwrap();
    let outs = drain(&mut l);
    let dests: Vec<_> = transmits(&outs).iter().map(|t| t.dest.addr).collect();
    assert_eq!(
        dests,
        [
            "203.0.113.9:5070".parse().unwrap(),
            "203.0.113.9:31000".parse().unwrap()
        ]
    );
}

// ---- matching ----

#[test]
fn branch_matching_needs_sent_by_and_method() {
    let (clock, mut l) = (Clock::new(), layer());
    let invite = request("INVITE", "z9hG4bKe1");
    let Disposition::New(key) = l.handle_request(clock.at(0), udp(), invite) else {
        panic!("not new");
    };
    // Host names compare case-insensitively; another sent-by is another transaction.
    let same = request_via(
        "INVITE",
        "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKe1;received=192.0.2.1",
    );
    assert_eq!(
        l.handle_request(clock.at(10), udp(), same),
        Disposition::Absorbed
    );
    let other_host = request_via("INVITE", "SIP/2.0/UDP 192.0.2.99:5060;branch=z9hG4bKe1");
    assert!(
        matches!(l.handle_request(clock.at(20), udp(), other_host), Disposition::New(k) if k != key)
    );
    let named = request_via("OPTIONS", "SIP/2.0/UDP PC33.Example.com;branch=z9hG4bKe2");
    let Disposition::New(k_named) = l.handle_request(clock.at(30), udp(), named) else {
        panic!("not new");
    };
    let lower = request_via("OPTIONS", "SIP/2.0/UDP pc33.example.COM;branch=z9hG4bKe2");
    assert_eq!(
        l.handle_request(clock.at(40), udp(), lower),
        Disposition::Absorbed
    );
    assert_eq!(l.state(k_named), Some(State::Trying));
    // Same branch, another method: a transaction of its own.
    let info = request("INFO", "z9hG4bKe1");
    assert!(matches!(
        l.handle_request(clock.at(50), udp(), info),
        Disposition::New(_)
    ));
}

#[test]
fn cancel_is_its_own_transaction_and_finds_its_invite() {
    let (clock, mut l) = (Clock::new(), layer());
    let invite = request("INVITE", "z9hG4bKf1");
    let Disposition::New(inv) = l.handle_request(clock.at(0), udp(), invite.clone()) else {
        panic!("not new");
    };
    let cancel = cancel_for(&invite);
    let Disposition::New(can) = l.handle_request(clock.at(100), udp(), cancel.clone()) else {
        panic!("CANCEL should be new");
    };
    assert_ne!(can, inv);
    assert_eq!(l.cancel_target(&cancel), Some(inv));
    assert_eq!(
        l.cancel_target(&cancel_for(&request("INVITE", "z9hG4bKf2"))),
        None
    );

    // The UAS answers both; neither disturbs the other.
    l.send_response(clock.at(110), can, reply(&cancel, 200))
        .unwrap();
    l.send_response(clock.at(110), inv, reply(&invite, 487))
        .unwrap();
    assert_eq!(l.state(can), Some(State::Completed));
    assert_eq!(l.state(inv), Some(State::Completed));
}

#[test]
fn rfc2543_requests_match_by_their_identity() {
    let (clock, mut l) = (Clock::new(), layer());
    let via = "SIP/2.0/UDP 192.0.2.1:5060";
    let invite = request_via("INVITE", via);
    let Disposition::New(key) = l.handle_request(clock.at(0), udp(), invite.clone()) else {
        panic!("not new");
    };
    assert_eq!(
        l.handle_request(clock.at(500), udp(), invite.clone()),
        Disposition::Absorbed
    );

    let mut other_from = invite.clone();
    other_from
        .headers
        .set(Known::From, "<sip:alice@example.com>;tag=f2");
    assert!(
        matches!(l.handle_request(clock.at(600), udp(), other_from), Disposition::New(k) if k != key)
    );
    let old_branch = request_via("INVITE", &format!("{via};branch=1234"));
    assert!(matches!(
        l.handle_request(clock.at(600), udp(), old_branch),
        Disposition::New(_)
    ));

    let cancel = cancel_for(&invite);
    assert_eq!(l.cancel_target(&cancel), Some(key));

    l.send_response(clock.at(700), key, reply(&invite, 486))
        .unwrap();
    // An ACK with some other To tag is not this transaction's: it goes to the TU.
    let stray = with_to_tag(request_via("ACK", via), "nope");
    assert_eq!(
        l.handle_request(clock.at(800), udp(), stray),
        Disposition::Delivered(None)
    );
    // The real ACK carries the tag of our 486.
    let ack = with_to_tag(request_via("ACK", via), "t1");
    assert_eq!(
        l.handle_request(clock.at(900), udp(), ack),
        Disposition::Absorbed
    );
    assert_eq!(l.state(key), Some(State::Confirmed));
}

#[test]
fn client_responses_match_by_branch_and_cseq_method() {
    let (clock, mut l) = (Clock::new(), layer());
    let invite = request("INVITE", "z9hG4bKg1");
    let inv = l.send_request(clock.at(0), udp(), invite.clone()).unwrap();
    assert_eq!(
        l.send_cancel(clock.at(10), inv),
        Err(SendError::WrongState(State::Calling))
    );
    l.handle_response(clock.at(100), reply(&invite, 180));
    drain(&mut l);

    let can = l.send_cancel(clock.at(200), inv).unwrap();
    let outs = drain(&mut l);
    assert_eq!(transmits(&outs)[0].dest, udp());
    assert_eq!(
        transmits(&outs)[0].bytes,
        Bytes::from(cancel_for(&invite).to_bytes())
    );
    let cancel = l.request(can).unwrap().clone();

    assert_eq!(
        l.handle_response(clock.at(300), reply(&cancel, 200)),
        Disposition::Delivered(Some(can))
    );
    assert_eq!(
        l.handle_response(clock.at(310), reply(&invite, 487)),
        Disposition::Delivered(Some(inv))
    );
    assert_eq!(l.state(can), Some(State::Completed));
    assert_eq!(l.state(inv), Some(State::Completed));
    let stray = reply(&request("INVITE", "z9hG4bKunknown"), 200);
    assert_eq!(
        l.handle_response(clock.at(320), stray),
        Disposition::Dropped
    );
}

// ---- the TU's mistakes and transport failures ----

#[test]
fn refuses_what_no_transaction_can_carry() {
    let (clock, mut l) = (Clock::new(), layer());
    let t = clock.at(0);
    assert_eq!(
        l.send_request(t, udp(), request("ACK", "z9hG4bKh1")),
        Err(SendError::AckIsNotATransaction)
    );
    assert!(matches!(
        l.send_request(t, udp(), request_via("OPTIONS", "SIP/2.0/UDP h;branch=1")),
        Err(SendError::Malformed(_))
    ));
    let key = l
        .send_request(t, udp(), request("OPTIONS", "z9hG4bKh2"))
        .unwrap();
    assert_eq!(
        l.send_request(t, udp(), request("OPTIONS", "z9hG4bKh2")),
        Err(SendError::DuplicateBranch)
    );
    let ok = reply(&request("OPTIONS", "z9hG4bKh2"), 200);
    assert_eq!(
        l.send_response(t, key, ok.clone()),
        Err(SendError::NoSuchTransaction)
    );
    assert_eq!(l.send_cancel(t, key), Err(SendError::NoSuchTransaction));
    l.handle_transport_error(t, key);
    let outs = drain(&mut l);
    assert_eq!(
        events(&outs),
        [&Event::TransportError { key }, &Event::Terminated { key }]
    );
    assert_eq!(
        l.send_response(t, key, ok),
        Err(SendError::NoSuchTransaction)
    );
    assert!(l.is_empty());
}

#[test]
fn many_transactions_all_end_and_leave_nothing_behind() {
    let (clock, mut l) = (Clock::new(), layer());
    let mut created = 0;
    let mut ringing_invites = Vec::new();
    for i in 0..300u64 {
        let t = clock.at(i * 10);
        let peer = if i % 5 == 0 { tcp() } else { udp() };
        // Every outcome: 486 (server: never ACKed), 200, provisional only, nothing.
        let (method, status) = match i % 6 {
            0 => ("INVITE", Some(486)),
            1 => ("OPTIONS", Some(200)),
            2 => ("INVITE", Some(180)),
            3 => ("OPTIONS", None),
            4 => ("INVITE", Some(200)),
            _ => ("OPTIONS", Some(100)),
        };
        let req = request(method, &format!("z9hG4bKc{i}"));
        let key = l.send_request(t, peer, req.clone()).unwrap();
        created += 1;
        if let Some(status) = status {
            l.handle_response(t, reply(&req, status));
        }
        if method == "INVITE" && status == Some(180) {
            ringing_invites.push(key);
        }
        let req = request(method, &format!("z9hG4bKs{i}"));
        let Disposition::New(key) = l.handle_request(t, peer, req.clone()) else {
            panic!("not new");
        };
        created += 1;
        if let Some(status) = status {
            l.send_response(t, key, reply(&req, status)).unwrap();
        }
    }
    // A ringing INVITE lives until the TU gives up on it: CANCEL it, and with the
    // CANCEL unanswered it ends 64*T1 later (RFC 3261 §9.1).
    for key in ringing_invites {
        l.send_cancel(clock.at(4_000), key).unwrap();
        created += 1;
    }
    let mut outs = drain(&mut l);
    // The TU answers what it left open, late.
    let open: Vec<TxKey> = events(&outs)
        .iter()
        .filter_map(|e| match e {
            Event::Request { key, .. } => Some(*key),
            _ => None,
        })
        .filter(|k| matches!(l.state(*k), Some(State::Trying | State::Proceeding)))
        .collect();
    assert!(!open.is_empty());
    for key in open {
        let req = l.request(key).unwrap().clone();
        l.send_response(clock.at(5_000), key, reply(&req, 500))
            .unwrap();
    }
    outs.extend(drain(&mut l));
    assert!(!l.is_empty());
    outs.extend(
        run_until(&mut l, &clock, 3_600_000)
            .into_iter()
            .map(|(_, o)| o),
    );
    assert!(l.is_empty(), "{} transactions left", l.len());
    assert_eq!(l.poll_timeout(), None);
    assert!(l.deadlines.is_empty());
    assert!(l.server_index.is_empty() && l.client_index.is_empty());
    let terminated = events(&outs)
        .iter()
        .filter(|e| matches!(e, Event::Terminated { .. }))
        .count();
    assert_eq!(terminated, created);
}

#[test]
fn a_cancelled_invite_without_final_response_ends_after_64_t1() {
    let (clock, mut l) = (Clock::new(), layer());
    let invite = request("INVITE", "z9hG4bKi1");
    let inv = l.send_request(clock.at(0), udp(), invite.clone()).unwrap();
    l.handle_response(clock.at(100), reply(&invite, 183));
    let can = l.send_cancel(clock.at(10_000), inv).unwrap();
    let cancel = l.request(can).unwrap().clone();
    l.handle_response(clock.at(10_100), reply(&cancel, 200));
    drain(&mut l);
    let log = run_until(&mut l, &clock, 100_000);
    let events = event_log(&log);
    assert!(
        events.contains(&(
            42_000,
            Event::Timeout {
                key: inv,
                timer: Timer::B
            }
        )),
        "{events:?}"
    );
    assert!(events.contains(&(42_000, Event::Terminated { key: inv })));
    assert!(l.is_empty());
}

#[test]
fn an_ack_for_a_non_2xx_with_a_new_branch_still_stops_timer_g() {
    // SIPp's scenarios ACK a 407 with a fresh branch; the Call-ID, From tag, CSeq and
    // the 407's To tag still name the transaction.
    let (clock, mut l) = (Clock::new(), layer());
    let invite = request("INVITE", "z9hG4bKs1");
    let Disposition::New(key) = l.handle_request(clock.at(0), udp(), invite.clone()) else {
        panic!("not new");
    };
    l.send_response(clock.at(0), key, reply(&invite, 407))
        .unwrap();
    drain(&mut l);
    let wrong_tag = with_to_tag(request("ACK", "z9hG4bKother"), "nope");
    assert_eq!(
        l.handle_request(clock.at(100), udp(), wrong_tag),
        Disposition::Delivered(None),
        "an ACK with another To tag is not this transaction's"
    );
    drain(&mut l);
    let ack = with_to_tag(request("ACK", "z9hG4bKother"), "t1");
    assert_eq!(
        l.handle_request(clock.at(200), udp(), ack),
        Disposition::Absorbed
    );
    assert_eq!(l.state(key), Some(State::Confirmed));
    assert!(
        transmit_times(&run_until(&mut l, &clock, 10_000)).is_empty(),
        "no 407 retransmission after the ACK"
    );
}

#[test]
fn the_ack_of_a_2xx_is_never_taken_by_the_fallback() {
    let (clock, mut l) = (Clock::new(), layer());
    let invite = request("INVITE", "z9hG4bKs2");
    let Disposition::New(key) = l.handle_request(clock.at(0), udp(), invite.clone()) else {
        panic!("not new");
    };
    l.send_response(clock.at(0), key, reply(&invite, 200))
        .unwrap();
    drain(&mut l);
    let ack = with_to_tag(request("ACK", "z9hG4bKnew"), "t1");
    assert!(matches!(
        l.handle_request(clock.at(100), udp(), ack),
        Disposition::Delivered(_)
    ));
    assert!(
        events(&drain(&mut l))
            .iter()
            .any(|e| matches!(e, Event::Ack { .. }))
    );
}
