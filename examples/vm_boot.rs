//! Boot-to-first-command of the microVM backend (used by benches/vm_boot.sh).
//!
//! `cargo run --release --example vm_boot -- KERNEL ACCEL RUNS` prints one line per run:
//! `ms_to_first_output=N ms_qemu_to_job=M`, where the first is measured from the call to
//! `vm::run` (disk images, initramfs, qemu, boot) to the first byte of the job's output.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use reprobox::job::{Job, RootfsSource};
use reprobox::vm::{self, Accel, VmOptions};

struct FirstByte(Arc<Mutex<Option<Instant>>>);

impl Write for FirstByte {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let mut t = self.0.lock().unwrap();
        if t.is_none() && !b.is_empty() {
            *t = Some(Instant::now());
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let kernel = args.get(1).expect("usage: vm_boot KERNEL [tcg|kvm] [RUNS]");
    let accel = match args.get(2).map(String::as_str).unwrap_or("tcg") {
        "kvm" => Accel::Kvm,
        _ => Accel::Tcg,
    };
    let runs: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/usr/bin/busybox", root.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
    let mut job = Job::new(
        RootfsSource::Dir(root),
        vec!["/bin/sh".into(), "-c".into(), "echo first".into()],
    );
    job.clock.source_date_epoch = Some(1_774_915_200);
    job.limits.timeout = Some(std::time::Duration::from_secs(60));
    let opts = VmOptions {
        kernel: Some(kernel.into()),
        accel,
        memory_mib: 512,
        cpus: 1,
        disk_headroom_mib: 64,
        ..VmOptions::default()
    };
    for _ in 0..runs {
        let first = Arc::new(Mutex::new(None));
        let start = Instant::now();
        let r = vm::run_with_output(
            &job,
            &opts,
            Box::new(FirstByte(Arc::clone(&first))),
            Box::new(std::io::sink()),
        );
        match r {
            Ok(o) => {
                let ms = first
                    .lock()
                    .unwrap()
                    .map(|t| t.duration_since(start).as_millis())
                    .unwrap_or(0);
                let boot = o
                    .enforcement
                    .iter()
                    .find(|e| e.feature == "microvm-boot")
                    .and_then(|e| e.detail.split_whitespace().nth(2).map(str::to_owned))
                    .unwrap_or_default();
                println!("ms_to_first_output={ms} ms_qemu_to_job={boot}");
            }
            Err(e) => {
                println!("failed: {e}");
                std::process::exit(3);
            }
        }
    }
}
