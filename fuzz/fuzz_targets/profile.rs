//! Fuzzes `cncopgetprofile::profile::parse`: any input must give a verdict
//! without a panic (libFuzzer reports one as a crash), and the same verdict,
//! with the same sink calls in the same order, however the body is split
//! into reads: every read size from 1 to min(len, 64), and a few random
//! splits with `Interrupted` reads among them.

#![no_main]

use cncopgetprofile::Error;
use cncopgetprofile::internals::profile::{Header, ProfileSink, Summary, parse};
use cncopgetprofile::{Endpoint, Job};
use libfuzzer_sys::fuzz_target;
use std::collections::HashSet;
use std::io::{self, Read};

const DEVICE: &str = "NAS-00042";
/// Random splits per input, besides the fixed read sizes.
const RANDOM_SPLITS: u64 = 4;

/// Records every call as its `Debug` string (the password added: `Debug`
/// hides it), and refuses a repeated job id as the store does.
#[derive(Default)]
struct Record {
    calls: Vec<String>,
    ids: HashSet<String>,
}

impl ProfileSink for Record {
    fn header(&mut self, header: &Header) -> cncopgetprofile::Result<()> {
        self.calls.push(format!("header {header:?}"));
        Ok(())
    }
    fn endpoint(&mut self, endpoint: &Endpoint) -> cncopgetprofile::Result<()> {
        self.calls.push(format!("endpoint {endpoint:?}"));
        Ok(())
    }
    fn job(&mut self, job: &Job) -> cncopgetprofile::Result<()> {
        let password = job.credential.as_ref().map(|c| c.password.as_str());
        self.calls
            .push(format!("job {job:?} password={password:?}"));
        if !self.ids.insert(job.id.to_string()) {
            return Err(Error::Profile(format!(
                "job \"{}\" appears more than once; job ids must be unique",
                job.id
            ).into()));
        }
        Ok(())
    }
}

/// Serves `data` in reads whose sizes `next` chooses; a size of 0 is an
/// `Interrupted` error, which the parser must retry.
struct Reads<'a, F> {
    data: &'a [u8],
    next: F,
}

impl<F: FnMut() -> usize> Read for Reads<'_, F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let size = (self.next)();
        if size == 0 {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let n = size.min(buf.len()).min(self.data.len());
        let (head, tail) = self.data.split_at(n);
        buf[..n].copy_from_slice(head);
        self.data = tail;
        Ok(n)
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    result: Result<Summary, String>,
    calls: Vec<String>,
}

fn outcome(body: impl Read) -> Outcome {
    let mut sink = Record::default();
    let result = parse(body, DEVICE, &mut sink).map_err(|e| e.to_string());
    Outcome {
        result,
        calls: sink.calls,
    }
}

#[track_caller]
fn same(split: Outcome, whole: &Outcome, how: &str) {
    if split != *whole {
        panic!(
            "{how}: the verdict depends on the split\nwhole: {:?} ({} calls)\nsplit: {:?} ({} calls)\nfirst different call: {:?}",
            whole.result,
            whole.calls.len(),
            split.result,
            split.calls.len(),
            whole.calls.iter().zip(&split.calls).find(|(a, b)| a != b)
        );
    }
}

/// FNV-1a: a seed for the random splits that depends only on the input, so
/// a crash reproduces.
fn seed(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    }) | 1
}

fuzz_target!(|data: &[u8]| {
    let whole = outcome(data);
    // A refusal is always one line (it goes to stderr and cron mail as such).
    if let Err(msg) = &whole.result {
        assert!(
            !msg.contains('\n'),
            "a refusal of more than one line: {msg:?}"
        );
    }
    if let Ok(summary) = &whole.result {
        assert_eq!(summary.bytes, data.len() as u64, "bytes counted");
    }
    for size in 1..=data.len().min(64) {
        let split = outcome(Reads {
            data,
            next: || size,
        });
        same(split, &whole, &format!("reads of {size} bytes"));
    }
    let mut state = seed(data);
    for round in 0..RANDOM_SPLITS {
        let limit = data.len().max(1);
        let split = outcome(Reads {
            data,
            next: || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                // Mostly small reads, a few large ones and interruptions.
                match state % 16 {
                    0 => 0,
                    1 => limit,
                    n => (state >> 8) as usize % (n as usize * 16).min(limit) + 1,
                }
            },
        });
        same(split, &whole, &format!("random split #{round}"));
    }
});
