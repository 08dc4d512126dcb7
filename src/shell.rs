//! Quoting for the POSIX shell: the one place reprobox turns strings into shell words, for
//! the scripts it writes (the microVM's job description, diffoci's `podman save` stand-in,
//! the pipeline's `sh -c` lines) and for showing argv to people (`reprobox plan`).

use crate::error::{Error, Result};

/// `s` quoted for a POSIX shell script reprobox writes (`what` names it in the error: only a
/// NUL byte cannot be quoted).
pub fn quote(s: &str, what: &str) -> Result<String> {
    shlex::try_quote(s)
        .map(|c| c.into_owned())
        .map_err(|_| Error::bad_input(format!("{what} {s:?}"), "must not contain a NUL byte"))
}

/// One argv as a shell-quoted line, for display (an argument holding a NUL byte, which no
/// shell word can carry, is shown Debug-quoted rather than refused).
pub fn line(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            shlex::try_quote(a)
                .map(|c| c.into_owned())
                .unwrap_or_else(|_| format!("{a:?}"))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_leaves_plain_words_and_quotes_the_rest() {
        assert_eq!(quote("abc/def-1.0", "x").unwrap(), "abc/def-1.0");
        assert_eq!(quote("a b", "x").unwrap(), "'a b'");
        assert_eq!(quote("it's", "x").unwrap(), "\"it's\"");
        assert_eq!(quote("$repo", "x").unwrap(), "'$repo'");
        assert_eq!(quote("", "x").unwrap(), "''");
    }

    #[test]
    fn quote_refuses_a_nul_byte_naming_the_input() {
        let e = quote("a\0b", "guest path").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("guest path"), "{e}");
    }

    #[test]
    fn line_joins_quoted_words_and_shows_nul_debug_quoted() {
        let argv = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            line(&argv(&["sh", "-c", "echo $HOME > /x"])),
            "sh -c 'echo $HOME > /x'"
        );
        assert_eq!(line(&argv(&[])), "");
        assert_eq!(line(&argv(&["a\0b"])), "\"a\\0b\"");
    }
}
