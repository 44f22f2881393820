//! Sans-IO SIP: message model, parser, serializer, URIs, headers, transactions.
//! Nothing here touches a socket or reads a clock.

pub mod auth;
pub mod checks;
pub mod dialog;
pub mod header;
pub mod message;
pub mod method;
pub mod name_addr;
pub mod params;
pub mod parse;
pub mod text;
pub mod transaction;
pub mod uri;
pub mod via;

pub use header::{Header, HeaderName, Headers, Known};
pub use message::{CSeq, Message, Request, Response, reason_phrase};
pub use method::Method;
pub use name_addr::{Contacts, NameAddr};
pub use params::{Param, Params, SyntaxError};
pub use parse::{Frame, ParseError, frame_stream, parse_datagram, parse_framed};
pub use text::SipStr;
pub use uri::{Host, SipUri, Uri};
pub use via::Via;
