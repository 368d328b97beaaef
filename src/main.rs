//! `cncopgetprofile [-?] [-d] [-c CONFIG] [--noupdate] [--update] [--recreate]`
//!
//! Parses the command line, sets up logging and maps the run's result to an
//! exit code; the work is in the library.

#![forbid(unsafe_code)]

use argh::FromArgs;
use cncopgetprofile::agent::{self, RunOptions, UpdateChoice};
use cncopgetprofile::error::{Error, exit};
use cncopgetprofile::{clock, config, listing, logs::Logs};
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: cncopgetprofile [-?] [-d] [-c CONFIG] [--noupdate] [--update] [--recreate] [--dry-run] [--list [--json]]";

/// Fetch this appliance's backup jobs from the cncop network and keep them in
/// Config/backupjobs.db.
#[derive(FromArgs)]
#[argh(help_triggers("-?", "-h", "--help"))]
struct Args {
    /// write debug logs to Spool/Logs/gp<YYYYMMDD>.log
    #[argh(switch, short = 'd')]
    debug: bool,
    /// the INI file (default: Config/cncop3.ini under the install root)
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
    /// do not check for software updates
    #[argh(switch)]
    noupdate: bool,
    /// check for software updates even when [version] autoupdate = Off
    #[argh(switch)]
    update: bool,
    /// rebuild the job store from a full download
    #[argh(switch)]
    recreate: bool,
    /// fetch and validate the profile, print what would change, write nothing
    #[argh(switch)]
    dry_run: bool,
    /// print the stored jobs (no network)
    #[argh(switch)]
    list: bool,
    /// with --list: print JSON
    #[argh(switch)]
    json: bool,
}

fn usage_error(msg: &str) -> ExitCode {
    eprintln!("cncopgetprofile: {msg}");
    eprintln!("{USAGE}");
    ExitCode::from(exit::USAGE)
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let words: Vec<&str> = argv.iter().skip(1).map(String::as_str).collect();
    let args = match Args::from_args(&["cncopgetprofile"], &words) {
        Ok(a) => a,
        Err(early) if early.status.is_ok() => {
            print!("{}", early.output);
            return ExitCode::SUCCESS;
        }
        Err(early) => {
            let first = early.output.lines().next().unwrap_or("bad arguments");
            return usage_error(first);
        }
    };
    let update = match (args.noupdate, args.update) {
        (true, true) => return usage_error("--noupdate and --update cannot be given together"),
        (true, false) => UpdateChoice::Never,
        (false, true) => UpdateChoice::Always,
        (false, false) => UpdateChoice::Config,
    };
    if args.json && !args.list {
        return usage_error("--json goes with --list");
    }
    if args.list && (args.dry_run || args.recreate) {
        return usage_error("--list cannot be combined with --dry-run or --recreate");
    }
    let root = match config::install_root() {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };

    if args.list {
        let path = root.join("Config").join("backupjobs.db");
        let mut out = std::io::stdout().lock();
        return match listing::write(&path, args.json, &mut out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        };
    }

    let mut logs = Logs::init(&root.join("Spool").join("Logs"), args.debug, clock::now());
    let opts = RunOptions {
        debug: args.debug,
        config: args.config,
        update,
        recreate: args.recreate,
        dry_run: args.dry_run,
    };
    let report = agent::run(&root, &opts);
    match &report.profile {
        Ok(outcome) => {
            if opts.dry_run {
                println!("{outcome}");
            }
            match &report.later_config_error {
                None => logs.summary(&outcome.to_string()),
                Some(e) => logs.summary(&format!("{outcome}; then (exit {}): {e}", e.exit_code())),
            }
        }
        Err(e) => {
            log::error!("{e}");
            logs.summary(&format!("run failed (exit {}): {e}", e.exit_code()));
        }
    }
    ExitCode::from(report.exit_code())
}

/// Reports an error that happened before logging was set up.
fn fail(e: &Error) -> ExitCode {
    eprintln!("cncopgetprofile: {e}");
    ExitCode::from(e.exit_code())
}
