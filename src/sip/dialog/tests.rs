//! Dialog tests over byte fixtures: messages as desk phones, a forking proxy and
//! switchboard exchange them.

use super::*;
use crate::sip::{HeaderName, Known, Message, Request, Response, parse_datagram};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// Parses `head` (header lines, each ending in CRLF) and `body` as one datagram.
fn parse(head: &str, body: &str) -> Message {
    let text = format!("{head}Content-Length: {}\r\n\r\n{body}", body.len());
    match parse_datagram(text.into_bytes().into()) {
        Ok(m) => m,
        Err(e) => panic!("fixture does not parse: {e:?}"),
    }
}

fn request(head: &str, body: &str) -> Request {
    match parse(head, body) {
        Message::Request(r) => r,
        Message::Response(r) => panic!("not a request: {r:?}"),
    }
}

fn response(head: &str, body: &str) -> Response {
    match parse(head, body) {
        Message::Response(r) => r,
        Message::Request(r) => panic!("not a response: {r:?}"),
    }
}

/// The message as text with its top Via branch replaced by `BRANCH`.
fn masked(req: &Request) -> String {
    let branch = req.top_via().unwrap().branch().unwrap().to_string();
    assert!(
        branch.starts_with("z9hG4bK") && branch.len() > 7,
        "{branch}"
    );
    String::from_utf8(req.to_bytes())
        .unwrap()
        .replace(&branch, "BRANCH")
}

fn branch(req: &Request) -> String {
    req.top_via().unwrap().branch().unwrap().to_string()
}

fn our_sent_by() -> SentBy {
    SentBy {
        transport: TransportKind::Udp,
        host: Host::Ip(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1))),
        port: Some(5060),
    }
}

fn uri(s: &str) -> Uri {
    Uri::parse_str(s).unwrap()
}

const SDP: &str = "v=0\r\n\
    o=- 20008 20008 IN IP4 192.168.1.23\r\n\
    s=SDP data\r\n\
    c=IN IP4 192.168.1.23\r\n\
    t=0 0\r\n\
    m=audio 11780 RTP/AVP 0 8 101\r\n\
    a=rtpmap:0 PCMU/8000\r\n\
    a=rtpmap:8 PCMA/8000\r\n\
    a=rtpmap:101 telephone-event/8000\r\n\
    a=fmtp:101 0-15\r\n\
    a=sendrecv\r\n";

// ---- the A leg: a phone calls in through two record-routing proxies ----

/// Phone 1001 behind NAT calls 1002. Its INVITE passed the inner proxy 10.0.0.5 and
/// then the edge proxy, each adding a Record-Route on top.
const PHONE_INVITE: &str = "INVITE sip:1002@pbx.example.com SIP/2.0\r\n\
    Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-edge-77a1;rport\r\n\
    Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK-inner-19c2\r\n\
    Via: SIP/2.0/UDP 192.168.1.23:5062;received=203.0.113.9;rport=40112;branch=z9hG4bK1838493301\r\n\
    Record-Route: <sip:198.51.100.7;lr;ftag=2045781209>\r\n\
    Record-Route: <sip:10.0.0.5;lr>\r\n\
    Max-Forwards: 68\r\n\
    From: \"Alice\" <sip:1001@pbx.example.com>;tag=2045781209\r\n\
    To: <sip:1002@pbx.example.com>\r\n\
    Call-ID: 0_1436912447@192.168.1.23\r\n\
    CSeq: 2 INVITE\r\n\
    Contact: <sip:1001@192.168.1.23:5062>\r\n\
    Content-Type: application/sdp\r\n\
    Allow: INVITE, ACK, OPTIONS, CANCEL, BYE, REFER, NOTIFY, INFO, UPDATE, MESSAGE\r\n\
    Supported: replaces, timer\r\n\
    User-Agent: Yealink SIP-T46S 66.86.0.15\r\n";

/// A request the phone sends in the A-leg dialog once we have answered with tag
/// `sb-a1`: `method`, `cseq`, and extra header lines.
fn phone_in_dialog(method: &str, cseq: u32, extra: &str, body: &str) -> Request {
    request(
        &format!(
            "{method} sip:switchboard@203.0.113.1:5060 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-edge-{cseq}\r\n\
             Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK-inner-{cseq}\r\n\
             Via: SIP/2.0/UDP 192.168.1.23:5062;received=203.0.113.9;rport=40112;branch=z9hG4bK99{cseq}\r\n\
             Max-Forwards: 68\r\n\
             From: \"Alice\" <sip:1001@pbx.example.com>;tag=2045781209\r\n\
             To: <sip:1002@pbx.example.com>;tag=sb-a1\r\n\
             Call-ID: 0_1436912447@192.168.1.23\r\n\
             CSeq: {cseq} {method}\r\n\
             {extra}User-Agent: Yealink SIP-T46S 66.86.0.15\r\n"
        ),
        body,
    )
}

fn a_leg() -> (Dialog, Request) {
    let invite = request(PHONE_INVITE, SDP);
    let dialog = Dialog::from_invite_uas(
        &invite,
        "sb-a1",
        uri("sip:switchboard@203.0.113.1:5060"),
        our_sent_by(),
    )
    .unwrap();
    (dialog, invite)
}

fn answered_a_leg() -> Dialog {
    let (mut dialog, invite) = a_leg();
    dialog.respond(&invite, 200);
    dialog
}

#[test]
fn uas_dialog_takes_its_state_from_the_invite() {
    let (dialog, _) = a_leg();
    assert_eq!(
        dialog.id(),
        &DialogId {
            call_id: "0_1436912447@192.168.1.23".into(),
            local_tag: "sb-a1".into(),
            remote_tag: "2045781209".into(),
        }
    );
    assert_eq!(dialog.role(), Role::Uas);
    assert_eq!(dialog.state(), DialogState::Early);
    assert!(!dialog.owns_call_id());
    assert_eq!(dialog.remote_seq(), Some(2));
    assert_eq!(dialog.local_seq(), None);
    assert_eq!(dialog.remote_target(), &uri("sip:1001@192.168.1.23:5062"));
    assert_eq!(dialog.remote().display_name().as_deref(), Some("Alice"));
    assert_eq!(dialog.local().tag(), Some("sb-a1"));
    // The UAS keeps Record-Route in the order received: nearest proxy first.
    let routes: Vec<String> = dialog.route_set().iter().map(|r| r.to_string()).collect();
    assert_eq!(
        routes,
        vec!["<sip:198.51.100.7;lr;ftag=2045781209>", "<sip:10.0.0.5;lr>"]
    );
    assert_eq!(
        dialog.next_hop(),
        &uri("sip:198.51.100.7;lr;ftag=2045781209")
    );
    assert!(dialog.owes_answer());
}

#[test]
fn uas_dialog_needs_a_contact() {
    let invite = request(
        &PHONE_INVITE.replace("Contact: <sip:1001@192.168.1.23:5062>\r\n", ""),
        SDP,
    );
    let err = Dialog::from_invite_uas(&invite, "t", uri("sip:s@h"), our_sent_by()).unwrap_err();
    assert_eq!(err.0, "INVITE without Contact");
}

#[test]
fn ringing_and_ok_carry_tag_contact_and_record_route() {
    let (mut dialog, invite) = a_leg();
    let ringing = dialog.respond(&invite, 180);
    assert_eq!(
        String::from_utf8(ringing.to_bytes()).unwrap(),
        "SIP/2.0 180 Ringing\r\n\
         Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-edge-77a1;rport\r\n\
         Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK-inner-19c2\r\n\
         Via: SIP/2.0/UDP 192.168.1.23:5062;received=203.0.113.9;rport=40112;branch=z9hG4bK1838493301\r\n\
         From: \"Alice\" <sip:1001@pbx.example.com>;tag=2045781209\r\n\
         To: <sip:1002@pbx.example.com>;tag=sb-a1\r\n\
         Call-ID: 0_1436912447@192.168.1.23\r\n\
         CSeq: 2 INVITE\r\n\
         Record-Route: <sip:198.51.100.7;lr;ftag=2045781209>\r\n\
         Record-Route: <sip:10.0.0.5;lr>\r\n\
         Contact: <sip:switchboard@203.0.113.1:5060>\r\n\
         Content-Length: 0\r\n\r\n"
    );
    assert_eq!(dialog.state(), DialogState::Early);
    let mut ok = dialog.respond(&invite, 200);
    ok.set_body("application/sdp", SDP);
    assert_eq!(ok.to().unwrap().tag(), Some("sb-a1"));
    assert_eq!(ok.headers.count(Known::RecordRoute), 2);
    assert_eq!(dialog.state(), DialogState::Confirmed);
    assert!(!dialog.owes_answer());
}

#[test]
fn failed_invite_ends_the_early_dialog_without_contact() {
    let (mut dialog, invite) = a_leg();
    let busy = dialog.respond(&invite, 486);
    assert_eq!(busy.reason, "Busy Here");
    assert!(!busy.headers.contains(Known::Contact));
    assert!(!busy.headers.contains(Known::RecordRoute));
    assert_eq!(busy.to().unwrap().tag(), Some("sb-a1"));
    assert_eq!(dialog.state(), DialogState::Terminated);
}

#[test]
fn uas_bye_follows_the_route_set_to_the_phone() {
    let mut dialog = answered_a_leg();
    let bye = dialog.new_request(Method::Bye, None);
    assert_eq!(
        masked(&bye),
        "BYE sip:1001@192.168.1.23:5062 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 203.0.113.1:5060;rport;branch=BRANCH\r\n\
         Max-Forwards: 70\r\n\
         Route: <sip:198.51.100.7;lr;ftag=2045781209>\r\n\
         Route: <sip:10.0.0.5;lr>\r\n\
         From: <sip:1002@pbx.example.com>;tag=sb-a1\r\n\
         To: \"Alice\" <sip:1001@pbx.example.com>;tag=2045781209\r\n\
         Call-ID: 0_1436912447@192.168.1.23\r\n\
         CSeq: 1 BYE\r\n\
         Content-Length: 0\r\n\r\n"
    );
    assert_eq!(dialog.state(), DialogState::Terminated);
    assert_eq!(dialog.local_seq(), Some(1));
}

#[test]
fn bye_from_the_phone_ends_the_dialog() {
    let mut dialog = answered_a_leg();
    let bye = phone_in_dialog("BYE", 3, "", "");
    assert_eq!(DialogId::of_request(&bye).as_ref(), Some(dialog.id()));
    assert_eq!(dialog.on_request(&bye), Ok(()));
    assert_eq!(dialog.state(), DialogState::Terminated);
    let ok = dialog.respond(&bye, 200);
    assert_eq!(ok.to().unwrap().tag(), Some("sb-a1"));
    assert!(!ok.headers.contains(Known::Contact));
    // Anything after the BYE finds no dialog.
    let late = phone_in_dialog("INFO", 4, "", "");
    assert_eq!(dialog.on_request(&late), Err(Refusal::Terminated));
    assert_eq!(Refusal::Terminated.response(&late, 0).status, 481);
}

#[test]
fn lower_or_equal_cseq_is_refused_with_500() {
    let mut dialog = answered_a_leg();
    let info = |cseq| {
        phone_in_dialog(
            "INFO",
            cseq,
            "Content-Type: application/dtmf-relay\r\n",
            "Signal=5\r\nDuration=160\r\n",
        )
    };
    assert_eq!(dialog.on_request(&info(3)), Ok(()));
    assert_eq!(dialog.on_request(&info(3)), Err(Refusal::OutOfOrder));
    assert_eq!(dialog.on_request(&info(2)), Err(Refusal::OutOfOrder));
    assert_eq!(dialog.remote_seq(), Some(3));
    // Gaps are fine: requests the peer sent may have failed on the way (§12.2.2).
    assert_eq!(dialog.on_request(&info(10)), Ok(()));
    assert_eq!(dialog.remote_seq(), Some(10));
    let refused = Refusal::OutOfOrder.response(&info(9), 0);
    assert_eq!(
        (refused.status, refused.reason.as_str()),
        (500, "Server Internal Error")
    );
    assert_eq!(refused.to().unwrap().tag(), Some("sb-a1"));
    assert!(!refused.headers.contains(Known::RetryAfter));
    // ACK reuses the INVITE's number and is never refused for it.
    assert_eq!(
        dialog.on_request(&phone_in_dialog("ACK", 2, "", "")),
        Ok(())
    );
}

#[test]
fn re_invite_refreshes_the_target_only_when_accepted() {
    let mut dialog = answered_a_leg();
    let moved = phone_in_dialog(
        "INVITE",
        3,
        "Contact: <sip:1001@192.168.1.99:5062>\r\nContent-Type: application/sdp\r\n",
        SDP,
    );
    assert_eq!(dialog.on_request(&moved), Ok(()));
    assert!(dialog.owes_answer());
    assert_eq!(dialog.remote_target(), &uri("sip:1001@192.168.1.23:5062"));
    let refused = dialog.respond(&moved, 488);
    assert!(!refused.headers.contains(Known::Contact));
    assert_eq!(dialog.remote_target(), &uri("sip:1001@192.168.1.23:5062"));
    assert!(!dialog.owes_answer());
    assert_eq!(dialog.state(), DialogState::Confirmed);

    let moved = phone_in_dialog("UPDATE", 4, "Contact: <sip:1001@192.168.1.99:5062>\r\n", "");
    assert_eq!(dialog.on_request(&moved), Ok(()));
    let ok = dialog.respond(&moved, 200);
    assert_eq!(
        ok.headers.get(Known::Contact).unwrap(),
        "<sip:switchboard@203.0.113.1:5060>"
    );
    assert!(!ok.headers.contains(Known::RecordRoute));
    assert_eq!(dialog.remote_target(), &uri("sip:1001@192.168.1.99:5062"));
    let bye = dialog.new_request(Method::Bye, None);
    assert_eq!(bye.uri, uri("sip:1001@192.168.1.99:5062"));
}

#[test]
fn strict_router_first_gets_the_request_uri() {
    let invite = request(
        &PHONE_INVITE.replace(
            "Record-Route: <sip:198.51.100.7;lr;ftag=2045781209>\r\n",
            "Record-Route: <sip:198.51.100.7;method=INVITE;maddr=198.51.100.8>\r\n",
        ),
        SDP,
    );
    let mut dialog =
        Dialog::from_invite_uas(&invite, "sb-a1", uri("sip:sb@203.0.113.1"), our_sent_by())
            .unwrap();
    dialog.respond(&invite, 200);
    let bye = dialog.new_request(Method::Bye, None);
    assert_eq!(bye.uri, uri("sip:198.51.100.7;maddr=198.51.100.8"));
    assert_eq!(
        bye.headers.get_all(Known::Route).collect::<Vec<_>>(),
        vec!["<sip:10.0.0.5;lr>", "<sip:1001@192.168.1.23:5062>"]
    );
    assert_eq!(
        dialog.next_hop(),
        &uri("sip:198.51.100.7;method=INVITE;maddr=198.51.100.8")
    );
}

// ---- a B leg: our INVITE forks at a proxy and two phones answer ----

fn b_leg_params() -> InviteParams {
    let mut params = InviteParams::new(
        uri("sip:1002@pbx.example.com"),
        sip_address(Some("Alice"), "1001", Host::Name("pbx.example.com".into())),
        NameAddr::parse_str("<sip:1002@pbx.example.com>;tag=must-go").unwrap(),
        uri("sip:switchboard@203.0.113.1:5060"),
        our_sent_by(),
    );
    params.call_id = "sb3-4a7f0c9e".into();
    params.local_tag = "b2bua-tag-1".into();
    params.cseq = 101;
    params.route = vec![NameAddr::parse_str("<sip:proxy.example.net;lr>").unwrap()];
    params.supported = "replaces".into();
    params
        .extra_headers
        .push((HeaderName::new("X-Caller-Line".into()), "7".into()));
    params.body = Some(Body::sdp(SDP));
    params
}

/// A response to the B-leg INVITE from one fork. The proxies record-routed: the edge
/// `proxy.example.net` first, then the inner `10.0.0.5` on top.
fn fork_response(status: &str, to_tag: &str, extra: &str, body: &str) -> Response {
    response(
        &format!(
            "SIP/2.0 {status}\r\n\
             Via: SIP/2.0/UDP 203.0.113.1:5060;rport=5060;branch=z9hG4bK5f1e2d3c4b5a6978\r\n\
             From: \"Alice\" <sip:1001@pbx.example.com>;tag=b2bua-tag-1\r\n\
             To: <sip:1002@pbx.example.com>{to_tag}\r\n\
             Call-ID: sb3-4a7f0c9e\r\n\
             CSeq: 101 INVITE\r\n\
             {extra}"
        ),
        body,
    )
}

const RR: &str = "Record-Route: <sip:10.0.0.5;lr>, <sip:proxy.example.net;lr>\r\n";

fn polycom(status: &str, with_rr: bool, body: &str) -> Response {
    let rr = if with_rr { RR } else { "" };
    fork_response(
        status,
        ";tag=fork-a-5521",
        &format!(
            "{rr}Contact: <sip:1002@10.0.0.21:5060>\r\n\
             User-Agent: PolycomVVX-VVX_411-UA/6.4.3.5018\r\n"
        ),
        body,
    )
}

fn grandstream(status: &str, body: &str) -> Response {
    fork_response(
        status,
        ";tag=1c2b3a44",
        "Record-Route: <sip:10.0.0.5;lr>\r\n\
         Record-Route: <sip:proxy.example.net;lr>\r\n\
         Contact: \"1002\" <sip:1002@10.0.0.22:5062;transport=udp>\r\n\
         User-Agent: Grandstream GXP2170 1.0.11.23\r\n",
        body,
    )
}

#[test]
fn uac_invite_has_every_header_in_order() {
    let (invite, seed) = new_uac_invite(b_leg_params());
    let allow = crate::sip::checks::Capabilities::pbx().allow_header();
    assert_eq!(
        masked(&invite),
        format!(
            "INVITE sip:1002@pbx.example.com SIP/2.0\r\n\
             Via: SIP/2.0/UDP 203.0.113.1:5060;rport;branch=BRANCH\r\n\
             Max-Forwards: 70\r\n\
             Route: <sip:proxy.example.net;lr>\r\n\
             From: \"Alice\" <sip:1001@pbx.example.com>;tag=b2bua-tag-1\r\n\
             To: <sip:1002@pbx.example.com>\r\n\
             Call-ID: sb3-4a7f0c9e\r\n\
             CSeq: 101 INVITE\r\n\
             Contact: <sip:switchboard@203.0.113.1:5060>\r\n\
             Allow: {allow}\r\n\
             Supported: replaces\r\n\
             X-Caller-Line: 7\r\n\
             Content-Type: application/sdp\r\n\
             Content-Length: {}\r\n\r\n{SDP}",
            SDP.len()
        )
    );
    assert_eq!(seed.call_id(), "sb3-4a7f0c9e");
    assert_eq!(seed.local_tag(), "b2bua-tag-1");
    assert_eq!(seed.cseq(), 101);
    // The INVITE goes through the transaction layer as it is.
    assert!(crate::sip::parse::validate_request(&invite).is_ok());
}

#[test]
fn forked_invite_makes_one_early_dialog_per_to_tag() {
    let (_, seed) = new_uac_invite(b_leg_params());
    let mut forks = Forks::new(seed);
    assert!(
        forks
            .on_response(&fork_response("100 Trying", "", "", ""))
            .is_none()
    );

    let a = forks
        .on_response(&polycom("180 Ringing", false, ""))
        .unwrap();
    assert_eq!(a.state(), DialogState::Early);
    assert_eq!(a.role(), Role::Uac);
    assert!(a.owns_call_id());
    assert_eq!(a.remote_target(), &uri("sip:1002@10.0.0.21:5060"));
    assert!(a.route_set().is_empty());
    assert!(a.awaiting_answer());

    let b = forks
        .on_response(&grandstream("183 Session Progress", SDP))
        .unwrap();
    assert_eq!(b.id().remote_tag, "1c2b3a44");
    assert_eq!(b.remote().tag(), Some("1c2b3a44"));
    assert_eq!(
        b.remote_target(),
        &uri("sip:1002@10.0.0.22:5062;transport=udp")
    );
    // The UAC reverses Record-Route: the proxy nearest to us comes first.
    let routes: Vec<String> = b.route_set().iter().map(|r| r.to_string()).collect();
    assert_eq!(
        routes,
        vec!["<sip:proxy.example.net;lr>", "<sip:10.0.0.5;lr>"]
    );

    // A repeated 180 updates, it doesn't duplicate.
    forks
        .on_response(&polycom("180 Ringing", false, ""))
        .unwrap();
    assert_eq!(forks.dialogs().len(), 2);
    let ids: Vec<&str> = forks
        .dialogs()
        .iter()
        .map(|d| d.id().local_tag.as_str())
        .collect();
    assert_eq!(ids, vec!["b2bua-tag-1", "b2bua-tag-1"]);
}

#[test]
fn first_2xx_confirms_its_dialog_and_the_second_is_acked_and_hung_up() {
    let (invite, seed) = new_uac_invite(b_leg_params());
    let mut forks = Forks::new(seed);
    forks.on_response(&polycom("180 Ringing", false, ""));
    forks.on_response(&grandstream("180 Ringing", ""));

    let ok_a = polycom("200 OK", true, SDP);
    let a = forks.on_response(&ok_a).unwrap();
    assert_eq!(a.state(), DialogState::Confirmed);
    assert!(!a.awaiting_answer());
    assert_eq!(DialogId::of_response(&ok_a).as_ref(), Some(a.id()));
    // The 180 had no Record-Route; the 2xx's recomputes the route set (§13.2.2.4).
    assert_eq!(a.route_set().len(), 2);
    assert_eq!(a.next_hop(), &uri("sip:proxy.example.net;lr"));
    let ack = a.ack_for_2xx(101, None);
    assert_eq!(
        masked(&ack),
        "ACK sip:1002@10.0.0.21:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 203.0.113.1:5060;rport;branch=BRANCH\r\n\
         Max-Forwards: 70\r\n\
         Route: <sip:proxy.example.net;lr>\r\n\
         Route: <sip:10.0.0.5;lr>\r\n\
         From: \"Alice\" <sip:1001@pbx.example.com>;tag=b2bua-tag-1\r\n\
         To: <sip:1002@pbx.example.com>;tag=fork-a-5521\r\n\
         Call-ID: sb3-4a7f0c9e\r\n\
         CSeq: 101 ACK\r\n\
         Content-Length: 0\r\n\r\n"
    );
    assert_ne!(branch(&ack), branch(&invite));
    assert_ne!(branch(&ack), branch(&a.ack_for_2xx(101, None)));
    assert_eq!(a.local_seq(), Some(101), "an ACK takes no CSeq number");

    // The second phone answered too: its dialog is confirmed, ACKed and hung up.
    let b = forks.on_response(&grandstream("200 OK", SDP)).unwrap();
    assert_eq!(b.state(), DialogState::Confirmed);
    let ack = b.ack_for_2xx(101, None);
    assert_eq!(ack.uri, uri("sip:1002@10.0.0.22:5062;transport=udp"));
    assert_eq!(ack.to().unwrap().tag(), Some("1c2b3a44"));
    let bye = b.new_request(Method::Bye, None);
    assert_eq!(
        bye.cseq().unwrap(),
        crate::sip::CSeq {
            seq: 102,
            method: Method::Bye
        }
    );
    assert_eq!(bye.uri, ack.uri);
    assert_eq!(
        bye.headers.get_all(Known::Route).collect::<Vec<_>>(),
        vec!["<sip:proxy.example.net;lr>", "<sip:10.0.0.5;lr>"]
    );
    assert_eq!(b.state(), DialogState::Terminated);

    let winner = forks.into_dialog("fork-a-5521").unwrap();
    assert_eq!(winner.state(), DialogState::Confirmed);
}

#[test]
fn a_2xx_without_contact_is_still_ackable() {
    let (_, seed) = new_uac_invite(b_leg_params());
    let ok = fork_response("200 OK", ";tag=x1", "", "");
    let dialog = seed.dialog_for(&ok).unwrap();
    assert_eq!(dialog.remote_target(), &uri("sip:1002@pbx.example.com"));
    assert_eq!(
        dialog.ack_for_2xx(101, None).uri,
        uri("sip:1002@pbx.example.com")
    );
}

#[test]
fn ack_carries_the_answer_when_the_2xx_had_the_offer() {
    let mut params = b_leg_params();
    params.body = None;
    let (_, seed) = new_uac_invite(params);
    let dialog = seed.dialog_for(&polycom("200 OK", true, SDP)).unwrap();
    let ack = dialog.ack_for_2xx(101, Some(Body::sdp(SDP)));
    assert_eq!(ack.content_type().unwrap(), "application/sdp");
    assert_eq!(&ack.body[..], SDP.as_bytes());
    assert!(!ack.headers.contains(Known::Contact));
}

#[test]
fn final_failure_ends_every_early_dialog() {
    let (_, seed) = new_uac_invite(b_leg_params());
    let mut forks = Forks::new(seed);
    forks.on_response(&polycom("180 Ringing", true, ""));
    forks.on_response(&grandstream("180 Ringing", ""));
    assert!(
        forks
            .on_response(&fork_response("486 Busy Here", ";tag=proxy-99", "", ""))
            .is_none()
    );
    assert!(
        forks
            .dialogs()
            .iter()
            .all(|d| d.state() == DialogState::Terminated && !d.awaiting_answer())
    );
}

#[test]
fn a_late_failure_leaves_a_confirmed_fork_alone() {
    let (_, seed) = new_uac_invite(b_leg_params());
    let mut forks = Forks::new(seed);
    forks.on_response(&polycom("180 Ringing", true, ""));
    forks.on_response(&grandstream("200 OK", SDP));
    forks.on_response(&fork_response(
        "408 Request Timeout",
        ";tag=proxy-99",
        "",
        "",
    ));
    let states: Vec<DialogState> = forks.dialogs().iter().map(Dialog::state).collect();
    assert_eq!(
        states,
        vec![DialogState::Terminated, DialogState::Confirmed]
    );
}

#[test]
fn requests_in_a_uac_dialog_count_up_and_481_ends_it() {
    let (_, seed) = new_uac_invite(b_leg_params());
    let mut dialog = seed.dialog_for(&polycom("200 OK", true, SDP)).unwrap();
    let info = dialog.new_request(
        Method::Info,
        Some(Body {
            content_type: "application/dtmf-relay".into(),
            bytes: "Signal=1\r\nDuration=100\r\n".into(),
        }),
    );
    assert_eq!(info.cseq().unwrap().seq, 102);
    assert!(!info.headers.contains(Known::Contact));
    assert!(dialog.can_send_offer(), "INFO is no offer");
    let update = dialog.new_request(Method::Update, None);
    assert_eq!(update.cseq().unwrap().seq, 103);
    assert_eq!(
        update.headers.get(Known::Contact).unwrap(),
        "<sip:switchboard@203.0.113.1:5060>"
    );
    let mut gone = fork_response(
        "481 Call/Transaction Does Not Exist",
        ";tag=fork-a-5521",
        "",
        "",
    );
    gone.headers.set(Known::CSeq, "103 UPDATE");
    dialog.on_response(&gone);
    assert_eq!(dialog.state(), DialogState::Terminated);
}

#[test]
fn uac_target_refresh_from_a_2xx_to_our_re_invite() {
    let (_, seed) = new_uac_invite(b_leg_params());
    let mut dialog = seed.dialog_for(&polycom("200 OK", true, SDP)).unwrap();
    let reinvite = dialog.new_request(Method::Invite, Some(Body::sdp(SDP)));
    assert_eq!(reinvite.cseq().unwrap().seq, 102);
    let mut ok = polycom("200 OK", true, SDP);
    ok.headers.set(Known::CSeq, "102 INVITE");
    ok.headers.set(Known::Contact, "<sip:1002@10.0.0.77:5060>");
    dialog.on_response(&ok);
    assert_eq!(dialog.remote_target(), &uri("sip:1002@10.0.0.77:5060"));
    // A re-INVITE's 2xx leaves the route set alone (§12.2.1.2).
    ok.headers.remove(Known::RecordRoute);
    dialog.on_response(&ok);
    assert_eq!(dialog.route_set().len(), 2);
    assert_eq!(dialog.ack_for_2xx(102, None).cseq().unwrap().seq, 102);
}

// ---- glare ----

fn confirmed_b_leg() -> Dialog {
    let (_, seed) = new_uac_invite(b_leg_params());
    seed.dialog_for(&polycom("200 OK", true, SDP)).unwrap()
}

/// A request the Polycom sends in the B-leg dialog.
fn callee_in_dialog(method: &str, cseq: u32, body: &str) -> Request {
    let content_type = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    request(
        &format!(
            "{method} sip:switchboard@203.0.113.1:5060 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK-inner-b{cseq}\r\n\
             Via: SIP/2.0/UDP 10.0.0.21:5060;branch=z9hG4bKpoly{cseq}\r\n\
             Max-Forwards: 69\r\n\
             From: <sip:1002@pbx.example.com>;tag=fork-a-5521\r\n\
             To: \"Alice\" <sip:1001@pbx.example.com>;tag=b2bua-tag-1\r\n\
             Call-ID: sb3-4a7f0c9e\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: <sip:1002@10.0.0.21:5060>\r\n\
             {content_type}"
        ),
        body,
    )
}

#[test]
fn re_invites_crossing_get_491_and_back_off_by_call_id_ownership() {
    let mut ours = confirmed_b_leg();
    assert!(ours.can_send_offer());
    let hold = ours.new_request(Method::Invite, Some(Body::sdp(SDP)));
    assert!(ours.awaiting_answer() && !ours.can_send_offer());

    let theirs = callee_in_dialog("INVITE", 7, SDP);
    assert_eq!(DialogId::of_request(&theirs).as_ref(), Some(ours.id()));
    assert_eq!(ours.on_request(&theirs), Err(Refusal::Glare));
    assert_eq!(ours.remote_seq(), Some(7), "a refused request still counts");
    let pending = Refusal::Glare.response(&theirs, 0);
    assert_eq!(
        (pending.status, pending.reason.as_str()),
        (491, "Request Pending")
    );

    let mut glare = polycom("491 Request Pending", true, "");
    glare
        .headers
        .set(Known::CSeq, format!("{} INVITE", hold.cseq().unwrap().seq));
    ours.on_response(&glare);
    assert!(ours.can_send_offer());
    assert_eq!(ours.state(), DialogState::Confirmed);

    // We made the Call-ID: 2.1 to 4 s in 10 ms steps.
    assert_eq!(ours.glare_retry_delay(0), Duration::from_millis(2100));
    assert_eq!(ours.glare_retry_delay(190), Duration::from_millis(4000));
    assert_eq!(ours.glare_retry_delay(191), Duration::from_millis(2100));
    assert_eq!(
        ours.glare_retry_delay(u32::MAX),
        Duration::from_millis(2100 + 10 * (u32::MAX % 191) as u64)
    );
    // The peer made it: 0 to 2 s.
    let a_leg = answered_a_leg();
    assert_eq!(a_leg.glare_retry_delay(0), Duration::ZERO);
    assert_eq!(a_leg.glare_retry_delay(200), Duration::from_millis(2000));
    assert_eq!(a_leg.glare_retry_delay(201), Duration::ZERO);
    assert_eq!(a_leg.glare_retry_delay(57), Duration::from_millis(570));
}

#[test]
fn updates_collide_only_when_they_carry_an_offer() {
    let mut dialog = confirmed_b_leg();
    dialog.new_request(Method::Invite, None);
    // A bare UPDATE (a target refresh or session-timer refresh) is no offer.
    assert_eq!(
        dialog.on_request(&callee_in_dialog("UPDATE", 3, "")),
        Ok(())
    );
    assert_eq!(
        dialog.on_request(&callee_in_dialog("UPDATE", 4, SDP)),
        Err(Refusal::Glare)
    );
}

#[test]
fn a_second_offer_from_the_peer_gets_500_with_retry_after() {
    let mut dialog = confirmed_b_leg();
    let first = callee_in_dialog("INVITE", 3, SDP);
    assert_eq!(dialog.on_request(&first), Ok(()));
    assert!(dialog.owes_answer() && !dialog.can_send_offer());
    let second = callee_in_dialog("INVITE", 4, SDP);
    assert_eq!(dialog.on_request(&second), Err(Refusal::OfferPending));
    let resp = Refusal::OfferPending.response(&second, 26);
    assert_eq!(resp.status, 500);
    assert_eq!(resp.headers.get(Known::RetryAfter).unwrap(), "4");
    let update = callee_in_dialog("UPDATE", 5, SDP);
    assert_eq!(dialog.on_request(&update), Err(Refusal::OfferPending));
    // Answering the first frees the dialog for the next offer.
    dialog.respond(&first, 200);
    assert!(dialog.can_send_offer());
    assert_eq!(
        dialog.on_request(&callee_in_dialog("UPDATE", 6, SDP)),
        Ok(())
    );
}

#[test]
fn early_dialog_update_offer_while_our_invite_is_pending_is_glare() {
    let (_, seed) = new_uac_invite(b_leg_params());
    let mut early = seed
        .dialog_for(&polycom("183 Session Progress", true, SDP))
        .unwrap();
    assert_eq!(
        early.on_request(&callee_in_dialog("UPDATE", 1, SDP)),
        Err(Refusal::Glare)
    );
    // And on the UAS side, an offer in an UPDATE before we answered the INVITE's.
    let (mut a, _) = a_leg();
    let update = phone_in_dialog("UPDATE", 3, "Content-Type: application/sdp\r\n", SDP);
    assert_eq!(a.on_request(&update), Err(Refusal::OfferPending));
}

// ---- identity ----

#[test]
fn dialog_ids_need_both_sides_tags() {
    let invite = request(PHONE_INVITE, SDP);
    assert_eq!(
        DialogId::of_request(&invite),
        None,
        "no To tag: not in a dialog"
    );
    assert_eq!(
        DialogId::of_response(&fork_response("100 Trying", "", "", "")),
        None
    );
    // A peer without a From tag (RFC 2543) gets an empty remote tag.
    let mut old = phone_in_dialog("BYE", 3, "", "");
    old.headers.set(Known::From, "<sip:1001@pbx.example.com>");
    assert_eq!(DialogId::of_request(&old).unwrap().remote_tag, "");
}

#[test]
fn tags_and_call_ids_are_random_and_prefixed() {
    let (a, b) = (new_tag(), new_tag());
    assert_ne!(a, b);
    assert_eq!(a.len(), 16);
    assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    let id = new_call_id("sb3-");
    assert!(id.starts_with("sb3-") && id.len() == 4 + 32, "{id}");
    assert_ne!(id, new_call_id("sb3-"));
    let make = || {
        InviteParams::new(
            uri("sip:x@y"),
            NameAddr::parse_str("<sip:a@b>").unwrap(),
            NameAddr::parse_str("<sip:x@y>").unwrap(),
            uri("sip:c@d"),
            our_sent_by(),
        )
    };
    let (p, q) = (make(), make());
    assert_ne!(p.call_id, q.call_id);
    assert_ne!(p.local_tag, q.local_tag);
    assert_eq!(p.cseq, 1);
}
