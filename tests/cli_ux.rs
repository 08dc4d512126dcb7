//! A newcomer's first hour at the front door, through the real binary (no root needed):
//! shell completions, the manual pages, `--quiet`, and the suggestions a typo gets.

use std::process::{Command, Output};

const VERSION: &str = "20260518.0.532496";

fn reprobox() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_reprobox"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    for (k, _) in std::env::vars() {
        if k.starts_with("REPROBOX_") {
            c.env_remove(k);
        }
    }
    c
}

fn run(args: &[&str]) -> Output {
    reprobox().args(args).output().expect("run reprobox")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn completions_for_every_shell_name_the_subcommands() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let o = run(&["completions", shell]);
        assert_eq!(o.status.code(), Some(0), "{shell}: {}", stderr(&o));
        let s = stdout(&o);
        assert!(s.contains("reprobox"), "{shell}: {s}");
        for sub in ["reproduce", "plan", "store", "completions", "man"] {
            assert!(s.contains(sub), "{shell} lacks {sub}");
        }
    }
    let s = stdout(&run(&["completions", "bash"]));
    assert!(s.contains("complete -F _reprobox"), "{s}");
    // An unknown shell is a usage error naming the ones there are.
    let o = run(&["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("bash"), "{}", stderr(&o));
}

#[test]
fn the_manual_page_is_roff_and_dir_writes_one_per_command() {
    let o = run(&["man"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let page = stdout(&o);
    assert!(page.contains(".TH REPROBOX 1"), "{page}");
    assert!(page.contains("reproduce"), "{page}");

    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("man1");
    let o = run(&["man", "--dir", dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    for (file, title) in [
        ("reprobox.1", ".TH REPROBOX 1"),
        ("reprobox-reproduce.1", ".TH REPROBOX-REPRODUCE 1"),
        ("reprobox-store-verify.1", ".TH REPROBOX-STORE-VERIFY 1"),
    ] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        assert!(text.contains(title), "{file}: {text}");
        assert!(stdout(&o).contains(file), "{}", stdout(&o));
    }
    // A file where the directory goes is bad input.
    let file = t.path().join("f");
    std::fs::write(&file, "x").unwrap();
    let o = run(&["man", "--dir", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// A reproduction that stops at once: offline, with an empty store, the release cannot be
/// read (exit 3).
fn failing_reproduce(quiet: bool) -> Output {
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    let out = t.path().join("out");
    let mut args = vec![];
    if quiet {
        args.push("--quiet");
    }
    args.extend([
        "reproduce",
        "archlinux-repro",
        VERSION,
        "--offline",
        "--store",
        store.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    run(&args)
}

#[test]
fn quiet_prints_no_progress_and_errors_still_reach_stderr() {
    let loud = failing_reproduce(false);
    assert_eq!(loud.status.code(), Some(3), "{}", stderr(&loud));
    assert!(
        stderr(&loud).contains("reprobox: release v20260518.0.532496 from "),
        "{}",
        stderr(&loud)
    );

    // A run that stops after the plan still writes its report, so -q prints its verdict
    // line (and nothing else) on stdout, and the error alone on stderr.
    let quiet = failing_reproduce(true);
    assert_eq!(quiet.status.code(), Some(3), "{}", stderr(&quiet));
    assert_eq!(
        stdout(&quiet),
        "archlinux-repro 20260518.0.532496 — INCOMPLETE\n"
    );
    let err = stderr(&quiet);
    assert_eq!(err.lines().count(), 1, "only the error: {err}");
    assert!(err.starts_with("reprobox: error: "), "{err}");

    // -q and -v say opposite things.
    let o = run(&["-q", "-v", "profiles"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot be used with"), "{}", stderr(&o));
    // A command's own output is not progress: --quiet keeps it.
    let o = run(&["--quiet", "plan", "archlinux-repro", VERSION]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("snapshot day"), "{}", stdout(&o));
    assert_eq!(stderr(&o), "");
}

#[test]
fn a_mistyped_profile_gets_the_nearest_name() {
    let o = run(&["plan", "archlinux-rpro", VERSION]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("profile \"archlinux-rpro\""), "{err}");
    assert!(err.contains("did you mean \"archlinux-repro\"?"), "{err}");
    assert!(err.contains("expected one of: "), "{err}");
    // Far from every name: no suggestion, the list still.
    let err = stderr(&run(&["plan", "debian", VERSION]));
    assert!(!err.contains("did you mean"), "{err}");
    assert!(err.contains("archlinux-repro"), "{err}");
}

#[test]
fn a_mistyped_location_gets_the_nearest_name() {
    let o = run(&[
        "plan",
        "archlinux-repro",
        VERSION,
        "--location",
        "archiv=http://127.0.0.1:8080",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("--location archiv"), "{err}");
    assert!(err.contains("did you mean \"archive\"?"), "{err}");
    assert!(
        err.contains("expected one of: alpine, archive, git, gitlab, hub_auth, registry, rootfs"),
        "{err}"
    );
    // The environment's overrides get the same.
    let o = reprobox()
        .args(["plan", "archlinux-repro", VERSION])
        .env("REPROBOX_LOCATION_REGSITRY", "http://127.0.0.1:5000")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("did you mean \"registry\"?"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_mistyped_subcommand_gets_the_nearest_name() {
    for (typo, meant) in [
        ("reproduc", "reproduce"),
        ("complteions", "completions"),
        ("profile", "profiles"),
    ] {
        let o = run(&[typo]);
        assert_eq!(o.status.code(), Some(2), "{typo}");
        let err = stderr(&o);
        assert!(
            err.contains(&format!("unrecognized subcommand '{typo}'")),
            "{err}"
        );
        assert!(
            err.contains(&format!("a similar subcommand exists: '{meant}'")),
            "{err}"
        );
    }
    let err = stderr(&run(&["store", "verfy"]));
    assert!(err.contains("'verify'"), "{err}");
}
