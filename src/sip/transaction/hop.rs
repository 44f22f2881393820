//! Requests that travel one hop along an INVITE's path: the ACK for a non-2xx final
//! response (RFC 3261 §17.1.1.3) and CANCEL (§9.1). Both reuse the INVITE's top Via,
//! so they reach the same next hop and match its server transaction.

use crate::sip::{Known, Method, Request, Response, SipStr};

/// The ACK the INVITE client transaction sends for a 300–699 response: the INVITE's
/// Request-URI, Call-ID, From, CSeq number and Route set, the response's To (with the
/// tag it added), and a single Via equal to the INVITE's top Via.
pub fn ack_for(invite: &Request, response: &Response) -> Request {
    hop_by_hop(invite, Method::Ack, response.headers.get(Known::To))
}

/// A CANCEL for `invite`: the same fields as the INVITE (To included, no tag added)
/// and the same top Via, so it shares the INVITE's branch. Send it as a new client
/// transaction to the INVITE's destination, once a provisional response has arrived.
pub fn cancel_for(invite: &Request) -> Request {
    hop_by_hop(invite, Method::Cancel, invite.headers.get(Known::To))
}

fn hop_by_hop(invite: &Request, method: Method, to: Option<&SipStr>) -> Request {
    let mut req = Request::new(method.clone(), invite.uri.clone());
    let h = &invite.headers;
    if let Some(via) = h.list(Known::Via).next() {
        req.headers.push(Known::Via, via);
    }
    let max_forwards = h
        .get(Known::MaxForwards)
        .cloned()
        .unwrap_or(SipStr::from_static("70"));
    req.headers.push(Known::MaxForwards, max_forwards);
    for route in h.get_all(Known::Route) {
        req.headers.push(Known::Route, route.clone());
    }
    for (k, v) in [
        (Known::From, h.get(Known::From)),
        (Known::To, to),
        (Known::CallId, h.get(Known::CallId)),
    ] {
        if let Some(v) = v {
            req.headers.push(k, v.clone());
        }
    }
    if let Ok(cseq) = invite.cseq() {
        req.headers
            .push(Known::CSeq, format!("{} {method}", cseq.seq));
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{Message, parse_datagram};

    fn parse_request(text: &str) -> Request {
        match parse_datagram(text.as_bytes().to_vec().into()) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn parse_response(text: &str) -> Response {
        match parse_datagram(text.as_bytes().to_vec().into()) {
            Ok(Message::Response(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    const INVITE: &str = "INVITE sip:bob@192.0.2.4 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnashds8, SIP/2.0/UDP 10.1.1.1;branch=z9hG4bKold\r\n\
        Max-Forwards: 69\r\n\
        Route: <sip:p1.example.com;lr>\r\n\
        Route: <sip:p2.example.com;lr>\r\n\
        From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
        To: Bob <sip:bob@biloxi.example.com>\r\n\
        Call-ID: a84b4c76e66710\r\n\
        CSeq: 314159 INVITE\r\n\
        Contact: <sip:alice@192.0.2.1>\r\n\
        Content-Type: application/sdp\r\n\
        Content-Length: 4\r\n\r\nv=0\n";

    #[test]
    fn ack_for_non_2xx_is_hop_by_hop() {
        let invite = parse_request(INVITE);
        let resp = parse_response(
            "SIP/2.0 486 Busy Here\r\n\
             Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnashds8, SIP/2.0/UDP 10.1.1.1;branch=z9hG4bKold\r\n\
             From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
             To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n\
             Call-ID: a84b4c76e66710\r\n\
             CSeq: 314159 INVITE\r\n\
             Content-Length: 0\r\n\r\n",
        );
        let ack = String::from_utf8(ack_for(&invite, &resp).to_bytes()).unwrap();
        assert_eq!(
            ack,
            "ACK sip:bob@192.0.2.4 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnashds8\r\n\
             Max-Forwards: 69\r\n\
             Route: <sip:p1.example.com;lr>\r\n\
             Route: <sip:p2.example.com;lr>\r\n\
             From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
             To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n\
             Call-ID: a84b4c76e66710\r\n\
             CSeq: 314159 ACK\r\n\
             Content-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn cancel_keeps_the_invite_to_and_branch() {
        let cancel = cancel_for(&parse_request(INVITE));
        assert_eq!(cancel.method, Method::Cancel);
        assert_eq!(
            cancel.headers.get(Known::To).unwrap(),
            "Bob <sip:bob@biloxi.example.com>"
        );
        assert_eq!(cancel.top_via().unwrap().branch(), Some("z9hG4bKnashds8"));
        assert_eq!(cancel.headers.count(Known::Via), 1);
        assert_eq!(cancel.cseq().unwrap().seq, 314159);
        assert_eq!(cancel.cseq().unwrap().method, Method::Cancel);
        assert!(cancel.body.is_empty());
    }
}
