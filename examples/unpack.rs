//! Unpack an archive with reprobox's rootfs unpacker (used by benches/unpack.sh).
//! Usage: unpack ARCHIVE DEST

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 3 {
        eprintln!("usage: unpack ARCHIVE DEST");
        std::process::exit(2);
    }
    match reprobox::inputs::unpack::unpack(a[1].as_ref(), a[2].as_ref()) {
        Ok(r) => eprintln!(
            "{} entries, {} bytes, {} devices skipped",
            r.entries,
            r.bytes,
            r.skipped_devices.len()
        ),
        Err(e) => {
            eprintln!("unpack: {e}");
            std::process::exit(e.exit_code());
        }
    }
}
