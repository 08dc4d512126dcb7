//! Checking a rebuild against the published result, and explaining differences.

pub mod audit;
pub mod registry;
pub mod tardiff;
pub mod tarindex;

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{IoContext, Result};

/// sha256 of a file, streamed with a large buffer.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).ctx("open", path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut f, &mut buf).ctx("read", path)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}
