//! Media: RTP/RTCP port pairs and the relay that bridges a call's two legs.
//! Pure parts (latching rules, RTP stream rewriting) take time as an argument and are
//! unit-tested; the relay is the thin tokio shell around them.

pub mod codec;
pub mod dtmf;
pub mod inband;
pub mod jitter;
pub mod latch;
pub mod listener;
pub mod music;
pub mod plan;
pub mod ports;
pub mod prompts;
pub mod recorder;
pub mod recording;
pub mod relay;
pub mod resample;
pub mod rtp;
pub mod speaker;
pub mod tone;
pub mod transcode;
pub mod wav;

pub use latch::Latch;
pub use ports::{PortAllocator, PortRange, RtpPortPair};
pub use relay::{LegStats, MediaEvent, MediaEvents, Relay, RelayConfig, Side};
pub use rtp::{StreamRewriter, is_rtp};
