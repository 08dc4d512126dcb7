//! The release manifest: a published `Dockerfile.repro` read as data.
//!
//! Upstream's release tag holds only the generated Dockerfiles; the one for `repro` carries
//! everything needed to check a rebuild: the version, the source commit and the created time
//! as `LABEL`s, and the rootfs URL and sha256 in the verify stage's `sha256sum -c` line.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::plan::BuildVersion;

pub const LABEL_VERSION: &str = "org.opencontainers.image.version";
pub const LABEL_REVISION: &str = "org.opencontainers.image.revision";
pub const LABEL_CREATED: &str = "org.opencontainers.image.created";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Release {
    pub version: String,
    pub source_revision: String,
    pub created: String,
    pub rootfs_url: String,
    pub rootfs_file: String,
    pub rootfs_sha256: String,
    /// The first stage's `FROM` (the verify stage's base image).
    pub base_image: String,
    /// Every label of the Dockerfile, in order.
    pub labels: Vec<(String, String)>,
}

/// One disagreement between a release and the plan for its version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Disagreement {
    pub field: String,
    pub release: String,
    pub plan: String,
}

fn is_hex(s: &str, n: usize) -> bool {
    s.len() == n
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Join backslash-continued lines, as the Dockerfile parser does.
fn logical_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        if let Some(stripped) = line.strip_suffix('\\') {
            cur.push_str(stripped);
            cur.push(' ');
        } else {
            cur.push_str(line);
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Parse `LABEL k="v" k2=v2 …` arguments.
fn parse_labels(args: &str, out: &mut Vec<(String, String)>) {
    let mut rest = args.trim();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq].trim().trim_matches('"').to_string();
        rest = &rest[eq + 1..];
        let value;
        if let Some(r) = rest.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = r.char_indices();
            let mut end = r.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => v.push(c),
                }
            }
            value = v;
            rest = r[end.min(r.len())..].trim_start();
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            value = rest[..end].to_string();
            rest = rest[end..].trim_start();
        }
        out.push((key, value));
    }
}

impl Release {
    /// Parse a release `Dockerfile.repro`. `name` identifies it in errors.
    pub fn parse(text: &str, name: &str) -> Result<Release> {
        let bad = |m: String| Error::bad_input(format!("release file {name}"), m);
        let mut labels = Vec::new();
        let mut base_image = None;
        let mut sums: Vec<(String, String)> = Vec::new();
        let mut urls: Vec<String> = Vec::new();
        for line in logical_lines(text) {
            let t = line.trim();
            if t.starts_with('#') || t.is_empty() {
                continue;
            }
            let (instr, args) = t.split_once(char::is_whitespace).unwrap_or((t, ""));
            match instr.to_ascii_uppercase().as_str() {
                "LABEL" => parse_labels(args, &mut labels),
                "FROM" if base_image.is_none() => {
                    let img = args
                        .split_whitespace()
                        .find(|w| !w.starts_with("--"))
                        .unwrap_or("");
                    base_image = Some(img.to_string());
                }
                _ => {}
            }
            // `<sha256>  <file>` as fed to `sha256sum -c`, anywhere in a RUN line.
            let words: Vec<&str> = t
                .split(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '(' | ')' | ';'))
                .filter(|w| !w.is_empty())
                .collect();
            for w in words.windows(2) {
                if is_hex(w[0], 64) && (w[1].contains(".tar")) {
                    sums.push((w[0].to_string(), w[1].to_string()));
                }
            }
            for w in &words {
                if (w.starts_with("https://") || w.starts_with("http://")) && w.contains(".tar") {
                    urls.push(w.to_string());
                }
            }
        }
        let label = |k: &str| -> Result<String> {
            let vals: Vec<&String> = labels
                .iter()
                .filter(|(lk, _)| lk == k)
                .map(|(_, v)| v)
                .collect();
            match vals.as_slice() {
                [] => Err(bad(format!(
                    "no LABEL {k}=…; expected upstream's release Dockerfile.repro"
                ))),
                [v] => Ok((*v).clone()),
                [a, rest @ ..] if rest.iter().all(|b| b == a) => Ok((*a).clone()),
                _ => Err(bad(format!(
                    "LABEL {k} is given twice with different values"
                ))),
            }
        };
        let version = label(LABEL_VERSION)?;
        let source_revision = label(LABEL_REVISION)?;
        let created = label(LABEL_CREATED)?;
        if !is_hex(&source_revision, 40) {
            return Err(bad(format!(
                "LABEL {LABEL_REVISION}={source_revision:?}: expected a 40-hex git commit"
            )));
        }
        sums.dedup();
        let (rootfs_sha256, rootfs_file) = match sums.as_slice() {
            [] => {
                return Err(bad(
                    "no rootfs sha256 line (`<64 hex>  <file>.tar.*` for sha256sum -c)".into(),
                ));
            }
            [one] => one.clone(),
            [a, ..] => {
                if let Some(b) = sums.iter().find(|b| b.0 != a.0) {
                    return Err(bad(format!(
                        "two different rootfs sha256 lines: {} for {} and {} for {}",
                        a.0, a.1, b.0, b.1
                    )));
                }
                a.clone()
            }
        };
        urls.dedup();
        let rootfs_url = urls
            .iter()
            .find(|u| u.ends_with(&format!("/{rootfs_file}")))
            .or(urls.first())
            .cloned()
            .ok_or_else(|| bad("no rootfs download URL".into()))?;
        let base_image = base_image.ok_or_else(|| bad("no FROM line".into()))?;
        Ok(Release {
            version,
            source_revision,
            created,
            rootfs_url,
            rootfs_file,
            rootfs_sha256,
            base_image,
            labels,
        })
    }

    /// What in this release disagrees with the plan for `version` (its created label, its
    /// rootfs file name and URL). Empty when all agree.
    pub fn check_against(&self, version: &BuildVersion) -> Vec<Disagreement> {
        let mut d = Vec::new();
        let mut push = |field: &str, release: &str, plan: String| {
            d.push(Disagreement {
                field: field.into(),
                release: release.into(),
                plan,
            })
        };
        if self.version != version.as_str() {
            push(LABEL_VERSION, &self.version, version.to_string());
        }
        if self.created != version.created() {
            push(LABEL_CREATED, &self.created, version.created());
        }
        if !self.rootfs_file.contains(version.as_str()) {
            push(
                "rootfs file",
                &self.rootfs_file,
                format!("a name containing {version}"),
            );
        }
        if !self.rootfs_url.contains(version.as_str()) {
            push(
                "rootfs URL",
                &self.rootfs_url,
                format!("a URL containing {version}"),
            );
        }
        d
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A release file in upstream's shape, for tests.
    pub(crate) fn sample(version: &str, created: &str, sha: &str, rev: &str) -> String {
        format!(
            r#"# This file was generated by make-dockerfile.sh
FROM alpine:3.23 AS verify
RUN apk add --no-cache curl tar zstd
RUN ROOTFS="$(curl -sOJL --continue-at - -w "%{{filename_effective}}" https://gitlab.archlinux.org/api/v4/projects/10185/packages/generic/rootfs/{version}/repro-{version}.tar.zst)" && \
    echo "{sha}  repro-{version}.tar.zst" > /tmp/rootfs.tar.sha256 && \
    cat /tmp/rootfs.tar.sha256 && \
    sha256sum -c /tmp/rootfs.tar.sha256 && \
    mkdir /rootfs && \
    tar -C /rootfs --extract --file "${{ROOTFS}}"

FROM scratch AS root
LABEL org.opencontainers.image.title="Arch Linux repro Image"
LABEL org.opencontainers.image.licenses="GPL-3.0-or-later"
LABEL org.opencontainers.image.version="{version}"
LABEL org.opencontainers.image.revision="{rev}"
LABEL org.opencontainers.image.created="{created}"
COPY --from=verify /rootfs/ /
RUN ldconfig && \
    sed -i '/BUILD_ID/a VERSION_ID={version}' /etc/os-release && \
    rm -f /var/cache/ldconfig/aux-cache
ENV LANG=C.UTF-8
CMD ["/usr/bin/bash"]
"#
        )
    }

    const SHA: &str = "008e69cf045b94cb8fff8115fd970c44a355ce7d6ea2fe28a43dfb454ba51db4";
    const REV: &str = "7161278aa0983266f49d863ce814ec87d8245a2f";

    #[test]
    fn parses_upstream_shape() {
        let t = sample("20260420.0.518142", "2026-04-20T00:00:00Z", SHA, REV);
        let r = Release::parse(&t, "t").unwrap();
        assert_eq!(r.version, "20260420.0.518142");
        assert_eq!(r.source_revision, REV);
        assert_eq!(r.rootfs_sha256, SHA);
        assert_eq!(r.rootfs_file, "repro-20260420.0.518142.tar.zst");
        assert!(
            r.rootfs_url
                .ends_with("/20260420.0.518142/repro-20260420.0.518142.tar.zst")
        );
        assert_eq!(r.base_image, "alpine:3.23");
        let v = BuildVersion::parse("20260420.0.518142").unwrap();
        assert!(r.check_against(&v).is_empty());
    }

    #[test]
    fn disagreements_are_named() {
        let t = sample("20260420.0.518142", "2026-04-21T00:00:00Z", SHA, REV);
        let r = Release::parse(&t, "t").unwrap();
        let v = BuildVersion::parse("20260420.0.518142").unwrap();
        let d = r.check_against(&v);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].field, LABEL_CREATED);
        assert_eq!(d[0].plan, "2026-04-20T00:00:00Z");
    }

    #[test]
    fn missing_labels_and_conflicting_sums_are_errors() {
        let t = sample("20260420.0.518142", "2026-04-20T00:00:00Z", SHA, REV);
        let no_rev: String = t
            .lines()
            .filter(|l| !l.contains(LABEL_REVISION))
            .collect::<Vec<_>>()
            .join("\n");
        let e = Release::parse(&no_rev, "Dockerfile.repro").unwrap_err();
        assert!(
            e.to_string().contains(LABEL_REVISION) && e.exit_code() == 2,
            "{e}"
        );
        let other = "1".repeat(64);
        let two = t.replace(
            "cat /tmp/rootfs.tar.sha256",
            &format!("echo \"{other}  repro-20260420.0.518142.tar.zst\""),
        );
        let e = Release::parse(&two, "Dockerfile.repro").unwrap_err();
        assert!(e.to_string().contains("two different rootfs sha256"), "{e}");
        let e = Release::parse("FROM scratch\n", "empty").unwrap_err();
        assert!(e.to_string().contains("release file empty"), "{e}");
    }
}
