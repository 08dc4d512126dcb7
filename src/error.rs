//! The crate's error type and the one place where an error becomes an exit code.
//!
//! Callers branch on the variant: `BadInput` is the user's to fix (exit 2), everything
//! that means "the machine, the network or the sandbox let us down" is exit 3, and an
//! interrupt is 130. "Built but differs" is not an error: it is a verdict, returned as
//! a value by the commands that produce one.

use std::path::{Path, PathBuf};

/// Exit codes of DESIGN.md decision 7.
pub mod exit {
    /// Reproduced / success.
    pub const OK: i32 = 0;
    /// Built, but the result differs from the published one.
    pub const DIFFERS: i32 = 1;
    /// Bad input or usage.
    pub const BAD_INPUT: i32 = 2;
    /// Could not complete: environment, network, sandbox.
    pub const INCOMPLETE: i32 = 3;
    /// Interrupted by SIGINT/SIGTERM.
    pub const INTERRUPTED: i32 = 130;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input the user gave (an argument, a file, a profile) is not what was expected.
    /// `input` names it; `message` says what was expected.
    #[error("{input}: {message}")]
    BadInput { input: String, message: String },

    /// An I/O operation on a named path failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A network operation on a named URL failed.
    #[error("{url}: {message}")]
    Network { url: String, message: String },

    /// Bytes did not match the sha256 they were pinned to.
    #[error("{what}: expected sha256 {expected}, got {actual} (tampered or corrupt)")]
    Tampered {
        what: String,
        expected: String,
        actual: String,
    },

    /// The sandbox could not be set up or a syscall in it failed; names the resource.
    #[error("sandbox: {0}")]
    Sandbox(String),

    /// The host lacks something needed (a tool, a kernel feature).
    #[error("environment: {0}")]
    Environment(String),

    /// SIGINT or SIGTERM arrived; everything was cleaned up.
    #[error("interrupted")]
    Interrupted,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn bad_input(input: impl Into<String>, message: impl Into<String>) -> Self {
        Error::BadInput {
            input: input.into(),
            message: message.into(),
        }
    }

    pub fn io(op: &'static str, path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    pub fn network(url: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Network {
            url: url.into(),
            message: message.into(),
        }
    }

    /// The exit code this error maps to (DESIGN.md decision 7).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::BadInput { .. } => exit::BAD_INPUT,
            Error::Interrupted => exit::INTERRUPTED,
            Error::Io { .. }
            | Error::Network { .. }
            | Error::Tampered { .. }
            | Error::Sandbox(_)
            | Error::Environment(_) => exit::INCOMPLETE,
        }
    }
}

/// Attach the operation and path to an `io::Result`.
pub trait IoContext<T> {
    fn ctx(self, op: &'static str, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, op: &'static str, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(op, path, e))
    }
}

/// `dir` (`what` names it) is a directory or nothing yet, as a directory reprobox fills must
/// be: a file there is bad input, refused before anything is fetched or written (creating
/// the directory later would fail only as an I/O error, after the work).
pub fn dir_or_absent(dir: &Path, what: &str) -> Result<()> {
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => Err(Error::bad_input(
            format!("{what} {}", dir.display()),
            "a directory (or a path to create one at), not a file",
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_design() {
        assert_eq!(Error::bad_input("x", "y").exit_code(), 2);
        assert_eq!(Error::Sandbox("x".into()).exit_code(), 3);
        assert_eq!(Error::network("u", "m").exit_code(), 3);
        assert_eq!(Error::Interrupted.exit_code(), 130);
        let e = std::fs::read("/nonexistent/reprobox").ctx("read", "/nonexistent/reprobox");
        let e = e.unwrap_err();
        assert_eq!(e.exit_code(), 3);
        assert!(e.to_string().contains("/nonexistent/reprobox"));
    }

    #[test]
    fn a_file_where_a_directory_goes_is_bad_input() {
        let t = tempfile::tempdir().unwrap();
        let file = t.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let e = dir_or_absent(&file, "output directory").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string()
                .contains(&format!("output directory {}", file.display())),
            "{e}"
        );
        // A directory, or nothing yet, is fine.
        dir_or_absent(t.path(), "output directory").unwrap();
        dir_or_absent(&t.path().join("absent"), "output directory").unwrap();
    }
}
