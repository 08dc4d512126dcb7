//! reprobox's own initramfs: a newc cpio holding busybox-static, the kernel modules the
//! guest needs (resolved with the kernel's `modules.dep`), the guest init from top-level
//! `vm/`, and the job description of one run.
//!
//! The archive is written by hand (the newc format is a fixed 110-byte ASCII header, the
//! name and the data, each padded to 4 bytes) so that it needs no host tool and its bytes
//! depend only on what is put in it: every entry has mtime 0, uid/gid 0 and fixed inode
//! numbers.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// The guest init (`/init`), embedded at build time from `vm/init`.
pub const GUEST_INIT: &str = include_str!("../../vm/init");

/// Modules the guest loads, in the order given (each preceded by its dependencies).
/// virtio_mmio is the transport of every `-M microvm` device; the rest are what the init
/// uses: block disks, ext4, the serial ports that carry the job's output, the network
/// card for the mirror path.
pub(super) const GUEST_MODULES: &[&str] = &[
    "virtio_mmio",
    "virtio_blk",
    "virtio_console",
    // ext4's soft dependency (modules.softdep: `pre: crypto-crc32c`), not in modules.dep.
    "crc32c_generic",
    "ext4",
    "virtio_net",
];

/// A newc cpio archive under construction.
pub struct Cpio {
    buf: Vec<u8>,
    ino: u32,
    dirs: BTreeSet<String>,
}

impl Default for Cpio {
    fn default() -> Self {
        Self::new()
    }
}

impl Cpio {
    pub fn new() -> Cpio {
        Cpio {
            buf: Vec::new(),
            ino: 1,
            dirs: BTreeSet::new(),
        }
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        let ino = self.ino;
        self.ino += 1;
        let namesize = name.len() + 1;
        let header = format!(
            "070701{ino:08x}{mode:08x}{uid:08x}{gid:08x}{nlink:08x}{mtime:08x}{size:08x}{dmaj:08x}{dmin:08x}{rmaj:08x}{rmin:08x}{namesize:08x}{check:08x}",
            uid = 0,
            gid = 0,
            nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 },
            mtime = 0,
            size = data.len(),
            dmaj = 0,
            dmin = 0,
            rmaj = 0,
            rmin = 0,
            check = 0,
        );
        self.buf.extend_from_slice(header.as_bytes());
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    /// Add a directory and any missing parents (`name` without a leading `/`).
    pub fn dir(&mut self, name: &str) {
        let mut path = String::new();
        for part in name.split('/').filter(|p| !p.is_empty()) {
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(part);
            if self.dirs.insert(path.clone()) {
                let p = path.clone();
                self.entry(&p, 0o040755, &[]);
            }
        }
    }

    fn parent(&mut self, name: &str) {
        if let Some((parent, _)) = name.rsplit_once('/') {
            self.dir(parent);
        }
    }

    /// Add a regular file with permission bits `perm`.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.parent(name);
        self.entry(name, 0o100000 | (perm & 0o7777), data);
    }

    /// Add a symbolic link.
    pub fn symlink(&mut self, name: &str, target: &str) {
        self.parent(name);
        self.entry(name, 0o120777, target.as_bytes());
    }

    /// Finish the archive (the `TRAILER!!!` entry) and return its bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        // The kernel reads initramfs in 512-byte blocks; pad like cpio(1) does.
        while !self.buf.len().is_multiple_of(512) {
            self.buf.push(0);
        }
        self.buf
    }
}

/// Resolve `wanted` module names to module paths (relative to `modules_dir`: `.ko`, or
/// `.ko.zst` as Arch ships them) with their dependencies first. Dependencies come from the
/// kernel's `modules.dep` when it has one (Debian's tree); without it (an Arch `linux`
/// package: its `depmod` runs in a pacman hook) they are read from each module's own
/// `depends=` modinfo. Names compare with `-` and `_` equal, as modprobe does. A module
/// that is built into the kernel (listed in `modules.builtin`) needs nothing; one that is
/// neither is an error.
pub(super) fn resolve_modules(modules_dir: &Path, wanted: &[&str]) -> Result<Vec<String>> {
    let dep_path = modules_dir.join("modules.dep");
    let builtin_path = modules_dir.join("modules.builtin");
    let builtin_text = fs::read_to_string(&builtin_path).unwrap_or_default();
    let builtin: BTreeSet<String> = builtin_text.lines().map(mod_name).collect();
    let deps = if dep_path.is_file() {
        let dep_text = fs::read_to_string(&dep_path).ctx("read", &dep_path)?;
        let mut deps = Deps::new();
        for line in dep_text.lines() {
            let Some((module, rest)) = line.split_once(':') else {
                continue;
            };
            let list = rest.split_whitespace().map(str::to_owned).collect();
            deps.insert(mod_name(module), (module.to_owned(), list));
        }
        deps
    } else {
        deps_from_modinfo(modules_dir, wanted, &builtin)?
    };

    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    for want in wanted {
        let key = norm(want);
        if builtin.contains(&key) {
            continue;
        }
        let Some((path, list)) = deps.get(&key) else {
            return Err(Error::Environment(format!(
                "kernel module {want} is neither in {} nor built in (modules.builtin); \
                 the guest kernel cannot drive the microVM's devices without it",
                if dep_path.is_file() {
                    dep_path.display().to_string()
                } else {
                    format!("{}/kernel", modules_dir.display())
                }
            )));
        };
        // modules.dep lists dependencies so that loading them in reverse order works.
        for dep in list.iter().rev().chain(std::iter::once(path)) {
            if seen.insert(dep.clone()) {
                order.push(dep.clone());
            }
        }
    }
    Ok(order)
}

/// module name → (path, every dependency, modules.dep order: a dependency's own
/// dependencies after it).
type Deps = std::collections::HashMap<String, (String, Vec<String>)>;

fn norm(s: &str) -> String {
    s.replace('-', "_")
}

fn mod_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    norm(file.split(".ko").next().unwrap_or(file))
}

/// The dependency table of `wanted` (and what they need) from the modules' own modinfo:
/// every module file under `modules_dir/kernel` by name, then `depends=` of the ones
/// needed, transitively.
fn deps_from_modinfo(
    modules_dir: &Path,
    wanted: &[&str],
    builtin: &BTreeSet<String>,
) -> Result<Deps> {
    let mut files = std::collections::HashMap::new();
    let mut stack = vec![modules_dir.join("kernel")];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let e = e.ctx("read directory", &d)?;
            let p = e.path();
            let ft = e.file_type().ctx("stat", &p)?;
            if ft.is_dir() {
                stack.push(p);
            } else if let Some(name) = p.file_name().and_then(|n| n.to_str())
                && (name.ends_with(".ko") || name.ends_with(".ko.zst"))
                && let Ok(rel) = p.strip_prefix(modules_dir)
            {
                files.insert(mod_name(name), rel.to_string_lossy().into_owned());
            }
        }
    }
    // Direct dependencies of each needed module.
    let mut direct: std::collections::HashMap<String, Vec<String>> = Default::default();
    let mut todo: Vec<String> = wanted.iter().map(|w| norm(w)).collect();
    while let Some(name) = todo.pop() {
        if direct.contains_key(&name) || builtin.contains(&name) {
            continue;
        }
        let Some(rel) = files.get(&name) else {
            continue;
        };
        let data = module_bytes(&modules_dir.join(rel))?;
        let list = modinfo_depends(&data);
        todo.extend(list.iter().cloned());
        direct.insert(name, list);
    }
    // Flatten: every transitive dependency, deepest last (as modules.dep has it).
    let mut deps = Deps::new();
    for name in direct.keys() {
        let mut all: Vec<String> = Vec::new();
        let mut queue: Vec<String> = direct[name].clone();
        while let Some(d) = queue.first().cloned() {
            queue.remove(0);
            if builtin.contains(&d) {
                continue;
            }
            if let Some(rel) = files.get(&d) {
                all.retain(|x| x != rel);
                all.push(rel.clone());
            }
            queue.extend(direct.get(&d).cloned().unwrap_or_default());
        }
        deps.insert(name.clone(), (files[name].clone(), all));
    }
    Ok(deps)
}

/// The `depends=` entry of a module's `.modinfo` (`key=value` strings, NUL-separated).
fn modinfo_depends(data: &[u8]) -> Vec<String> {
    let key = b"depends=";
    data.windows(key.len() + 1)
        .position(|w| w[0] == 0 && &w[1..] == key)
        .map(|at| {
            let start = at + 1 + key.len();
            let end = data[start..]
                .iter()
                .position(|&b| b == 0)
                .map_or(data.len(), |e| start + e);
            String::from_utf8_lossy(&data[start..end])
                .split(',')
                .filter(|s| !s.is_empty())
                .map(norm)
                .collect()
        })
        .unwrap_or_default()
}

/// A module's ELF bytes: `.ko` as is, `.ko.zst` decompressed (busybox insmod loads plain
/// ELF only).
pub(super) fn module_bytes(path: &Path) -> Result<Vec<u8>> {
    let data = fs::read(path).ctx("read", path)?;
    if path.extension().is_some_and(|e| e == "zst") {
        use crate::inputs::unpack::{Compression, decompressing};
        let mut elf = Vec::new();
        decompressing(&data[..], Compression::Zstd, path)?
            .read_to_end(&mut elf)
            .ctx("decompress (zstd)", path)?;
        return Ok(elf);
    }
    if path.extension().is_some_and(|e| e == "xz" || e == "gz") {
        return Err(Error::Environment(format!(
            "kernel module {}: only plain .ko and .ko.zst modules are supported",
            path.display()
        )));
    }
    Ok(data)
}

/// Everything that goes into one run's initramfs.
pub struct InitramfsSpec<'a> {
    /// busybox-static on the host.
    pub busybox: &'a Path,
    /// `/lib/modules/<version>` of the guest kernel (None when the kernel needs no
    /// modules, or a caller-supplied initrd carries them).
    pub modules_dir: Option<&'a Path>,
    /// The job description, a shell fragment sourced by the init (guest_protocol.rs).
    pub job_script: &'a str,
}

/// Write the initramfs for one run to `out`. Modules are stored as plain ELF `.ko` (Debian's
/// as found, Arch's `.ko.zst` decompressed) and the init loads them with `insmod` in the
/// listed order (`/reprobox/modules.list`).
pub fn write(spec: &InitramfsSpec<'_>, out: &Path) -> Result<()> {
    let mut cpio = Cpio::new();
    for d in [
        "dev",
        "proc",
        "sys",
        "newroot",
        "run",
        "tmp",
        "reprobox/mnt",
    ] {
        cpio.dir(d);
    }
    let busybox = fs::read(spec.busybox).ctx("read", spec.busybox)?;
    cpio.file("bin/busybox", 0o755, &busybox);
    cpio.symlink("bin/sh", "busybox");
    cpio.file("init", 0o755, GUEST_INIT.as_bytes());
    cpio.file("reprobox/job", 0o644, spec.job_script.as_bytes());

    let mut list = String::new();
    if let Some(dir) = spec.modules_dir {
        for rel in resolve_modules(dir, GUEST_MODULES)? {
            let data = module_bytes(&dir.join(&rel))?;
            let rel = rel.strip_suffix(".zst").unwrap_or(&rel);
            let name = format!("reprobox/modules/{rel}");
            cpio.file(&name, 0o644, &data);
            list.push('/');
            list.push_str(&name);
            list.push('\n');
        }
    }
    cpio.file("reprobox/modules.list", 0o644, list.as_bytes());

    let bytes = cpio.finish();
    let mut f = fs::File::create(out).ctx("create", out)?;
    f.write_all(&bytes).ctx("write", out)?;
    Ok(())
}

/// Where busybox-static is on the host: `$REPROBOX_BUSYBOX`, else the first of the usual
/// places. It must be static: it runs in the guest with no libraries.
pub fn find_busybox() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("REPROBOX_BUSYBOX") {
        return Ok(PathBuf::from(p));
    }
    for p in ["/usr/bin/busybox", "/bin/busybox", "/usr/sbin/busybox"] {
        let p = Path::new(p);
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
    }
    Err(Error::Environment(
        "busybox not found (/usr/bin/busybox): the microVM guest init needs busybox-static \
         (apt-get install busybox-static)"
            .into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_header_and_padding() {
        let mut c = Cpio::new();
        c.file("a/b", 0o644, b"xyz");
        let bytes = c.finish();
        assert!(bytes.starts_with(b"070701"));
        assert_eq!(bytes.len() % 512, 0);
        // The directory `a` comes before the file `a/b`.
        let text = String::from_utf8_lossy(&bytes);
        let a = text.find("a\0").unwrap();
        let ab = text.find("a/b\0").unwrap();
        assert!(a < ab);
        assert!(text.contains("TRAILER!!!"));
        // File size field of `a/b` is 3.
        let hdr = &text[ab - 110..ab];
        assert_eq!(&hdr[54..62], "00000003");
    }

    #[test]
    fn modules_resolve_with_deps_first() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("modules.dep"),
            "kernel/a.ko: kernel/b.ko kernel/c.ko\nkernel/b.ko: kernel/c.ko\nkernel/c.ko:\nkernel/x-y.ko.xz:\n",
        )
        .unwrap();
        std::fs::write(d.path().join("modules.builtin"), "kernel/z.ko\n").unwrap();
        let got = resolve_modules(d.path(), &["a", "x_y", "z", "b"]).unwrap();
        assert_eq!(
            got,
            vec![
                "kernel/c.ko",
                "kernel/b.ko",
                "kernel/a.ko",
                "kernel/x-y.ko.xz"
            ]
        );
        let err = resolve_modules(d.path(), &["nope"]).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    /// A fake module: ELF-ish bytes with a `.modinfo`-style `depends=` string.
    fn fake_ko(depends: &str) -> Vec<u8> {
        let mut b = b"\x7fELF....\0license=GPL\0".to_vec();
        b.extend_from_slice(format!("depends={depends}\0vermagic=x\0").as_bytes());
        b
    }

    #[test]
    fn modules_resolve_from_modinfo_without_modules_dep() {
        // An Arch linux package: no modules.dep, modules compressed as .ko.zst.
        let d = tempfile::tempdir().unwrap();
        let k = d.path().join("kernel");
        std::fs::create_dir_all(k.join("fs")).unwrap();
        let put = |rel: &str, deps: &str| {
            let z = zstd::encode_all(&fake_ko(deps)[..], 3).unwrap();
            std::fs::write(k.join(rel), z).unwrap();
        };
        put("fs/a.ko.zst", "b,x-y");
        put("fs/b.ko.zst", "c");
        put("fs/c.ko.zst", "");
        put("fs/x-y.ko.zst", "c");
        std::fs::write(d.path().join("modules.builtin"), "kernel/z.ko\n").unwrap();
        let got = resolve_modules(d.path(), &["a", "z"]).unwrap();
        let pos = |m: &str| got.iter().position(|g| g.ends_with(m)).unwrap();
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(pos("c.ko.zst") < pos("b.ko.zst"), "{got:?}");
        assert!(pos("c.ko.zst") < pos("x-y.ko.zst"), "{got:?}");
        assert!(pos("b.ko.zst") < pos("a.ko.zst"), "{got:?}");
        assert!(pos("x-y.ko.zst") < pos("a.ko.zst"), "{got:?}");
        assert_eq!(module_bytes(&k.join("fs/c.ko.zst")).unwrap(), fake_ko(""));
        assert!(resolve_modules(d.path(), &["nope"]).is_err());
    }
}
