//! Requests we send inside a dialog (RFC 3261 §12.2.1), the ACK for a 2xx (§13.2.2.4),
//! and the responses they get.

use super::{
    Body, Dialog, DialogState, Role, SentBy, contact_uri, is_target_refresh, record_route,
};
use crate::sip::{Known, Method, NameAddr, Request, Response, SipStr, Uri};

/// The headers every request we originate starts with, in the order they are written:
/// Via, Max-Forwards, Route, From, To, Call-ID, CSeq, Contact.
pub(super) struct Head<'a> {
    pub sent_by: &'a SentBy,
    pub routes: Vec<String>,
    pub from: &'a NameAddr,
    pub to: &'a NameAddr,
    pub call_id: &'a SipStr,
    pub cseq: u32,
    pub contact: Option<&'a Uri>,
}

impl Head<'_> {
    pub(super) fn request(&self, method: Method, uri: Uri) -> Request {
        let mut req = Request::new(method, uri);
        let h = &mut req.headers;
        h.push(Known::Via, self.sent_by.via());
        h.push(Known::MaxForwards, SipStr::from_static("70"));
        for route in &self.routes {
            h.push(Known::Route, route.as_str());
        }
        h.push(Known::From, self.from.to_string());
        h.push(Known::To, self.to.to_string());
        h.push(Known::CallId, self.call_id.clone());
        h.push(Known::CSeq, format!("{} {}", self.cseq, req.method));
        if let Some(contact) = self.contact {
            h.push(Known::Contact, format!("<{contact}>"));
        }
        req
    }
}

/// True for a route URI of a loose router (RFC 3261 §16.12.1).
fn is_loose(route: &NameAddr) -> bool {
    route.uri.as_sip().is_some_and(|u| u.params.has("lr"))
}

impl Dialog {
    /// A new request in the dialog (BYE, re-INVITE, UPDATE, INFO, REFER, ...; the ACK of
    /// a 2xx comes from [`Dialog::ack_for_2xx`], a CANCEL from the transaction layer) with
    /// the next local CSeq, a fresh branch, and our Contact on target refreshes. A UAS-side
    /// dialog's first request gets CSeq 1. An INVITE, or an UPDATE with a body, counts
    /// as our offer until [`Dialog::on_response`] sees its final response; check
    /// [`Dialog::can_send_offer`] first. A BYE ends the dialog.
    pub fn new_request(&mut self, method: Method, body: Option<Body>) -> Request {
        let seq = self.local_seq.map_or(1, |s| s.wrapping_add(1));
        self.local_seq = Some(seq);
        self.in_flight.sent(&method, seq, body.is_some());
        if method == Method::Bye {
            self.state = DialogState::Terminated;
        }
        self.build(method, seq, body)
    }

    /// The ACK for a 2xx to our INVITE with CSeq `invite_cseq` (§13.2.2.4): built like
    /// any request in the dialog, with the INVITE's CSeq number, method ACK and a new
    /// branch; `body` is the answer when the 2xx carried the offer. Keep it and send it
    /// again for each retransmission of that 2xx. Credentials the INVITE carried are
    /// the caller's to copy.
    pub fn ack_for_2xx(&self, invite_cseq: u32, body: Option<Body>) -> Request {
        self.build(Method::Ack, invite_cseq, body)
    }

    fn build(&self, method: Method, seq: u32, body: Option<Body>) -> Request {
        let (uri, routes) = self.request_uri_and_routes();
        let contact = is_target_refresh(&method).then_some(&self.local_contact);
        let head = Head {
            sent_by: &self.sent_by,
            routes,
            from: &self.local,
            to: &self.remote,
            call_id: &self.id.call_id,
            cseq: seq,
            contact,
        };
        let mut req = head.request(method, uri);
        if let Some(body) = body {
            req.set_body(&body.content_type, body.bytes);
        }
        req
    }

    /// §12.2.1.1. With a loose router first (`;lr`), the Request-URI is the remote target
    /// and the route set becomes Route as is. A strict router (RFC 2543) expects the
    /// Request-URI to be itself: its URI, without the parameters and headers a
    /// Request-URI can't carry, goes there, and the remote target goes last in Route.
    fn request_uri_and_routes(&self) -> (Uri, Vec<String>) {
        match self.route_set.split_first() {
            Some((first, rest)) if !is_loose(first) => {
                let mut uri = first.uri.clone();
                if let Uri::Sip(sip) = &mut uri {
                    sip.params.remove("method");
                    sip.headers.clear();
                }
                let routes = rest
                    .iter()
                    .map(NameAddr::to_string)
                    .chain([format!("<{}>", self.remote_target)])
                    .collect();
                (uri, routes)
            }
            _ => (
                self.remote_target.clone(),
                self.route_set.iter().map(NameAddr::to_string).collect(),
            ),
        }
    }

    /// A response to a request we sent in this dialog, the creating INVITE included
    /// (CANCEL's responses are not the dialog's). Applies: the Contact of a 2xx to a
    /// target refresh, or of any 1xx/2xx to the INVITE of an early dialog, as the remote
    /// target; on the 2xx that confirms an early dialog we created, the route set
    /// recomputed from its Record-Route (§13.2.2.4); the end of our offer exchange on a
    /// final response; and the end of the dialog when the initial INVITE fails or any
    /// request gets 408 or 481 (§12.2.1.2). A 2xx to an INVITE still needs
    /// [`Dialog::ack_for_2xx`].
    pub fn on_response(&mut self, resp: &Response) {
        let Ok(cseq) = resp.cseq() else {
            return;
        };
        let status = resp.status;
        let initial = self.role == Role::Uac
            && self.state == DialogState::Early
            && cseq.method == Method::Invite;
        let refreshes_target = is_target_refresh(&cseq.method)
            && (resp.is_success() || (initial && (101..200).contains(&status)));
        if refreshes_target && let Ok(Some(uri)) = contact_uri(resp.contacts()) {
            self.remote_target = uri;
        }
        if initial && resp.is_success() {
            if let Ok(mut routes) = record_route(&resp.headers) {
                routes.reverse();
                self.route_set = routes;
            }
            self.state = DialogState::Confirmed;
        }
        if status >= 200 {
            self.in_flight.answered_ours(&cseq.method, cseq.seq);
        }
        if (initial && status >= 300) || matches!(status, 408 | 481) {
            self.state = DialogState::Terminated;
        }
    }
}
