//! switchboard: an office PBX and SIP trunk gateway.
//!
//! The layers (README "Architecture"): `sip` and `sdp` are pure protocol logic (no sockets,
//! no clock reads); `transport` and the rest are thin tokio shells around them.

pub mod admin;
pub mod b2bua;
pub mod config;
pub mod dialplan;
pub mod media;
pub mod registrar;
pub mod sdp;
pub mod server;
pub mod sip;
pub mod store;
pub mod transport;
