//! The `cncopgetprofile` binary: parses the command line (`USAGE` below, the
//! line `-?` and every usage error print), sets up logging (and the panic
//! hook that reports a damaged store) and maps the run's result to an exit
//! code; the work is in the library.

#![forbid(unsafe_code)]

use argh::FromArgs;
use cncopgetprofile::{
    Error, InstallRoot, Logs, RunOptions, UpdateChoice, exit, exit_on_store_damage, now,
    run_and_record, show_status, target_triple, write_listing,
};
use std::path::PathBuf;
use std::process::ExitCode;

/// The same allocator in every build. The static builds' libc (zig's, which
/// cargo-zigbuild links) rounds each block up to a power of two, and a redb
/// page buffer (4 KiB and its 16-byte count) took 8 KiB: the store cache cost
/// twice its size, and the peak RSS grew with the profile (README
/// "Dependencies").
#[global_allocator]
static ALLOC: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

const USAGE: &str = "usage: cncopgetprofile [-?] [-d] [-c CONFIG] [--noupdate] [--update] [--recreate] [--dry-run] [--list [--json]] [--status [--json]] [--version]";

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
    /// how the last run ended, and whether one is running (no network, no lock)
    #[argh(switch)]
    status: bool,
    /// with --list or --status: print JSON
    #[argh(switch)]
    json: bool,
    /// print the version and target, and exit
    #[argh(switch)]
    version: bool,
}

fn usage_error(msg: &str) -> ExitCode {
    eprintln!("cncopgetprofile: {msg}");
    eprintln!("{USAGE}");
    ExitCode::from(exit::USAGE)
}

fn main() -> ExitCode {
    exit_on_store_damage();
    let argv: Vec<String> = std::env::args().collect();
    let words: Vec<&str> = argv.iter().skip(1).map(String::as_str).collect();
    let args = match Args::from_args(&["cncopgetprofile"], &words) {
        Ok(a) => a,
        Err(early) if early.status.is_ok() => {
            // argh writes its own usage line ("[--list] [--json]"); the help
            // shows the same one as a usage error does.
            let options = early.output.split_once('\n').map_or("", |(_, rest)| rest);
            println!("{USAGE}\n{}", options.trim_end());
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
    if args.version {
        println!(
            "cncopgetprofile {} ({})",
            env!("CARGO_PKG_VERSION"),
            target_triple()
        );
        return ExitCode::SUCCESS;
    }
    if args.json && !args.list && !args.status {
        return usage_error("--json goes with --list or --status");
    }
    if args.list && args.status {
        return usage_error("--list and --status cannot be given together");
    }
    if (args.list || args.status) && (args.dry_run || args.recreate) {
        return usage_error("--list and --status cannot be combined with --dry-run or --recreate");
    }
    let root = match InstallRoot::locate() {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };

    if args.list {
        let mut out = std::io::stdout().lock();
        return match write_listing(&root, args.json, &mut out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        };
    }

    if args.status {
        let mut out = std::io::stdout().lock();
        return match show_status(&root, args.json, &mut out) {
            Ok(code) => ExitCode::from(code),
            Err(e) => fail(&Error::Store(format!("cannot print: {e}").into())),
        };
    }

    let mut logs = Logs::init(&root.logs_dir(), args.debug, now());
    let opts = RunOptions {
        debug: args.debug,
        config: args.config,
        update,
        recreate: args.recreate,
        dry_run: args.dry_run,
    };
    let report = run_and_record(&root, &opts, &mut logs);
    if let Ok(outcome) = &report.profile
        && opts.dry_run
    {
        println!("{outcome}");
    }
    ExitCode::from(report.exit_code())
}

/// Reports an error that happened before logging was set up.
fn fail(e: &Error) -> ExitCode {
    eprintln!("cncopgetprofile: {e}");
    ExitCode::from(e.exit_code())
}
