//! Everything that comes from outside, pinned by sha256.

pub mod archive;
pub mod fetch;
pub mod git;
pub mod images;
pub mod lock;
pub mod mirror;
pub mod prepared;
pub mod registry;
pub mod store;
pub mod unpack;
pub mod wake;
