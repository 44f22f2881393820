//! Placeholder until the dialplan engine merges: the call boundary only.
pub mod call;
