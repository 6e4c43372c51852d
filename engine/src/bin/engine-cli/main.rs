//! `engine-cli`: latency-critical single-stream generation and chat, and the tools around it (tokenize, logits,
//! perplexity, inspect, plan, synth, bench). Every failure is one line on stderr and a non-zero exit, never a
//! backtrace.

mod args;
mod chat;
mod commands;
mod stream_out;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Rust ignores SIGPIPE, so a closed pipe (`engine-cli plan | head`) would surface as a failed print. Restore
    // the default action: the process ends quietly when its reader goes away, as Unix tools do.
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any thread exists; SIG_DFL is a valid action for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // A panic is a bug, but the user still gets one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        eprintln!("engine-cli: internal error: {msg}{at} (this is a bug; please report it)");
    }));

    let cli = match args::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind::*;
            if matches!(e.kind(), DisplayHelp | DisplayVersion | DisplayHelpOnMissingArgumentOrSubcommand) {
                let _ = e.print();
                return if e.kind() == DisplayHelpOnMissingArgumentOrSubcommand {
                    ExitCode::from(2)
                } else {
                    ExitCode::SUCCESS
                };
            }
            // One line: clap's first line names the flag and the bad value; point at --help for the rest.
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments").trim_start_matches("error: ");
            eprintln!("engine-cli: {first} (see `engine-cli --help`)");
            return ExitCode::from(2);
        }
    };
    match commands::run(cli) {
        Ok(()) => {
            let _ = std::io::stdout().flush();
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = std::io::stdout().flush();
            eprintln!("engine-cli: {e}");
            ExitCode::FAILURE
        }
    }
}
