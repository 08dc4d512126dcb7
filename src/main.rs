//! Thin front door: parse, call the library, map the result to an exit code.

fn main() {
    let cli = reprobox::cli::parse();
    reprobox::logging::init(cli.verbose);
    let code = match reprobox::cmd::dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("reprobox: error: {e}");
            e.exit_code()
        }
    };
    std::process::exit(code);
}
