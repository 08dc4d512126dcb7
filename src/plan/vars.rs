//! `{variable}` substitution in profile strings.
//!
//! Deliberately tiny: `{name}` is replaced, `{{` and `}}` are literal braces, anything else
//! (pacman's `$repo`, shell `${X}`) passes through. An unknown name is an error, so a typo
//! in a profile never reaches a command line.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Default)]
pub struct Vars {
    scalars: BTreeMap<String, String>,
    lists: BTreeMap<String, Vec<String>>,
}

impl Vars {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set(&mut self, k: impl Into<String>, v: impl Into<String>) {
        self.scalars.insert(k.into(), v.into());
    }

    /// A list variable: an argv element that is exactly `{name}` becomes one argument per
    /// item (nothing when the list is empty); inside a longer string it is space-joined.
    pub fn set_list(&mut self, k: impl Into<String>, v: Vec<String>) {
        self.lists.insert(k.into(), v);
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.scalars.get(k).map(String::as_str)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.scalars
            .keys()
            .chain(self.lists.keys())
            .map(String::as_str)
    }

    /// Expand a command line, splicing list variables.
    pub fn expand_argv(&self, argv: &[String], context: &str) -> Result<Vec<String>> {
        let mut out = Vec::with_capacity(argv.len());
        for a in argv {
            if let Some(name) = a.strip_prefix('{').and_then(|x| x.strip_suffix('}'))
                && let Some(items) = self.lists.get(name)
            {
                out.extend(items.iter().cloned());
                continue;
            }
            out.push(self.expand(a, context)?);
        }
        Ok(out)
    }

    /// Substitute every `{name}` in `template`; `context` names the template in errors
    /// (for example `profile archlinux-repro.toml, step make`).
    pub fn expand(&self, template: &str, context: &str) -> Result<String> {
        let mut out = String::with_capacity(template.len());
        let mut rest = template;
        while let Some(i) = rest.find(['{', '}']) {
            out.push_str(&rest[..i]);
            let tail = &rest[i..];
            if tail.starts_with("{{") || tail.starts_with("}}") {
                out.push_str(&tail[..1]);
                rest = &tail[2..];
                continue;
            }
            if let Some(after) = tail.strip_prefix('}') {
                out.push('}');
                rest = after;
                continue;
            }
            // `${...}` is the shell's, not ours.
            if out.ends_with('$') {
                let end = tail.find('}').map(|e| e + 1).unwrap_or(tail.len());
                out.push_str(&tail[..end]);
                rest = &tail[end..];
                continue;
            }
            let Some(end) = tail.find('}') else {
                return Err(Error::bad_input(
                    context.to_string(),
                    format!("unclosed '{{' in {template:?}"),
                ));
            };
            let name = &tail[1..end];
            match (self.scalars.get(name), self.lists.get(name)) {
                (Some(v), _) => out.push_str(v),
                (None, Some(l)) => out.push_str(&l.join(" ")),
                (None, None) => {
                    return Err(Error::bad_input(
                        context.to_string(),
                        format!(
                            "unknown variable {{{name}}} in {template:?}; known: {}",
                            self.names().collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
            }
            rest = &tail[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_known_and_keeps_foreign_syntax() {
        let mut v = Vars::new();
        v.set("snapshot", "2026/05/17");
        v.set("mirror", "http://127.0.0.1:7878");
        assert_eq!(
            v.expand("Server = {mirror}/repos/{snapshot}/$repo/os/$arch", "t")
                .unwrap(),
            "Server = http://127.0.0.1:7878/repos/2026/05/17/$repo/os/$arch"
        );
        assert_eq!(v.expand("${HOME} {{x}}", "t").unwrap(), "${HOME} {x}");
    }

    #[test]
    fn list_variables_splice_into_argv() {
        let mut v = Vars::new();
        v.set_list("pkgs", vec!["git".into(), "make".into()]);
        v.set_list("none", vec![]);
        let argv: Vec<String> = ["pacman", "-S", "{pkgs}", "{none}", "x={pkgs}"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            v.expand_argv(&argv, "t").unwrap(),
            ["pacman", "-S", "git", "make", "x=git make"]
        );
    }

    #[test]
    fn unknown_variable_is_named() {
        let v = Vars::new();
        let e = v.expand("a {snapshto} b", "profile p, step s").unwrap_err();
        let m = e.to_string();
        assert!(m.contains("{snapshto}") && m.contains("step s"), "{m}");
        assert!(v.expand("a {b", "t").is_err());
    }
}
