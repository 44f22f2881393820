//! The UAS side: the dialog an INVITE we answer creates (RFC 3261 §12.1.1), and every
//! response we send inside a dialog.

use super::glare::InFlight;
use super::{
    Dialog, DialogId, DialogState, Role, SentBy, contact_uri, is_target_refresh, record_route,
};
use crate::sip::{Known, Method, Request, Response, SipStr, SyntaxError, Uri, reason_phrase};

impl Dialog {
    /// The dialog of an INVITE we answer, in the early state until [`Dialog::respond`]
    /// sends its 2xx. `local_tag` goes into the To of every response (make one with
    /// [`super::new_tag`]); `local_contact` is our Contact; `sent_by` the Via of requests
    /// we send on this dialog, normally the listener the INVITE arrived on. The route
    /// set is the Record-Route as received, the remote target the Contact.
    ///
    /// Errors name what is missing or malformed, for a 400.
    pub fn from_invite_uas(
        invite: &Request,
        local_tag: &str,
        local_contact: Uri,
        sent_by: SentBy,
    ) -> Result<Dialog, SyntaxError> {
        let call_id = invite
            .call_id()
            .filter(|c| !c.is_empty())
            .ok_or(SyntaxError("missing Call-ID"))?
            .clone();
        let remote = invite.from()?;
        let mut local = invite.to()?;
        local.set_tag(local_tag);
        let seq = invite.cseq()?.seq;
        let remote_target =
            contact_uri(invite.contacts())?.ok_or(SyntaxError("INVITE without Contact"))?;
        let route_set = record_route(&invite.headers)?;
        Ok(Dialog {
            id: DialogId {
                call_id,
                local_tag: SipStr::from(local_tag),
                remote_tag: remote.params.value("tag").cloned().unwrap_or_default(),
            },
            role: Role::Uas,
            state: DialogState::Early,
            local,
            remote,
            local_seq: None,
            remote_seq: Some(seq),
            local_contact,
            remote_target,
            pending_target: None,
            route_set,
            sent_by,
            in_flight: InFlight::invite_received(seq),
        })
    }

    /// A response to `req`, a request of this dialog: the INVITE that created it or
    /// one accepted by [`Dialog::on_request`]. Adds our To tag, our Contact to 1xx/2xx of
    /// target refreshes, and, on the INVITE that creates the dialog, its Record-Route
    /// (§12.1.1). A final response ends the peer's offer exchange; a 2xx applies a
    /// target refresh and confirms the dialog, a failure of the initial INVITE ends it.
    /// Set another reason phrase on the result if the standard one doesn't fit.
    pub fn respond(&mut self, req: &Request, status: u16) -> Response {
        let mut resp = Response::to_request(req, status, reason_phrase(status));
        resp.set_to_tag(&self.id.local_tag);
        let Ok(seq) = req.cseq().map(|c| c.seq) else {
            return resp;
        };
        let establishing = self.role == Role::Uas
            && self.state == DialogState::Early
            && req.method == Method::Invite;
        let positive = (101..300).contains(&status);
        if establishing && positive {
            for rr in req.headers.get_all(Known::RecordRoute) {
                resp.headers.push(Known::RecordRoute, rr.clone());
            }
        }
        if positive && is_target_refresh(&req.method) {
            resp.headers
                .push(Known::Contact, format!("<{}>", self.local_contact));
        }
        if status >= 200 {
            self.in_flight.answered_theirs(&req.method, seq);
            if let Some((_, uri)) = self.pending_target.take_if(|(s, _)| *s == seq)
                && status < 300
            {
                self.remote_target = uri;
            }
            if establishing {
                self.state = if status < 300 {
                    DialogState::Confirmed
                } else {
                    DialogState::Terminated
                };
            }
        }
        resp
    }
}
