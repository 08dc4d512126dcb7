//! Everything that comes from outside, pinned by sha256.
pub mod unpack;
