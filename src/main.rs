//! Thin front door: parse, call the library, map the result to an exit code.
//!
//! Rust's own runtime set-up is skipped (`no_main`): it asks glibc where the main thread's
//! stack is, which reads and parses /proc/self/maps, only to print a message on a stack
//! overflow (which then ends in a plain SIGSEGV instead), and costs ~0.1 ms of every start.
//! What the program relies on is done here: the standard fds are open, SIGPIPE is ignored
//! (writes fail with EPIPE instead), and a panic ends the process with 101 after its
//! message. `std::env::args` does not need the runtime on glibc.

#![no_main]

#[unsafe(no_mangle)]
extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    // SAFETY: single-threaded process start: fds 0-2 opened on /dev/null if closed (so no
    // file opened later takes their place), SIGPIPE ignored, as Rust's runtime does.
    unsafe {
        let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
            fd,
            events: 0,
            revents: 0,
        });
        if libc::poll(fds.as_mut_ptr(), 3, 0) >= 0 {
            for p in fds {
                if p.revents & libc::POLLNVAL != 0
                    && libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) != p.fd
                {
                    libc::abort();
                }
            }
        }
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let code = std::panic::catch_unwind(|| {
        let cli = reprobox::cli::parse();
        reprobox::progress::init(cli.quiet, cli.verbose);
        reprobox::logging::init(cli.verbose, cli.quiet);
        match cli.command.execute() {
            Ok(code) => code,
            Err(e) => {
                eprintln!("reprobox: error: {e}");
                e.exit_code()
            }
        }
    })
    .unwrap_or(101);
    std::process::exit(code);
}
