//! Key presses (DTMF): from RFC 4733 events or in-band tones (reported by the media
//! task) and from SIP INFO. Each press reaches the script of the call (caller's keys),
//! the call record, and the other phone in the form it negotiated: RFC 4733 events
//! cross in the media, so only the changes of form are done here: an INFO towards a
//! phone that takes events becomes events, and events towards a phone that takes none
//! become an INFO (`application/dtmf-relay`).

use super::B2bua;
use super::in_dialog::other;
use crate::media::Side;
use crate::sip::dialog::Body;
use crate::sip::transaction::{TransactionLayer, TxKey};
use crate::sip::{Method, Request};
use std::time::{Duration, Instant};

/// Keys kept per call for its record.
pub const MAX_PRESSED: usize = 64;
/// How long a key sent as events is held when the INFO gave no duration.
const DEFAULT_PRESS: Duration = Duration::from_millis(100);

impl B2bua {
    /// A key pressed on `side`'s phone; `by_info` when it came as a SIP INFO, else from
    /// the media.
    pub(super) fn on_key(
        &mut self,
        txl: &mut TransactionLayer,
        id: u64,
        side: Side,
        digit: char,
        by_info: bool,
    ) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        tracing::debug!(?side, %digit, by_info, "key pressed");
        if call.pressed.len() < MAX_PRESSED {
            call.pressed.push(digit);
        }
        if side == Side::A {
            // A full buffer means the script is not reading: the key is dropped.
            let _ = call.digits.try_send(digit);
        }
        if by_info || call.b.is_none() {
            return;
        }
        let formats = super::leg_formats(call);
        let to = other(side);
        // Events from this phone reach the other in the media when it takes them;
        // in-band tones are in the audio anyway.
        let came_as_events = formats[super::side_index(side)].events.is_some();
        let takes_events = formats[super::side_index(to)].events.is_some();
        if !came_as_events || takes_events {
            return;
        }
        let Some((dialog, peer)) = call.leg_mut(to) else {
            return;
        };
        let body = Body {
            content_type: "application/dtmf-relay".into(),
            bytes: crate::media::dtmf::info_body(digit, DEFAULT_PRESS.as_millis() as u32)
                .into_bytes()
                .into(),
        };
        let info = dialog.new_request(Method::Info, Some(body));
        if let Ok(key) = txl.send_request(Instant::now(), peer, info) {
            call.own_requests.push((key, to));
            self.by_client_tx.insert(key, id);
        }
    }

    /// An INFO from `side`. A key press is taken here (200) and sent on as events to a
    /// phone that takes them; anything else, or a key for a phone without events, is
    /// relayed as it came. Returns false when the INFO is left to the relay.
    pub(super) fn on_info_key(
        &mut self,
        txl: &mut TransactionLayer,
        id: u64,
        side: Side,
        key: TxKey,
        req: &Request,
    ) -> bool {
        let content_type = req
            .content_type()
            .map(|c| c.to_string())
            .unwrap_or_default();
        let Some((digit, millis)) = crate::media::dtmf::parse_info(&content_type, &req.body) else {
            return false;
        };
        self.on_key(txl, id, side, digit, true);
        let Some(call) = self.calls.get_mut(&id) else {
            return true;
        };
        let to = other(side);
        let events = super::leg_formats(call)[super::side_index(to)].events;
        let relay = call.media.relay.as_ref().filter(|r| r.has(to));
        let bridged = call.b.is_some();
        match (bridged, relay, events) {
            (true, Some(relay), Some(events)) => {
                let length =
                    millis.map_or(DEFAULT_PRESS, |ms| Duration::from_millis(u64::from(ms)));
                relay.press(to, digit, length, events);
            }
            // The other phone takes no events: it gets the INFO itself.
            (true, _, _) => return false,
            // Nobody else: the key was for the script.
            (false, _, _) => {}
        }
        let Some((dialog, _)) = call.leg_mut(side) else {
            return true;
        };
        let resp = dialog.respond(req, 200);
        let _ = txl.send_response(Instant::now(), key, resp);
        true
    }
}
