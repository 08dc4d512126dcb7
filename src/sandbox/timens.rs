//! The time namespace: the job's CLOCK_MONOTONIC and CLOCK_BOOTTIME start near zero, so
//! its uptime says nothing about the host. The kernel only lets offsets be written before
//! the first process enters the namespace: the caller unshares (which affects its future
//! children only), writes the offsets, then forks. CLOCK_REALTIME cannot be moved.

use std::io;

fn now_secs(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec
}

/// Unshare a time namespace for the caller's children and offset its clocks to ~0.
pub(crate) fn enter_for_children() -> io::Result<String> {
    // SAFETY: plain syscall.
    if unsafe { libc::unshare(libc::CLONE_NEWTIME) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mono = now_secs(libc::CLOCK_MONOTONIC);
    let boot = now_secs(libc::CLOCK_BOOTTIME);
    let text = format!("monotonic -{mono} 0\nboottime -{boot} 0\n");
    std::fs::write("/proc/self/timens_offsets", &text)?;
    Ok(format!(
        "monotonic -{mono}s, boottime -{boot}s (uptime starts at 0)"
    ))
}
