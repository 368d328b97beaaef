//! The profile parser's own ceiling: a profile file read into memory, parsed
//! into a sink that discards every job, with no TLS, no store, no digest.
//!
//!   cargo bench --bench parser -- PROFILE.xml [--device ID] [--rounds N]
//!
//! Prints MB/s over N rounds (wall time: indicative only on a shared
//! machine). `benches/footprint --instructions` runs it under cachegrind
//! with `--rounds 0` and `--rounds 1` and prints the difference per byte,
//! which does not depend on the machine's load.

use cncopgetprofile::internals::profile::{Header, ProfileSink, parse};
use cncopgetprofile::{Endpoint, Job};
use std::hint::black_box;
use std::process::ExitCode;
use std::time::Instant;

/// Discards what the parser hands it; only counts, so nothing is optimised out.
#[derive(Default)]
struct Discard {
    jobs: u64,
    bytes: u64,
}

impl ProfileSink for Discard {
    fn header(&mut self, header: &Header) -> cncopgetprofile::Result<()> {
        black_box(header);
        Ok(())
    }
    fn endpoint(&mut self, endpoint: &Endpoint) -> cncopgetprofile::Result<()> {
        black_box(endpoint);
        Ok(())
    }
    fn job(&mut self, job: &Job) -> cncopgetprofile::Result<()> {
        self.jobs += 1;
        self.bytes += black_box(job).id.len() as u64;
        Ok(())
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut file = None;
    let mut device = "NAS-00042".to_string();
    let mut rounds: u32 = 5;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--device" => device = args.next().unwrap_or_default(),
            "--rounds" => match args.next().and_then(|n| n.parse().ok()) {
                Some(n) => rounds = n,
                None => return usage("--rounds needs a number"),
            },
            // cargo bench passes --bench to every bench binary.
            "--bench" => {}
            _ if a.starts_with('-') => return usage(&format!("unknown option {a}")),
            _ => file = Some(a),
        }
    }
    let Some(file) = file else {
        return usage("no profile file given");
    };
    let body = match std::fs::read(&file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("parser bench: cannot read {file}: {e}");
            return ExitCode::from(2);
        }
    };
    let mut best = f64::INFINITY;
    for _ in 0..rounds {
        let mut sink = Discard::default();
        let start = Instant::now();
        let result = parse(black_box(body.as_slice()), &device, &mut sink);
        let secs = start.elapsed().as_secs_f64();
        match result {
            Ok(summary) => black_box((summary, sink.jobs, sink.bytes)),
            Err(e) => {
                eprintln!("parser bench: {file}: {e}");
                return ExitCode::from(1);
            }
        };
        best = best.min(secs);
    }
    if rounds > 0 {
        println!(
            "parser only: {} bytes, best of {rounds}: {:.1} ms, {:.1} MB/s",
            body.len(),
            best * 1e3,
            body.len() as f64 / best / 1e6
        );
    }
    ExitCode::SUCCESS
}

fn usage(why: &str) -> ExitCode {
    eprintln!(
        "parser bench: {why}\nusage: cargo bench --bench parser -- PROFILE.xml [--device ID] [--rounds N]"
    );
    ExitCode::from(2)
}
