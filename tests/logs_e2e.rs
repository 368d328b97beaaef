//! The `-d` log end to end: its head (version, target, install root, clock,
//! build time, the effective configuration with secrets as `***`) and the
//! cap on the log folder, `[defaults] max_log_mib` (PROTOCOL 7).

use std::path::{Path, PathBuf};
use std::process::Output;
use support::*;

/// 2026-11-27T12:00:00Z: the runs' clock (`CNCOP_NOW`), so the day's log
/// file is `gp20261127.log` whenever the test runs.
const NOW: u64 = 1_795_780_800;
const TODAY: &str = "gp20261127.log";

fn run_at_now(inst: &Install, args: &[&str]) -> Output {
    let mut cmd = agent_command();
    cmd.args(args)
        .env("CNCOP_HOME", inst.root())
        .env("CNCOP_NOW", NOW.to_string());
    exec(cmd, RUN_LIMIT)
}

/// Names and sizes of the agent's `gp*.log` files.
fn gp_logs(dir: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            (name.starts_with("gp") && name.ends_with(".log"))
                .then(|| (name, e.metadata().unwrap().len()))
        })
        .collect();
    v.sort();
    v
}

fn logs_dir(inst: &Install) -> PathBuf {
    inst.path("Spool/Logs")
}

#[test]
fn a_debug_log_begins_with_what_explains_the_device_and_shows_no_secret() {
    let (_net, inst) = two_jobs_on_appliance("[defaults]\nmax_log_mib = 2.5");
    let o = run_at_now(&inst, &["-d"]);
    assert_exit(&o, 0, "-d");
    let log = std::fs::read_to_string(logs_dir(&inst).join(TODAY)).expect("the day's log");
    let head: Vec<&str> = log.lines().take(3).collect();
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        head[0].contains(&format!("cncopgetprofile {version} (")) && head[0].contains("built 20"),
        "the first line names the version, target and build time\n{log}"
    );
    if let Some(t) = expected_triple() {
        assert!(head[0].contains(&format!("({t})")), "{log}");
    }
    let root = inst.root().display().to_string();
    assert!(
        head[1].contains(&format!("install root {root}")) && head[1].contains("clock 20"),
        "the second names the install root and the clock\n{log}"
    );
    for want in [
        "config file ",
        &format!("config [device] id = {DEVICE_ID}"),
        "config [device] key = ***",
        "config [defaults] max_log_mib = 2.5",
        "effective [network] url = https://127.0.0.1:",
        "retries = 1",
        "max_log_mib = 2.5 (2621440 bytes)",
    ] {
        assert!(log.contains(want), "the log has {want:?}\n{log}");
    }
    let config_at = log.find("config file ").unwrap();
    let first_request = log.find("GET ").unwrap_or(log.len());
    assert!(
        config_at < first_request,
        "the configuration comes before the work\n{log}"
    );
    assert!(
        !log.contains(DEVICE_KEY),
        "the device key is in the log\n{log}"
    );
    assert!(!stdout_of(&o).contains(DEVICE_KEY) && !stderr_of(&o).contains(DEVICE_KEY));
}

#[test]
fn a_proxy_password_is_never_shown_even_when_the_run_fails() {
    let net = net_with_profile(NetOptions::default(), two_jobs());
    let inst = Install::appliance();
    let port = dead_port();
    inst.setup(
        &net,
        &format!("[network]\nproxy = http://proxyuser:pr0xy-s3cret@127.0.0.1:{port}"),
    );
    let o = run_at_now(&inst, &["-d"]);
    assert_exit(&o, 3, "a proxy nobody listens on");
    let log = std::fs::read_to_string(logs_dir(&inst).join(TODAY)).expect("the day's log");
    assert!(
        log.contains("proxyuser:***@127.0.0.1"),
        "the proxy is shown, masked\n{log}"
    );
    for (what, text) in [
        ("log", log.as_str()),
        ("stderr", &stderr_of(&o)),
        ("stdout", &stdout_of(&o)),
    ] {
        assert!(
            !text.contains("pr0xy-s3cret"),
            "the proxy password is in the {what}\n{text}"
        );
        assert!(
            !text.contains(DEVICE_KEY),
            "the device key is in the {what}\n{text}"
        );
    }
}

#[test]
fn a_tiny_max_log_mib_bounds_the_logs_oldest_first_then_ends_the_day_with_one_line() {
    let net = net_with_profile(NetOptions::default(), profile_xml(DEVICE_ID, 20));
    let inst = Install::appliance();
    // 0.01 MiB = 10 485 bytes for every gp*.log file together.
    let cap = 10_485;
    inst.setup(&net, "[defaults]\nmax_log_mib = 0.01");
    let dir = logs_dir(&inst);
    let line = format!("{}\n", "an old line ".repeat(8));
    std::fs::write(dir.join("gp20261125.log"), line.repeat(4000 / line.len())).unwrap();
    std::fs::write(dir.join("gp20261126.log"), line.repeat(4000 / line.len())).unwrap();
    std::fs::write(dir.join("other-agent.log"), vec![b'x'; 50_000]).unwrap();

    let mut runs = 0;
    let today = dir.join(TODAY);
    let ends_with_cap_line = |p: &Path| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|t| t.lines().last().map(|l| l.contains("log cap reached")))
            .unwrap_or(false)
    };
    while !ends_with_cap_line(&today) {
        runs += 1;
        assert!(
            runs <= 40,
            "40 -d runs and the cap line never came: {:?}",
            gp_logs(&dir)
        );
        let o = run_at_now(&inst, &["-d"]);
        assert_exit(&o, 0, "-d run under the cap");
        let logs = gp_logs(&dir);
        let total: u64 = logs.iter().map(|(_, l)| l).sum();
        assert!(total <= cap, "run {runs}: {total} bytes > {cap}: {logs:?}");
        let names: Vec<&str> = logs.iter().map(|(n, _)| n.as_str()).collect();
        if !names.contains(&"gp20261125.log") || !names.contains(&"gp20261126.log") {
            assert!(
                !names.contains(&"gp20261125.log"),
                "run {runs}: the oldest day goes first: {names:?}"
            );
        }
    }
    assert!(
        runs >= 2,
        "the cap came after {runs} run(s): the test shows too little"
    );
    assert_eq!(
        gp_logs(&dir).len(),
        1,
        "only today's file is left: {:?}",
        gp_logs(&dir)
    );
    let text = std::fs::read_to_string(&today).unwrap();
    assert_eq!(
        text.matches("log cap reached").count(),
        1,
        "one cap line\n{text}"
    );
    assert!(
        text.lines().last().unwrap().contains("max_log_mib"),
        "the line names the setting\n{text}"
    );
    assert_eq!(
        std::fs::metadata(dir.join("other-agent.log"))
            .unwrap()
            .len(),
        50_000,
        "other programs' logs are not the agent's to remove"
    );

    // The day's file stays as it is; runs go on, and still record their outcome.
    let o = run_at_now(&inst, &["-d"]);
    assert_exit(&o, 0, "a run after the cap");
    let o = run_at_now(&inst, &[]);
    assert_exit(&o, 0, "a run without -d after the cap");
    assert_eq!(
        std::fs::read_to_string(&today).unwrap(),
        text,
        "nothing more today"
    );
    assert!(inst.path("Spool/cncopgetprofile.status").is_file());
}

#[test]
fn max_log_mib_out_of_range_is_a_configuration_error() {
    let net = standard_net(NetOptions::default());
    let inst = Install::bare();
    inst.setup(&net, "[defaults]\nmax_log_mib = 0");
    let o = inst.run(&[]);
    assert_exit(&o, 2, "max_log_mib = 0");
    let err = stderr_of(&o);
    assert!(
        err.contains("[defaults] max_log_mib") && err.contains("'0'"),
        "{err}"
    );
    assert_eq!(net.connections(), 0);
}
