//! The container backend.
