//! Reading a root filesystem's pacman database (`var/lib/pacman/local/*/desc`).

use std::path::Path;
use std::str::FromStr;

use alpm_db::desc::DbDescFile;

use crate::error::{Error, IoContext, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledPackage {
    pub name: String,
    pub version: String,
    /// `%ARCH%` (`x86_64`, `any`): with name and version, the package file's name.
    pub arch: String,
    /// `%INSTALLDATE%`, seconds since the epoch (pacman < 7.1 writes the wall clock here).
    pub install_date: i64,
}

/// Parse one `desc` file's text; `name` identifies it in errors.
pub fn parse_desc(text: &str, name: &str) -> Result<InstalledPackage> {
    let desc = DbDescFile::from_str(text).map_err(|e| {
        Error::Environment(format!(
            "{name}: not a valid pacman local database entry: {e}"
        ))
    })?;
    let (n, v, a, d) = match &desc {
        DbDescFile::V1(d) => (
            d.name.to_string(),
            d.version.to_string(),
            d.arch.to_string(),
            d.installdate.to_string(),
        ),
        DbDescFile::V2(d) => (
            d.name.to_string(),
            d.version.to_string(),
            d.arch.to_string(),
            d.installdate.to_string(),
        ),
    };
    let install_date = d
        .parse()
        .map_err(|_| Error::Environment(format!("{name}: %INSTALLDATE% {d:?} is not a number")))?;
    Ok(InstalledPackage {
        name: n,
        version: v,
        arch: a,
        install_date,
    })
}

/// Every package installed in the root filesystem at `root`, sorted by name. A root
/// without a pacman database has none.
pub fn read_installed(root: &Path) -> Result<Vec<InstalledPackage>> {
    let dir = root.join("var/lib/pacman/local");
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read directory", &dir, e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.ctx("read directory", &dir)?;
        let desc = entry.path().join("desc");
        if !desc.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&desc).ctx("read", &desc)?;
        out.push(parse_desc(&text, &desc.display().to_string())?);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const DESC: &str = "%NAME%\ndevtools\n\n%VERSION%\n1.0-1\n\n%BASE%\ndevtools\n\n%DESC%\nTools\n\n\
%URL%\nhttps://example.org/\n\n%ARCH%\nany\n\n%BUILDDATE%\n1774828800\n\n%INSTALLDATE%\n1774915200\n\n\
%PACKAGER%\nreprobox test world <world@reprobox.invalid>\n\n%SIZE%\n1024\n\n%REASON%\n1\n\n%LICENSE%\nMIT\n\n%VALIDATION%\nnone\n\n";

    #[test]
    fn reads_a_local_database() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("var/lib/pacman/local/devtools-1.0-1");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("desc"), DESC).unwrap();
        let got = read_installed(dir.path()).unwrap();
        assert_eq!(
            got,
            [InstalledPackage {
                name: "devtools".into(),
                version: "1.0-1".into(),
                arch: "any".into(),
                install_date: 1774915200
            }]
        );
        assert!(
            read_installed(&dir.path().join("nothing"))
                .unwrap()
                .is_empty()
        );
        std::fs::write(p.join("desc"), "%NAME%\n").unwrap();
        let e = read_installed(dir.path()).unwrap_err();
        assert!(e.to_string().contains("devtools-1.0-1/desc"), "{e}");
    }
}
