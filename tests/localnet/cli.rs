//! The project's local cncop network, runnable.
//!
//! ```text
//! cargo build && cargo run --example localnet -- demo [--root DIR] [--jobs N]
//! cargo run --example localnet -- serve [--root DIR] [--jobs N | --profile FILE]
//!                                       [--device ID] [--key KEY] [--port N] [--http] [--quiet]
//! cargo run --example localnet -- genprofile [--jobs N] [--seed S] [--device ID] [--generated T]
//! cargo run --example localnet -- sign keygen|root|doc ...
//! ```
//!
//! `demo` makes a throwaway install root (kept; its path is printed), starts
//! the network on 127.0.0.1 with a generated profile, ships the network's
//! signed root into the root's `Config/`, and runs the agent
//! (`target/<profile>/cncopgetprofile`, or `$CNCOP_AGENT`) three times: a
//! first run (signed profile verified and stored), a second run after the
//! network rotated its root (root 2 accepted; 304 with a signed manifest,
//! store unchanged) and `--list`. It exits non-zero when a step fails.
//!
//! `serve` writes the CA, the signed root and an INI into the root, prints
//! the URL and serves until killed (for benchmarks and manual runs);
//! `--unsigned` serves without signed metadata (profiles on TLS alone).
//!
//! `genprofile` prints a synthetic profile (`tests/support/src/genprofile.rs`)
//! on stdout.
//!
//! `sign` is the operators' signing tool (`tests/support/src/sign.rs`).
//!
//! The network and the generator are the `support` crate (`tests/support`),
//! which the integration tests use too.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::genprofile::{self, GenOptions};
use support::net::trust::{Authority, write_root};
use support::net::{DEFAULT_DEVICE, NetOptions, Recorded, TestNetwork, etag_for, random_hex};
use support::{net, sign};

/// Longest an agent run may take in the demo.
const AGENT_TIME_LIMIT: Duration = Duration::from_secs(300);

const USAGE: &str = "\
usage: localnet demo  [--root DIR] [--jobs N] [--profile FILE] [--verbose]
       localnet serve [--root DIR] [--jobs N | --profile FILE] [--device ID] [--key KEY]
                      [--port N] [--http] [--quiet] [--unsigned]
       localnet genprofile [--jobs N] [--seed S] [--device ID] [--generated TIME]
       localnet sign  keygen|root|doc ...   (localnet sign --help)

demo   make an install root, serve a generated profile on 127.0.0.1 and run the
       agent (target/<profile>/cncopgetprofile or $CNCOP_AGENT) three times:
       first run, unchanged second run, --list. Run `cargo build` first.
serve  write Config/ca.pem, the signed root Config/cncop-root.xml(.sig) and
       Config/cncop3.ini into the root, print the URL and serve until killed
       (it does not run the agent: run it yourself).
genprofile  print a synthetic profile: deterministic for a seed, loopback
       endpoints only (the demo and serve use seed 1).
sign   make Ed25519 keys, make and sign a root, sign a document.

--root DIR      install root to use (default: a new temp directory, kept)
--jobs N        jobs in the generated profile (default 1000)
--profile FILE  serve this file instead of a generated profile
--device ID     device id (default NAS-00042)
--seed S        genprofile: seed (default 1)
--generated T   genprofile: the profile's generated time (default 2026-11-27T07:00:00Z)
--key KEY       device key (default: random)
--port N        port on 127.0.0.1 (default: any free one)
--http          serve plain HTTP (the INI gets allow_insecure_http = On)
--quiet         serve: do not print one line per request
--unsigned      serve: no signed metadata (no root shipped, profiles unsigned)
--verbose       demo: the network prints one line per request";

struct Opts {
    root: Option<PathBuf>,
    jobs: usize,
    profile: Option<PathBuf>,
    device: String,
    key: Option<String>,
    port: u16,
    http: bool,
    quiet: bool,
    verbose: bool,
    seed: u64,
    generated: Option<String>,
    unsigned: bool,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        root: None,
        jobs: 1000,
        profile: None,
        device: DEFAULT_DEVICE.to_string(),
        key: None,
        port: 0,
        http: false,
        quiet: false,
        verbose: false,
        seed: 1,
        generated: None,
        unsigned: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match a.as_str() {
            "--root" => o.root = Some(PathBuf::from(value("--root")?)),
            "--jobs" => {
                let v = value("--jobs")?;
                o.jobs = v
                    .parse()
                    .map_err(|_| format!("--jobs: not a number: {v}"))?;
            }
            "--profile" => o.profile = Some(PathBuf::from(value("--profile")?)),
            "--device" => o.device = value("--device")?,
            "--key" => o.key = Some(value("--key")?),
            "--port" => {
                let v = value("--port")?;
                o.port = v.parse().map_err(|_| format!("--port: not a port: {v}"))?;
            }
            "--seed" => {
                let v = value("--seed")?;
                o.seed = v
                    .parse()
                    .map_err(|_| format!("--seed: not a number: {v}"))?;
            }
            "--generated" => o.generated = Some(value("--generated")?),
            "--http" => o.http = true,
            "--quiet" => o.quiet = true,
            "--verbose" => o.verbose = true,
            "--unsigned" => o.unsigned = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(o)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = match args.split_first() {
        Some((c, r)) => (c.as_str(), r),
        None => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    if matches!(cmd, "-h" | "--help" | "help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if cmd == "sign" {
        if matches!(rest.first().map(String::as_str), Some("-h" | "--help")) {
            println!("{}", sign::USAGE);
            return ExitCode::SUCCESS;
        }
        return match sign::main(rest) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("localnet sign: {e}");
                ExitCode::from(2)
            }
        };
    }
    let opts = match parse(rest) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("localnet: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match cmd {
        "demo" => demo(&opts),
        "serve" => serve(&opts),
        "genprofile" => print_profile(&opts),
        other => Err(format!("unknown command {other:?}\n{USAGE}")),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("localnet: {e}");
            ExitCode::from(2)
        }
    }
}

// ---------------------------------------------------------------------------
// Shared setup
// ---------------------------------------------------------------------------

/// Creates (or reuses) the install root with `Config/`, `Spool/Logs/`, `bin/`.
fn make_root(chosen: Option<&Path>) -> Result<PathBuf, String> {
    let root = match chosen {
        Some(p) => p.to_path_buf(),
        None => {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            std::env::temp_dir().join(format!(
                "cncop-localnet-{}-{}",
                std::process::id(),
                nanos % 1_000_000_000
            ))
        }
    };
    for sub in ["Config", "Spool/Logs", "bin"] {
        std::fs::create_dir_all(root.join(sub))
            .map_err(|e| format!("cannot create {}: {e}", root.join(sub).display()))?;
    }
    // Absolute, so the printed path and CNCOP_HOME work from anywhere.
    root.canonicalize()
        .map_err(|e| format!("{}: {e}", root.display()))
}

fn load_profile(o: &Opts) -> Result<Vec<u8>, String> {
    if let Some(p) = &o.profile {
        return std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
    }
    Ok(genprofile::profile(&gen_options(o)))
}

fn gen_options(o: &Opts) -> GenOptions {
    let mut g = GenOptions {
        jobs: o.jobs,
        device: o.device.clone(),
        seed: o.seed,
        ..GenOptions::default()
    };
    if let Some(t) = &o.generated {
        g.generated = t.clone();
    }
    g
}

fn print_profile(o: &Opts) -> Result<bool, String> {
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::new(stdout.lock());
    genprofile::write_profile(&mut w, &gen_options(o))
        .and_then(|()| std::io::Write::flush(&mut w))
        .map_err(|e| format!("cannot write the profile: {e}"))?;
    Ok(true)
}

fn ini_text(net: &TestNetwork, device: &str, key: &str) -> String {
    let mut network = format!("url = {}\n", net.url());
    if net.is_plain() {
        network.push_str("allow_insecure_http = On\n");
    } else {
        network.push_str("ca_file = Config/ca.pem\n");
    }
    network.push_str("splay = 0\nretries = 1\n");
    format!(
        "[device]\nid = {device}\nkey = {key}\n\n[network]\n{network}\n\
         [version]\nautoupdate = Off\n\n[firewall]\nenabled = Off\n"
    )
}

/// Starts the network with the device and its profile, writes the CA and
/// the INI into `root`; unless `--unsigned`, also the vendor's signed root
/// (the network then signs profile manifests).
fn start_network(
    o: &Opts,
    root: &Path,
    verbose: bool,
) -> Result<(TestNetwork, String, Option<Authority>), String> {
    let profile = load_profile(o)?;
    let net = TestNetwork::try_start(NetOptions {
        plain_http: o.http,
        port: o.port,
        verbose,
        ..Default::default()
    })
    .map_err(|e| format!("cannot start the network: {e}"))?;
    let key = o.key.clone().unwrap_or_else(|| random_hex(32));
    net.add_device(&o.device, &key);
    let jobs = count(&profile, b"<job ");
    let size = profile.len();
    let etag = etag_for(&profile);
    net.set_profile(&o.device, profile, Some(etag.clone()));
    println!("profile: {jobs} jobs, {size} bytes, ETag {etag}");
    let config = root.join("Config");
    if !o.http {
        net.write_ca(&config)
            .map_err(|e| format!("cannot write {}/ca.pem: {e}", config.display()))?;
    }
    let ini = config.join("cncop3.ini");
    std::fs::write(&ini, ini_text(&net, &o.device, &key))
        .map_err(|e| format!("cannot write {}: {e}", ini.display()))?;
    let vendor = if o.unsigned {
        None
    } else {
        let vendor = Authority::new();
        let shipped = write_root(&config, vendor.root(1))
            .map_err(|e| format!("cannot write the root into {}: {e}", config.display()))?;
        net.sign_profiles(vendor.profile_key());
        println!(
            "signed:  root version 1 shipped as {} (+ .sig); profile manifests signed",
            shipped.display()
        );
        Some(vendor)
    };
    Ok((net, key, vendor))
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

fn describe(r: &Recorded) -> String {
    let q = r
        .query
        .as_deref()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    format!(
        "conn {} {} {}{} -> {}",
        r.conn, r.method, r.path, q, r.status
    )
}

// ---------------------------------------------------------------------------
// serve
// ---------------------------------------------------------------------------

fn serve(o: &Opts) -> Result<bool, String> {
    let root = make_root(o.root.as_deref())?;
    let (net, key, _vendor) = start_network(o, &root, false)?;
    println!("url:    {}", net.url());
    println!("root:   {}", root.display());
    println!("ini:    {}", root.join("Config/cncop3.ini").display());
    println!("device: {} key: {key}", o.device);
    println!(
        "run:    CNCOP_HOME={} {}",
        root.display(),
        find_agent().display()
    );
    println!("serving until killed");
    let mut seen = 0;
    loop {
        std::thread::sleep(Duration::from_millis(200));
        if o.quiet {
            continue;
        }
        let reqs = net.requests();
        for r in reqs.iter().skip(seen) {
            println!("{}", describe(r));
        }
        seen = reqs.len();
    }
}

// ---------------------------------------------------------------------------
// demo
// ---------------------------------------------------------------------------

fn find_agent() -> PathBuf {
    if let Some(p) = std::env::var_os("CNCOP_AGENT") {
        return PathBuf::from(p);
    }
    // target/<profile>/examples/localnet -> target/<profile>/cncopgetprofile
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("cncopgetprofile")))
        .unwrap_or_else(|| PathBuf::from("target/debug/cncopgetprofile"))
}

struct RunResult {
    code: Option<i32>,
    stdout: String,
}

fn run_agent(agent: &Path, root: &Path, args: &[&str]) -> Result<RunResult, String> {
    println!(
        "\n$ CNCOP_HOME={} {} {}",
        root.display(),
        agent.display(),
        args.join(" ")
    );
    let start = Instant::now();
    let out_path = root.join("Spool/.localnet-stdout");
    let err_path = root.join("Spool/.localnet-stderr");
    let out_file = std::fs::File::create(&out_path).map_err(|e| e.to_string())?;
    let err_file = std::fs::File::create(&err_path).map_err(|e| e.to_string())?;
    let mut child = Command::new(agent)
        .args(args)
        .env("CNCOP_HOME", root)
        .stdin(Stdio::null())
        .stdout(out_file)
        .stderr(err_file)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", agent.display()))?;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if start.elapsed() > AGENT_TIME_LIMIT => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for the agent: {e}")),
        }
    };
    let elapsed = start.elapsed();
    let stdout =
        String::from_utf8_lossy(&std::fs::read(&out_path).unwrap_or_default()).into_owned();
    let stderr =
        String::from_utf8_lossy(&std::fs::read(&err_path).unwrap_or_default()).into_owned();
    let _ = std::fs::remove_file(&out_path);
    let _ = std::fs::remove_file(&err_path);
    let code = status.and_then(|s| s.code());
    match status {
        None => println!("  killed after {AGENT_TIME_LIMIT:?}"),
        Some(s) => println!(
            "  exit: {} ({:.2} s)",
            s.code()
                .map(|c| c.to_string())
                .unwrap_or_else(|| s.to_string()),
            elapsed.as_secs_f64()
        ),
    }
    if stderr.trim().is_empty() {
        println!("  stderr: (empty)");
    } else {
        println!("  stderr:");
        for l in stderr.lines() {
            println!("    {l}");
        }
    }
    Ok(RunResult { code, stdout })
}

struct Checks {
    failed: usize,
}

impl Checks {
    fn check(&mut self, ok: bool, what: &str) {
        println!("  [{}] {what}", if ok { " ok " } else { "FAIL" });
        if !ok {
            self.failed += 1;
        }
    }
}

fn report_network(net: &TestNetwork, c: &mut Checks) -> Vec<Recorded> {
    let reqs = net.requests();
    let conns: BTreeSet<u64> = reqs.iter().map(|r| r.conn).collect();
    println!(
        "  network saw {} request(s) on {} connection(s): statuses {:?}",
        reqs.len(),
        conns.len(),
        reqs.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for r in &reqs {
        println!("    {}", describe(r));
    }
    if !reqs.is_empty() {
        c.check(
            conns.len() == 1,
            "all requests on one keep-alive connection",
        );
        c.check(
            reqs.iter().all(|r| {
                r.header("user-agent")
                    .is_some_and(|ua| ua.starts_with("cncopgetprofile/"))
            }),
            "User-Agent: cncopgetprofile/<version> (<target>)",
        );
        c.check(
            reqs.iter().all(|r| {
                r.header("authorization")
                    .is_some_and(|a| a.starts_with("Basic "))
            }),
            "HTTP Basic credentials sent",
        );
    }
    net.clear_requests();
    reqs
}

fn demo(o: &Opts) -> Result<bool, String> {
    let agent = find_agent();
    if !agent.is_file() {
        eprintln!(
            "localnet: the agent binary is missing: {}\n\
             run `cargo build` first (or set CNCOP_AGENT to the binary)",
            agent.display()
        );
        return Ok(false);
    }
    let root = make_root(o.root.as_deref())?;
    println!("install root: {} (kept)", root.display());
    println!("agent:        {}", agent.display());
    let (net, _key, vendor) = start_network(o, &root, o.verbose)?;
    println!("network:      {}", net.url());
    let etag = net.etag(&o.device).unwrap_or_default();
    let db = root.join("Config/backupjobs.db");
    let mut c = Checks { failed: 0 };

    println!("\n== 1. first run: the profile is downloaded and stored");
    let r = run_agent(&agent, &root, &[])?;
    c.check(r.code == Some(0), "exit code 0");
    let reqs = report_network(&net, &mut c);
    let profile_reqs: Vec<&Recorded> = reqs.iter().filter(|r| r.is_profile()).collect();
    c.check(
        profile_reqs.last().is_some_and(|r| r.status == 200),
        "profile answered 200",
    );
    c.check(
        profile_reqs.iter().all(|r| {
            r.header("accept")
                .is_some_and(|a| a.contains("application/xml"))
        }),
        "Accept: application/xml",
    );
    c.check(
        profile_reqs
            .iter()
            .all(|r| r.header("if-none-match").is_none()),
        "no If-None-Match on a fresh store",
    );
    c.check(db.is_file(), "Config/backupjobs.db exists");
    if vendor.is_some() {
        c.check(
            reqs.iter()
                .any(|r| r.path.ends_with("/trust/root/2.xml") && r.status == 404),
            "asked for the next root (none yet: 404)",
        );
        c.check(
            profile_reqs.last().is_some_and(|r| r.status == 200),
            "signed profile manifest verified (Cncop-Profile + Cncop-Signature)",
        );
    }
    let before = std::fs::read(&db).ok();

    let mut vendor = vendor;
    if let Some(v) = vendor.as_mut() {
        let roles = v.roles.clone();
        let mut rotated = roles.clone();
        rotated.root = net::trust::RoleKeys::one(&net::trust::Key::generate());
        v.rotate(rotated);
        v.publish_roots(&net);
        println!("\n(the network's vendor rotates its root key: root version 2 published)");
    }
    println!("\n== 2. second run: unchanged (304), store untouched");
    let r = run_agent(&agent, &root, &[])?;
    c.check(r.code == Some(0), "exit code 0");
    let reqs = report_network(&net, &mut c);
    if vendor.is_some() {
        c.check(
            reqs.iter()
                .any(|r| r.path.ends_with("/trust/root/2.xml") && r.status == 200)
                && reqs
                    .iter()
                    .any(|r| r.path.ends_with("/trust/root/3.xml") && r.status == 404),
            "root version 2 fetched (signed by the old and the new root key), then 3: none",
        );
    }
    let profile_reqs: Vec<&Recorded> = reqs.iter().filter(|r| r.is_profile()).collect();
    c.check(
        profile_reqs
            .first()
            .is_some_and(|r| r.header("if-none-match") == Some(etag.as_str())),
        &format!("If-None-Match: {etag}"),
    );
    c.check(
        profile_reqs.last().is_some_and(|r| r.status == 304),
        "profile answered 304",
    );
    c.check(
        before.is_some() && std::fs::read(&db).ok() == before,
        "backupjobs.db bytes unchanged",
    );

    println!("\n== 3. --list: the stored jobs");
    let r = run_agent(&agent, &root, &["--list"])?;
    c.check(r.code == Some(0), "exit code 0");
    let lines: Vec<&str> = r.stdout.lines().collect();
    println!("  stdout ({} lines):", lines.len());
    for l in lines.iter().take(20) {
        println!("    {l}");
    }
    if lines.len() > 20 {
        println!("    ... ({} more lines)", lines.len() - 20);
    }
    let reqs = report_network(&net, &mut c);
    c.check(reqs.is_empty(), "--list makes no network request");

    println!();
    println!("install root kept: {}", root.display());
    if c.failed == 0 {
        println!("demo: all checks passed");
        Ok(true)
    } else {
        println!("demo: {} check(s) FAILED", c.failed);
        Ok(false)
    }
}
