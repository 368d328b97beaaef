//! Synthetic profiles (docs/protocol.md, "Profile document") of any size,
//! for the demo, the tests and the benchmarks.
//!
//! Deterministic: the same options give the same bytes, on every machine and
//! build (its own small PRNG, splitmix64, not a crate whose stream may change
//! between versions). Every endpoint it writes is a loopback address, because
//! the agent probes them and nothing else may be dialled from a test:
//! targets are `127.0.1.x` (CCS) or `127.0.2.x` (the rest), and the one
//! firewall endpoint is `127.0.1.3:443`.
//!
//! What a profile of `n` jobs holds, which tests rely on:
//! - job ids `1000`, `1001`, ... `1000 + n - 1`;
//! - types cycling through `CCS CIFS FTP FTPS MSSQL SFTP RSYNC WIMG`;
//! - names and paths with `&`, `<`, `>`, quotes and non-ASCII text;
//! - 1 to 4 sources and 0 to 2 excludes per job; one option;
//! - a credential (password `pw<&>NNN`) on every CIFS, FTP, FTPS, MSSQL and
//!   SFTP job;
//! - `pre`/`post` on every 5th job, an `email` on every 3rd, and
//!   `enabled="no"` on every 17th (counting from job 0).
//!
//! Used by the tests and by the `localnet` example
//! (`cargo run --example localnet -- genprofile --jobs N --seed S`).

use std::io::{self, Write};

use crate::xml::xml_escape;

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenOptions {
    pub jobs: usize,
    pub device: String,
    pub seed: u64,
    pub generated: String,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            jobs: 100,
            device: "NAS-00042".to_string(),
            seed: 1,
            generated: "2026-11-27T07:00:00Z".to_string(),
        }
    }
}

const TYPES: [&str; 8] = [
    "CCS", "CIFS", "FTP", "FTPS", "MSSQL", "SFTP", "RSYNC", "WIMG",
];
const WORDS: [&str; 10] = [
    "Accounting",
    "HR & Payroll",
    "Engineering",
    "Sales <EU>",
    "Résumés",
    "Projects",
    "Scans",
    "Invoices \"2026\"",
    "Legal",
    "Photos 写真",
];
const EXCLUDES: [&str; 5] = ["*.tmp", "~$*", "Thumbs.db", "*.bak", ".DS_Store"];
const CHUNKSIZES: [&str; 3] = ["1M", "10M", "50M"];

/// splitmix64 (Steele, Lea, Flood 2014): tiny, and its stream is fixed
/// forever, which is what a reproducible profile needs.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`), by the multiply-shift reduction.
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len() as u64) as usize]
    }
}

/// The target port a job of type `jtype` uses.
fn port_for(jtype: &str) -> u16 {
    match jtype {
        "CCS" => 443,
        "FTP" => 21,
        "FTPS" => 990,
        "MSSQL" => 1433,
        "SFTP" => 22,
        "RSYNC" => 873,
        _ => 445,
    }
}

fn write_job(w: &mut impl Write, rng: &mut SplitMix64, i: usize) -> io::Result<()> {
    let jtype = TYPES[i % TYPES.len()];
    let name = format!("{} {i}", rng.pick(&WORDS));
    let enabled = if i.is_multiple_of(17) { "no" } else { "yes" };
    let schedule = format!("0 {} {} * * *", rng.below(60), rng.below(24));
    let retries = rng.below(4);
    writeln!(
        w,
        "    <job id=\"{}\" name=\"{}\" type=\"{jtype}\" enabled=\"{enabled}\" \
         schedule=\"{schedule}\" retries=\"{retries}\">",
        1000 + i,
        xml_escape(&name)
    )?;
    for _ in 0..1 + rng.below(4) {
        let path = format!("/share/{}/{}", rng.pick(&WORDS), rng.below(1_000_000));
        writeln!(w, "      <source path=\"{}\"/>", xml_escape(&path))?;
    }
    // A partial Fisher-Yates shuffle: distinct patterns, in random order.
    let mut pool = EXCLUDES;
    for k in 0..rng.below(3) as usize {
        let j = k + rng.below((pool.len() - k) as u64) as usize;
        pool.swap(k, j);
        writeln!(w, "      <exclude pattern=\"{}\"/>", xml_escape(pool[k]))?;
    }
    // Loopback only: tests probe these endpoints, and nothing else may be dialled.
    let host = if jtype == "CCS" {
        format!("127.0.1.{}", 1 + i % 7)
    } else {
        format!("127.0.2.{}", 1 + i % 20)
    };
    writeln!(
        w,
        "      <target host=\"{host}\" port=\"{}\"/>",
        port_for(jtype)
    )?;
    if matches!(jtype, "FTP" | "FTPS" | "MSSQL" | "SFTP" | "CIFS") {
        let password = format!("pw<&>{}", rng.below(1_000_000_000));
        writeln!(
            w,
            "      <credential user=\"backup{i}\" password=\"{}\"/>",
            xml_escape(&password)
        )?;
    }
    if i.is_multiple_of(5) {
        let pre = format!("/opt/cncop/hooks/quiesce.sh --job {i} && sync");
        writeln!(w, "      <pre>{}</pre>", xml_escape(&pre))?;
        writeln!(w, "      <post>/opt/cncop/hooks/resume.sh</post>")?;
    }
    if i.is_multiple_of(3) {
        writeln!(
            w,
            "      <email to=\"ops{}@example.com\" when=\"error\"/>",
            i % 9
        )?;
    }
    writeln!(
        w,
        "      <option name=\"chunksize\" value=\"{}\"/>",
        rng.pick(&CHUNKSIZES)
    )?;
    writeln!(w, "    </job>")
}

/// Writes the profile `o` describes to `w` (buffer `w`: many small writes).
pub fn write_profile(w: &mut impl Write, o: &GenOptions) -> io::Result<()> {
    let mut rng = SplitMix64(o.seed);
    writeln!(w, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>")?;
    writeln!(
        w,
        "<profile schema=\"3\" device=\"{}\" generated=\"{}\">",
        xml_escape(&o.device),
        xml_escape(&o.generated)
    )?;
    writeln!(
        w,
        "  <firewall>\n    <endpoint host=\"127.0.1.3\" port=\"443\" proto=\"tcp\" \
         purpose=\"prime\"/>\n  </firewall>"
    )?;
    writeln!(w, "  <jobs>")?;
    for i in 0..o.jobs {
        write_job(w, &mut rng, i)?;
    }
    writeln!(w, "  </jobs>\n</profile>")
}

/// The profile `o` describes, in memory.
pub fn profile(o: &GenOptions) -> Vec<u8> {
    let mut out = Vec::with_capacity(o.jobs * 600 + 256);
    // Writing into a Vec cannot fail.
    let _ = write_profile(&mut out, o);
    out
}
