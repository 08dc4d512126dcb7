//! What a long command tells the person waiting for it, on stderr: one spinner per phase
//! on a terminal (indicatif), plain `reprobox: …` lines when stderr is not a terminal (a
//! pipe, a CI log) or with `-v`, nothing with `--quiet`.
//!
//! On a terminal and with `--quiet`, the jobs' own output (pacman, make, podman) does not
//! go to the terminal, where it would tear through the spinner or break the silence: each
//! job's stdout and stderr go to a log file instead ([`Redirect`], the pipeline's
//! `build.log`), while the spinner keeps drawing on the terminal through a descriptor of its
//! own. Piped, the jobs' output goes where it always went.

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};

use crate::error::{Error, IoContext, Result};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `--quiet`: nothing; the jobs' output to a log file.
    Quiet,
    /// Nothing; the jobs' output where it always goes (`--json` off a terminal).
    Off,
    /// `reprobox: …` lines on stderr.
    Lines,
    /// A spinner per phase on the terminal; the jobs' output to a log file.
    Spinners,
}

/// 0 unset (lines or spinners by the terminal), 1 quiet, 2 lines (`-v`).
static CHOICE: AtomicU8 = AtomicU8::new(0);

/// Set once from the command line: `--quiet` silences progress, `-v` keeps plain lines (the
/// logs they interleave with would tear a spinner).
pub fn init(quiet: bool, verbose: u8) {
    let c = if quiet {
        1
    } else if verbose > 0 {
        2
    } else {
        0
    };
    CHOICE.store(c, Ordering::Relaxed);
}

/// Whether `--quiet` was given.
pub fn quiet() -> bool {
    CHOICE.load(Ordering::Relaxed) == 1
}

/// The mode for this process: from [`init`], and whether stderr is a terminal.
pub fn mode() -> Mode {
    match CHOICE.load(Ordering::Relaxed) {
        1 => Mode::Quiet,
        2 => Mode::Lines,
        _ if std::io::stderr().is_terminal() => Mode::Spinners,
        _ => Mode::Lines,
    }
}

/// A `reprobox: MSG` line on stderr unless `--quiet` (for commands without phases).
pub fn line(msg: &str) {
    if !quiet() {
        eprintln!("reprobox: {msg}");
    }
}

/// The progress of one long command: phases (a spinner each on a terminal) and lines.
pub struct Progress {
    mode: Mode,
    /// The terminal, through a descriptor of its own (stderr may be redirected meanwhile).
    term: Option<FdTerm>,
    current: Mutex<Option<Phase>>,
}

struct Phase {
    bar: Option<ProgressBar>,
    msg: String,
    started: Instant,
}

impl Progress {
    pub fn new(mode: Mode) -> Progress {
        let term = match mode {
            Mode::Spinners => FdTerm::stderr().ok(),
            _ => None,
        };
        // Without a terminal of its own the spinner cannot draw: plain lines then.
        let mode = if mode == Mode::Spinners && term.is_none() {
            Mode::Lines
        } else {
            mode
        };
        Progress {
            mode,
            term,
            current: Mutex::new(None),
        }
    }

    /// Nothing shown, nothing redirected (tests).
    pub fn silent() -> Progress {
        Progress::new(Mode::Off)
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether the jobs' output should go to a log file rather than the terminal.
    pub fn wants_job_log(&self) -> bool {
        matches!(self.mode, Mode::Quiet | Mode::Spinners)
    }

    /// A new phase begins (the previous one, if any, ends): a spinner with MSG and the time
    /// it has taken on a terminal; a `reprobox: MSG` line otherwise.
    pub fn phase(&self, msg: &str) {
        self.end();
        let bar = match (&self.mode, &self.term) {
            (Mode::Spinners, Some(term)) => {
                let bar = ProgressBar::with_draw_target(
                    None,
                    ProgressDrawTarget::term_like_with_hz(Box::new(term.clone()), 10),
                );
                bar.set_style(
                    ProgressStyle::with_template("{spinner} [{elapsed}] {wide_msg}")
                        .expect("a valid template"),
                );
                bar.set_message(msg.to_string());
                bar.enable_steady_tick(Duration::from_millis(120));
                Some(bar)
            }
            (Mode::Lines, _) => {
                eprintln!("reprobox: {msg}");
                None
            }
            _ => None,
        };
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(Phase {
            bar,
            msg: msg.to_string(),
            started: Instant::now(),
        });
    }

    /// A line of information (not a phase): above the spinner on a terminal.
    pub fn say(&self, msg: &str) {
        let line = format!("reprobox: {msg}");
        match self.mode {
            Mode::Quiet | Mode::Off => {}
            Mode::Lines => eprintln!("{line}"),
            Mode::Spinners => {
                let cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
                match cur.as_ref().and_then(|p| p.bar.as_ref()) {
                    Some(bar) => bar.println(line),
                    None => {
                        if let Some(t) = &self.term {
                            let _ = t.write_line(&line);
                        }
                    }
                }
            }
        }
    }

    /// End the current phase: on a terminal its spinner becomes a line with its time.
    pub fn end(&self) {
        self.stop(true);
    }

    fn stop(&self, say_done: bool) {
        let phase = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(Phase {
            bar: Some(bar),
            msg,
            started,
        }) = phase
        {
            bar.finish_and_clear();
            if let Some(t) = self.term.as_ref().filter(|_| say_done) {
                let _ = t.write_line(&format!(
                    "reprobox: {msg} ({})",
                    human_duration(started.elapsed())
                ));
            }
        }
    }
}

impl Drop for Progress {
    /// A phase still running when its command gives up (an error on its way to `main`):
    /// the spinner goes, without a line claiming the phase was done.
    fn drop(&mut self) {
        self.stop(false);
    }
}

/// `4.2 s`, `3 min 07 s`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1} s")
    } else {
        let s = d.as_secs();
        format!("{} min {:02} s", s / 60, s % 60)
    }
}

/// The terminal stderr was when progress began, through a duplicate of its descriptor:
/// what the spinner draws on while fds 1 and 2 are redirected to a log.
#[derive(Debug, Clone)]
pub struct FdTerm {
    file: Arc<Mutex<File>>,
}

impl FdTerm {
    fn stderr() -> Result<FdTerm> {
        // SAFETY: dup of the process's stderr; the new descriptor is owned here.
        let fd = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3) };
        if fd < 0 {
            return Err(Error::Environment("cannot duplicate stderr".into()));
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        Ok(FdTerm {
            file: Arc::new(Mutex::new(file)),
        })
    }

    fn write(&self, s: &str) -> std::io::Result<()> {
        self.file
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write_all(s.as_bytes())
    }
}

impl TermLike for FdTerm {
    fn width(&self) -> u16 {
        let f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: TIOCGWINSZ fills a winsize; a failure leaves the default.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        let ok = unsafe { libc::ioctl(f.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) } == 0;
        if ok && ws.ws_col > 0 { ws.ws_col } else { 80 }
    }
    fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
        if n > 0 {
            self.write(&format!("\x1b[{n}A"))
        } else {
            Ok(())
        }
    }
    fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
        if n > 0 {
            self.write(&format!("\x1b[{n}B"))
        } else {
            Ok(())
        }
    }
    fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
        if n > 0 {
            self.write(&format!("\x1b[{n}C"))
        } else {
            Ok(())
        }
    }
    fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
        if n > 0 {
            self.write(&format!("\x1b[{n}D"))
        } else {
            Ok(())
        }
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.write(&format!("{s}\n"))
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.write(s)
    }
    fn clear_line(&self) -> std::io::Result<()> {
        self.write("\r\x1b[2K")
    }
    fn flush(&self) -> std::io::Result<()> {
        self.file.lock().unwrap_or_else(|e| e.into_inner()).flush()
    }
}

/// While alive, the process's stdout and stderr (fds 1 and 2, which a job inherits) go to
/// the end of a log file; dropped, they are back where they were.
pub struct Redirect {
    saved: [OwnedFd; 2],
}

impl Redirect {
    /// Both standard descriptors flushed and saved (close-on-exec copies above 2), to be
    /// put back when the value is dropped.
    fn saving_both() -> Result<Redirect> {
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        let dup = |fd: i32| -> Result<OwnedFd> {
            // SAFETY: a duplicate of a standard descriptor, owned by the returned value.
            let s = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
            if s < 0 {
                return Err(Error::Environment(format!("cannot duplicate fd {fd}")));
            }
            // SAFETY: `s` was just created and is owned by nothing else.
            Ok(unsafe { OwnedFd::from_raw_fd(s) })
        };
        Ok(Redirect {
            saved: [dup(1)?, dup(2)?],
        })
    }

    /// Send stdout to stderr (stderr stays), so that a job's output cannot mix with what a
    /// command prints on stdout.
    pub fn stdout_to_stderr() -> Result<Redirect> {
        let r = Redirect::saving_both()?;
        // SAFETY: dup2 of stderr onto stdout; `r`'s drop puts it back.
        if unsafe { libc::dup2(2, 1) } < 0 {
            return Err(Error::Environment("cannot send stdout to stderr".into()));
        }
        Ok(r)
    }

    pub fn to_file(path: &Path) -> Result<Redirect> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ctx("open", path)?;
        let r = Redirect::saving_both()?;
        for fd in [1, 2] {
            // SAFETY: dup2 of an open file onto a standard descriptor; on failure `r`'s
            // drop puts back both.
            if unsafe { libc::dup2(log.as_raw_fd(), fd) } < 0 {
                return Err(Error::Environment(format!(
                    "cannot send fd {fd} to {}",
                    path.display()
                )));
            }
        }
        Ok(r)
    }
}

impl Drop for Redirect {
    fn drop(&mut self) {
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        for (fd, s) in [1, 2].into_iter().zip(&self.saved) {
            // SAFETY: restores the standard descriptor from the duplicate saved above.
            unsafe {
                libc::dup2(s.as_raw_fd(), fd);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_seconds_then_minutes() {
        assert_eq!(human_duration(Duration::from_millis(4200)), "4.2 s");
        assert_eq!(human_duration(Duration::from_secs(187)), "3 min 07 s");
    }

    #[test]
    fn a_quiet_progress_has_no_terminal_and_sends_jobs_to_the_log() {
        let p = Progress::new(Mode::Quiet);
        assert_eq!(p.mode(), Mode::Quiet);
        assert!(p.wants_job_log());
        assert!(!Progress::silent().wants_job_log());
        p.phase("nothing shown");
        p.say("nothing shown");
        p.end();
        assert!(!Progress::new(Mode::Lines).wants_job_log());
    }
}
