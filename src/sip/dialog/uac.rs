//! The UAC side: the INVITE we send to start a dialog, and the dialogs its responses
//! create (RFC 3261 §12.1.2, §13.2.2), one per To tag when the INVITE forks.

use super::glare::InFlight;
use super::outgoing::Head;
use super::{
    Body, Dialog, DialogId, DialogState, Role, SentBy, contact_uri, new_call_id, new_tag,
    record_route,
};
use crate::sip::checks::Capabilities;
use crate::sip::{
    HeaderName, Host, Known, Method, NameAddr, Request, Response, SipStr, SipUri, Uri,
};

/// What an INVITE we originate says. [`InviteParams::new`] fills in a random Call-ID and
/// tag, CSeq 1 and our Allow; set the fields before [`new_uac_invite`] to change them
/// (the core sets `call_id` from [`new_call_id`] with its `sb<shard>-` prefix).
#[derive(Clone, Debug)]
pub struct InviteParams {
    pub request_uri: Uri,
    /// Our identity; its tag is replaced by `local_tag`.
    pub from: NameAddr,
    /// The callee; any tag is removed.
    pub to: NameAddr,
    pub call_id: String,
    pub local_tag: String,
    pub cseq: u32,
    pub contact: Uri,
    pub sent_by: SentBy,
    /// A preloaded route set (an outbound proxy), written as Route in this order. It
    /// serves the INVITE only: the dialog's route set comes from Record-Route.
    pub route: Vec<NameAddr>,
    /// Allow and Supported values; an empty string leaves the header out.
    pub allow: String,
    pub supported: String,
    /// Headers copied from the other leg or added by the dialplan, after Contact.
    pub extra_headers: Vec<(HeaderName, SipStr)>,
    pub body: Option<Body>,
}

impl InviteParams {
    pub fn new(
        request_uri: Uri,
        from: NameAddr,
        to: NameAddr,
        contact: Uri,
        sent_by: SentBy,
    ) -> InviteParams {
        InviteParams {
            request_uri,
            from,
            to,
            call_id: new_call_id(""),
            local_tag: new_tag(),
            cseq: 1,
            contact,
            sent_by,
            route: Vec::new(),
            allow: Capabilities::pbx().allow_header(),
            supported: String::new(),
            extra_headers: Vec::new(),
            body: None,
        }
    }
}

/// `"Display" <sip:user@host>`: a From for a B leg, carrying the caller's name and
/// number under our own domain.
pub fn sip_address(display: Option<&str>, user: &str, host: Host) -> NameAddr {
    let mut addr = NameAddr::new(Uri::Sip(SipUri::new(Some(user), host, None)));
    addr.set_display_name(display);
    addr
}

/// The INVITE, with Max-Forwards 70 and a Via from `params.sent_by` with a fresh
/// branch, and what its responses need to create dialogs.
pub fn new_uac_invite(params: InviteParams) -> (Request, UacDialogSeed) {
    let mut from = params.from;
    from.set_tag(&params.local_tag);
    let mut to = params.to;
    to.params.remove("tag");
    let call_id = SipStr::from(params.call_id);
    let head = Head {
        sent_by: &params.sent_by,
        routes: params.route.iter().map(NameAddr::to_string).collect(),
        from: &from,
        to: &to,
        call_id: &call_id,
        cseq: params.cseq,
        contact: Some(&params.contact),
    };
    let mut req = head.request(Method::Invite, params.request_uri.clone());
    if !params.allow.is_empty() {
        req.headers.push(Known::Allow, params.allow);
    }
    if !params.supported.is_empty() {
        req.headers.push(Known::Supported, params.supported);
    }
    for (name, value) in params.extra_headers {
        req.headers.push(name, value);
    }
    if let Some(body) = params.body {
        req.set_body(&body.content_type, body.bytes);
    }
    let seed = UacDialogSeed {
        local_tag: SipStr::from(params.local_tag),
        call_id,
        local: from,
        remote: to,
        cseq: params.cseq,
        request_uri: params.request_uri,
        local_contact: params.contact,
        sent_by: params.sent_by,
    };
    (req, seed)
}

/// What a dialog created by a response to our INVITE starts from.
#[derive(Clone, Debug)]
pub struct UacDialogSeed {
    call_id: SipStr,
    local_tag: SipStr,
    local: NameAddr,
    remote: NameAddr,
    cseq: u32,
    request_uri: Uri,
    local_contact: Uri,
    sent_by: SentBy,
}

impl UacDialogSeed {
    pub fn call_id(&self) -> &SipStr {
        &self.call_id
    }

    pub fn local_tag(&self) -> &SipStr {
        &self.local_tag
    }

    /// The INVITE's CSeq number.
    pub fn cseq(&self) -> u32 {
        self.cseq
    }

    /// A new dialog from a response to the INVITE: a 101–299 with a To tag (§12.1.2),
    /// early for a 1xx, confirmed for a 2xx. The route set is the Record-Route reversed
    /// (empty if it doesn't parse), the remote target the Contact; a 2xx without a
    /// Contact gets the Request-URI instead, so it can still be ACKed and hung up.
    pub fn dialog_for(&self, resp: &Response) -> Option<Dialog> {
        if !(101..300).contains(&resp.status) {
            return None;
        }
        let remote_tag = resp
            .to()
            .ok()?
            .params
            .value("tag")
            .filter(|t| !t.is_empty())?
            .clone();
        let mut remote = self.remote.clone();
        remote.params.set("tag", Some(remote_tag.clone()));
        let remote_target = contact_uri(resp.contacts())
            .ok()
            .flatten()
            .unwrap_or_else(|| self.request_uri.clone());
        let mut route_set = record_route(&resp.headers).unwrap_or_default();
        route_set.reverse();
        let mut dialog = Dialog {
            id: DialogId {
                call_id: self.call_id.clone(),
                local_tag: self.local_tag.clone(),
                remote_tag,
            },
            role: Role::Uac,
            state: DialogState::Early,
            local: self.local.clone(),
            remote,
            local_seq: Some(self.cseq),
            remote_seq: None,
            local_contact: self.local_contact.clone(),
            remote_target,
            pending_target: None,
            route_set,
            sent_by: self.sent_by.clone(),
            in_flight: InFlight::invite_sent(self.cseq),
        };
        dialog.on_response(resp);
        Some(dialog)
    }
}

/// The dialogs one INVITE of ours has produced, one per To tag. A forking proxy ahead
/// can return several early dialogs and, when two callees answer at once, several 2xx:
/// each 2xx confirms (or creates) its own dialog, to be ACKed, and every one but the
/// winner hung up with BYE.
#[derive(Clone, Debug)]
pub struct Forks {
    seed: UacDialogSeed,
    dialogs: Vec<Dialog>,
}

impl Forks {
    pub fn new(seed: UacDialogSeed) -> Forks {
        Forks {
            seed,
            dialogs: Vec::new(),
        }
    }

    pub fn seed(&self) -> &UacDialogSeed {
        &self.seed
    }

    /// Applies a response of the INVITE's client transaction and returns the dialog it
    /// belongs to, created when its To tag is new. `None` for a response that creates no
    /// dialog (100, a 1xx without a To tag) and for a final failure, which ends every
    /// early dialog.
    pub fn on_response(&mut self, resp: &Response) -> Option<&mut Dialog> {
        if resp.status >= 300 {
            for dialog in &mut self.dialogs {
                if dialog.state == DialogState::Early {
                    dialog.on_response(resp);
                }
            }
            return None;
        }
        let to = resp.to().ok()?;
        let tag = to.tag()?;
        match self.dialogs.iter().position(|d| d.id.remote_tag == tag) {
            Some(i) => {
                let dialog = &mut self.dialogs[i];
                dialog.on_response(resp);
                Some(dialog)
            }
            None => {
                self.dialogs.push(self.seed.dialog_for(resp)?);
                self.dialogs.last_mut()
            }
        }
    }

    pub fn dialogs(&self) -> &[Dialog] {
        &self.dialogs
    }

    pub fn get_mut(&mut self, remote_tag: &str) -> Option<&mut Dialog> {
        self.dialogs
            .iter_mut()
            .find(|d| d.id.remote_tag == remote_tag)
    }

    /// The winner's dialog, for the leg to keep once the INVITE is answered.
    pub fn into_dialog(self, remote_tag: &str) -> Option<Dialog> {
        self.dialogs
            .into_iter()
            .find(|d| d.id.remote_tag == remote_tag)
    }
}
