//! SIP dialogs (RFC 3261 §12–§15, RFC 3311 UPDATE, RFC 4028 session timers), one per
//! B2BUA leg, sans-IO.
//!
//! A [`Dialog`] holds what RFC 3261 §12 calls the dialog state (Call-ID, tags, local
//! and remote URIs, CSeq counters, remote target, route set) and which offer-bearing
//! transactions (INVITE, UPDATE with a body) are in flight in each direction, which is
//! what glare resolution (§14, RFC 3311 §5.2) needs. It builds the requests a leg sends
//! and checks the ones it receives; it never sends anything and never reads a clock.
//! Where an RFC asks for randomness (the 491 back-off, Retry-After) the random value is
//! an argument, so tests are exact.
//!
//! How a leg uses it:
//! - **We are the UAS** (the A leg): [`Dialog::from_invite_uas`] once the INVITE is
//!   accepted for processing, then [`Dialog::respond`] for every response on the dialog,
//!   the INVITE's own 1xx/2xx included.
//! - **We are the UAC** (a B leg): [`new_uac_invite`] builds the INVITE and a
//!   [`UacDialogSeed`]; [`Forks`] turns the INVITE's responses into dialogs, one per To
//!   tag, so a forked INVITE yields several early dialogs and every 2xx gets a dialog
//!   to ACK (and, if it lost the race, to BYE).
//! - **Inside the dialog**: [`Dialog::new_request`] and [`Dialog::ack_for_2xx`] for what
//!   we send, [`Dialog::on_response`] for the responses to it; [`Dialog::on_request`]
//!   for what we receive, answered with [`Dialog::respond`] or [`Refusal::response`].
//!
//! Building a request or response is taken as sending it: the dialog counts a request
//! in flight from [`Dialog::new_request`] and a received one answered from
//! [`Dialog::respond`]. The CANCEL of an INVITE and the ACK of a non-2xx are hop-by-hop
//! and belong to the transaction layer ([`crate::sip::transaction::cancel_for`]).

mod glare;
mod ids;
mod incoming;
mod outgoing;
pub mod session_timer;
mod uac;
mod uas;

#[cfg(test)]
mod tests;

pub use ids::{DialogId, new_call_id, new_tag};
pub use incoming::Refusal;
pub use session_timer::{MIN_SE_FLOOR, Refresher, SessionExpires, SessionTimer, TimerPolicy};
pub use uac::{Forks, InviteParams, UacDialogSeed, new_uac_invite, sip_address};

use crate::sip::transaction::{TransportKind, new_branch};
use crate::sip::{Contacts, Headers, Host, Known, Method, NameAddr, SipStr, SyntaxError, Uri};
use bytes::Bytes;
use glare::InFlight;
use std::fmt::Write as _;

/// Which side of the dialog-creating INVITE we were.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// We sent the INVITE, so we generated the Call-ID.
    Uac,
    /// We received it.
    Uas,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DialogState {
    /// Created by a 1xx with a To tag; the INVITE has no final response yet.
    Early,
    /// A 2xx was sent or received.
    Confirmed,
    /// BYE sent or received, the INVITE failed, or a request got 481/408.
    Terminated,
}

/// Our address in the Via of requests we originate: the transport and host:port of
/// the listener the leg's messages use. Each request gets a fresh branch and `;rport`
/// (RFC 3581), so a peer's responses find us through NAT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentBy {
    pub transport: TransportKind,
    pub host: Host,
    pub port: Option<u16>,
}

impl SentBy {
    /// A Via header value with a new RFC 3261 branch.
    pub fn via(&self) -> String {
        let transport = match self.transport {
            TransportKind::Udp => "UDP",
            TransportKind::Tcp => "TCP",
            TransportKind::Tls => "TLS",
            TransportKind::Ws => "WS",
            TransportKind::Wss => "WSS",
        };
        let mut via = format!("SIP/2.0/{transport} {}", self.host);
        if let Some(port) = self.port {
            let _ = write!(via, ":{port}");
        }
        let _ = write!(via, ";rport;branch={}", new_branch());
        via
    }
}

/// A message body and its Content-Type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Body {
    pub content_type: SipStr,
    pub bytes: Bytes,
}

impl Body {
    pub fn sdp(bytes: impl Into<Bytes>) -> Body {
        Body {
            content_type: SipStr::from_static("application/sdp"),
            bytes: bytes.into(),
        }
    }
}

/// The state of one dialog (RFC 3261 §12.1). Fields change only through the methods
/// that see the dialog's messages.
#[derive(Clone, Debug)]
pub struct Dialog {
    id: DialogId,
    role: Role,
    state: DialogState,
    /// Our From (as UAC) or To (as UAS), with our tag.
    local: NameAddr,
    /// Their address, with their tag when they sent one.
    remote: NameAddr,
    /// The CSeq of the last request we sent; `None` until a UAS-side dialog sends one.
    local_seq: Option<u32>,
    /// The CSeq of the last request we accepted from the peer.
    remote_seq: Option<u32>,
    local_contact: Uri,
    remote_target: Uri,
    /// The Contact of a target refresh we received, with its CSeq, until we accept it.
    pending_target: Option<(u32, Uri)>,
    /// Route header values for our requests, in the order they are written.
    route_set: Vec<NameAddr>,
    sent_by: SentBy,
    in_flight: InFlight,
}

impl Dialog {
    pub fn id(&self) -> &DialogId {
        &self.id
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn state(&self) -> DialogState {
        self.state
    }

    /// Ends the dialog from outside: the INVITE or an in-dialog request timed out, or
    /// its transport failed (RFC 3261 §12.2.1.2 treats these like a 408).
    pub fn terminate(&mut self) {
        self.state = DialogState::Terminated;
    }

    /// Our URI and tag, as in the From of requests we send.
    pub fn local(&self) -> &NameAddr {
        &self.local
    }

    /// The peer's URI and tag, as in the To of requests we send.
    pub fn remote(&self) -> &NameAddr {
        &self.remote
    }

    pub fn local_seq(&self) -> Option<u32> {
        self.local_seq
    }

    pub fn remote_seq(&self) -> Option<u32> {
        self.remote_seq
    }

    pub fn local_contact(&self) -> &Uri {
        &self.local_contact
    }

    /// Where in-dialog requests are addressed: the peer's latest Contact.
    pub fn remote_target(&self) -> &Uri {
        &self.remote_target
    }

    pub fn route_set(&self) -> &[NameAddr] {
        &self.route_set
    }

    /// The URI our in-dialog requests go to first (RFC 3261 §8.1.2): the first route
    /// when there is a route set, the remote target otherwise. The transport resolves
    /// it, or sends to the flow the peer's messages arrive on when it is behind NAT.
    pub fn next_hop(&self) -> &Uri {
        self.route_set
            .first()
            .map_or(&self.remote_target, |r| &r.uri)
    }

    /// True when we generated the Call-ID, which decides the 491 back-off (§14.1).
    pub fn owns_call_id(&self) -> bool {
        self.role == Role::Uac
    }
}

/// Methods whose Contact replaces the remote target (RFC 3261 §12.2, RFC 3311, RFC
/// 6665); we send our Contact in them too.
fn is_target_refresh(method: &Method) -> bool {
    matches!(
        method,
        Method::Invite | Method::Update | Method::Subscribe | Method::Notify | Method::Refer
    )
}

/// The URI of a message's Contact. An INVITE or its response should carry exactly one;
/// extra ones are ignored rather than failing the call.
fn contact_uri(
    contacts: Result<Option<Contacts>, SyntaxError>,
) -> Result<Option<Uri>, SyntaxError> {
    match contacts? {
        None => Ok(None),
        Some(Contacts::Star) => Err(SyntaxError("Contact '*' outside REGISTER")),
        Some(Contacts::List(list)) => Ok(list.into_iter().next().map(|c| c.uri)),
    }
}

/// Every Record-Route element of a message, in the order received.
fn record_route(headers: &Headers) -> Result<Vec<NameAddr>, SyntaxError> {
    headers
        .list(Known::RecordRoute)
        .map(|v| NameAddr::parse(&v, &v))
        .collect()
}
