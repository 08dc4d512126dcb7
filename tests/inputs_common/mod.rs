//! What the inputs tests share: the real reprobox binary run against a store of the test's
//! own (their archive is `reprobox::world::fixtures`, served by `world::fileserver`).

use std::path::Path;
use std::process::Command;

pub fn reprobox() -> Command {
    Command::new(env!("CARGO_BIN_EXE_reprobox"))
}

/// Run reprobox with a store; returns (exit code, stdout, stderr).
pub fn run(store: &Path, args: &[&str]) -> (i32, String, String) {
    let out = reprobox()
        .arg(args[0])
        .arg("--store")
        .arg(store)
        .args(&args[1..])
        .env_remove("REPROBOX_STORE")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
