//! sha256, the one way reprobox names bytes: hex of bytes in memory, the `sha256:`-prefixed
//! digest the OCI world uses, and hex of a file or reader streamed in large reads (a rootfs
//! tarball is too big to hold). The store's write path hashes while it copies and keeps its
//! own hasher; everything else hashes here.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{IoContext, Result};

/// Read buffer for streaming: large enough that syscalls do not dominate.
const BUF: usize = 1 << 20;

/// sha256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// sha256 of `bytes` as an OCI digest: `sha256:<hex>`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

/// sha256 (hex) and length of everything `r` yields, read in large chunks.
pub fn sha256_reader(r: impl Read) -> std::io::Result<(String, u64)> {
    sha256_reader_with(r, &mut vec![0u8; BUF])
}

/// [`sha256_reader`] reading through the caller's `buf` (non-empty): one buffer for many
/// small streams, such as every member of a tarball.
pub fn sha256_reader_with(mut r: impl Read, buf: &mut [u8]) -> std::io::Result<(String, u64)> {
    let mut h = Sha256::new();
    let mut n = 0u64;
    loop {
        let k = match r.read(buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

/// sha256 (hex) and length of a file, streamed; errors name the file.
pub fn sha256_file_len(path: &Path) -> Result<(String, u64)> {
    let f = File::open(path).ctx("open", path)?;
    sha256_reader(f).ctx("read", path)
}

/// sha256 of a file, hex, streamed; errors name the file.
pub fn sha256_file(path: &Path) -> Result<String> {
    sha256_file_len(path).map(|(sha, _)| sha)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn hex_and_digest_of_bytes() {
        assert_eq!(sha256_hex(b"abc"), ABC);
        assert_eq!(sha256_hex(b""), EMPTY);
        assert_eq!(sha256_digest(b"abc"), format!("sha256:{ABC}"));
    }

    #[test]
    fn reader_and_file_agree_with_bytes_across_buffer_boundaries() {
        let data: Vec<u8> = (0..(BUF + 12345)).map(|i| (i % 251) as u8).collect();
        assert_eq!(
            sha256_reader(&data[..]).unwrap(),
            (sha256_hex(&data), data.len() as u64)
        );
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, &data).unwrap();
        assert_eq!(sha256_file(&p).unwrap(), sha256_hex(&data));
        assert_eq!(
            sha256_file_len(&p).unwrap(),
            (sha256_hex(&data), data.len() as u64)
        );
    }

    #[test]
    fn reader_with_a_small_buffer_reused() {
        let mut buf = [0u8; 7];
        assert_eq!(
            sha256_reader_with(&b"abc"[..], &mut buf).unwrap(),
            (ABC.to_string(), 3)
        );
        assert_eq!(
            sha256_reader_with(&b""[..], &mut buf).unwrap(),
            (EMPTY.to_string(), 0)
        );
        let data = vec![42u8; 100];
        assert_eq!(
            sha256_reader_with(&data[..], &mut buf).unwrap().0,
            sha256_hex(&data)
        );
    }

    #[test]
    fn missing_file_error_names_it() {
        let e = sha256_file(Path::new("/nonexistent/reprobox-digest")).unwrap_err();
        assert!(
            e.to_string().contains("/nonexistent/reprobox-digest"),
            "{e}"
        );
    }
}
