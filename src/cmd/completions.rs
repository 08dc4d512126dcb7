//! `reprobox completions SHELL`: the shell completion script, generated from the clap
//! definitions (`clap_complete`), on stdout.

use clap_complete::Shell;

use crate::error::{IoContext, Result};

#[derive(Debug, clap::Args)]
#[command(after_help = "Install, for example:\n  \
    bash: reprobox completions bash > /etc/bash_completion.d/reprobox\n  \
    zsh:  reprobox completions zsh > \"${fpath[1]}/_reprobox\"\n  \
    fish: reprobox completions fish > ~/.config/fish/completions/reprobox.fish")]
pub struct Args {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Write the completion script for `cli` (the whole command tree; `cmd` does not import
/// `cli`, so the caller hands it over) to `out`.
pub fn write(a: &Args, mut cli: clap::Command, out: &mut dyn std::io::Write) {
    let name = cli.get_name().to_string();
    clap_complete::generate(a.shell, &mut cli, name, out);
}

pub fn execute(a: Args, cli: clap::Command) -> Result<i32> {
    use std::io::Write;
    let mut script = Vec::new();
    write(&a, cli, &mut script);
    std::io::stdout()
        .lock()
        .write_all(&script)
        .ctx("write", "stdout")?;
    Ok(0)
}
