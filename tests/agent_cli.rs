//! The agent's command line and configuration errors (PROTOCOL section 7:
//! exit code 2, and messages that name the file, section and key).

use support::*;

/// A configuration error: exit 2, nothing on stdout, one line on stderr
/// holding every one of `names`; the network is not contacted, no store.
#[track_caller]
fn assert_config_error(inst: &Install, net: Option<&TestNetwork>, names: &[&str]) -> String {
    let o = inst.run(&[]);
    assert_exit(&o, 2, "configuration error");
    assert!(o.stdout.is_empty(), "nothing on stdout\n{}", show(&o));
    let lines = err_lines(&o);
    assert_eq!(lines.len(), 1, "one line on stderr\n{}", show(&o));
    for n in names {
        assert!(lines[0].contains(n), "the error names {n:?}: {}", lines[0]);
    }
    if let Some(net) = net {
        assert_eq!(net.connections(), 0, "a bad configuration contacts nobody");
    }
    assert!(!inst.db_path().exists(), "no store is written");
    lines[0].clone()
}

#[test]
fn missing_ini_file_exits_2_naming_it_and_what_to_do() {
    let inst = Install::bare();
    assert_config_error(
        &inst,
        None,
        &["Config/cncop3.ini", "CNCOP_HOME", "-c", "sample"],
    );
}

/// Every section the agent uses is checked before the lock and before any
/// request: a bad value in a later step's section is exit 2 with nothing
/// done, also when a profile is already stored (it stays as it was).
#[test]
fn a_bad_value_in_any_section_the_agent_uses_stops_it_before_anything() {
    for (extra, names) in [
        (
            "[firewall]\nenabled = maybe",
            ["[firewall]", "enabled", "maybe"],
        ),
        (
            "[reporter]\ntimeout = soon",
            ["[reporter]", "timeout", "soon"],
        ),
        (
            "[version]\nautoupdate = sometimes",
            ["[version]", "autoupdate", "sometimes"],
        ),
        (
            "[defaults]\ndays_of_logs = 0",
            ["[defaults]", "days_of_logs", "0"],
        ),
    ] {
        let net = net_with_profile(NetOptions::default(), small_profile(DEVICE_ID, &[]));
        let inst = Install::bare();
        inst.setup(&net, extra);
        let mut all = vec!["cncop3.ini"];
        all.extend(names);
        assert_config_error(&inst, Some(&net), &all);
        assert!(
            !inst.path("Config/cncopgetprofile.lock").exists(),
            "{extra}: checked before the run lock"
        );

        // With a stored profile: untouched.
        inst.setup(&net, "");
        let o = inst.run(&[]);
        assert_exit(&o, 0, "a good run");
        let before = std::fs::read(inst.db_path()).expect("the store");
        let connections = net.connections();
        inst.setup(&net, extra);
        let o = inst.run(&[]);
        assert_exit(&o, 2, extra);
        assert_eq!(net.connections(), connections, "{extra}: no request");
        assert_eq!(
            std::fs::read(inst.db_path()).expect("the store"),
            before,
            "{extra}: the store is untouched"
        );
    }
}

/// The INI is shared by the suite: unknown sections and keys are allowed,
/// but a near miss of a key the agent reads is named, with what was meant.
#[test]
fn a_misspelled_key_is_a_warning_naming_file_section_key_and_meaning() {
    let net = net_with_profile(NetOptions::default(), small_profile(DEVICE_ID, &[]));
    let inst = Install::appliance();
    inst.setup(
        &net,
        "[firewall]\n-enabled\nenabeld = Off\n[network]\nproxy_user = someone-elses\n\
         [cncopagent]\nenabeld = 1\n",
    );
    let o = inst.run(&[]);
    assert_exit(&o, 0, "a misspelled key");
    assert!(o.stdout.is_empty(), "{}", show(&o));
    let lines = err_lines(&o);
    assert_eq!(
        lines.len(),
        1,
        "one warning, for the near miss only\n{}",
        show(&o)
    );
    for want in [
        "cncop3.ini",
        "[firewall]",
        "enabeld",
        "did you mean `enabled`?",
    ] {
        assert!(
            lines[0].contains(want),
            "the warning says {want:?}: {}",
            lines[0]
        );
    }
}

#[test]
fn ini_given_with_c_that_does_not_exist_exits_2_naming_it() {
    let net = net_with_profile(NetOptions::default(), small_profile(DEVICE_ID, &[]));
    let inst = Install::bare();
    inst.setup(&net, "");
    let missing = inst.path("elsewhere/other.ini");
    let o = inst.run(&["-c", missing.to_str().unwrap()]);
    assert_exit(&o, 2, "-c with a missing file");
    assert!(
        stderr_of(&o).contains(missing.to_str().unwrap()),
        "names the file\n{}",
        show(&o)
    );
    assert_eq!(net.connections(), 0);
}

#[test]
fn missing_device_key_exits_2_naming_file_section_key() {
    let net = standard_net(NetOptions::default());
    let inst = Install::bare();
    inst.setup(&net, "[device]\n-key");
    assert_config_error(&inst, Some(&net), &["cncop3.ini", "[device]", "key"]);
}

#[test]
fn non_numeric_retries_exits_2_naming_file_section_key() {
    let net = standard_net(NetOptions::default());
    let inst = Install::bare();
    inst.setup(&net, "[network]\nretries = lots");
    assert_config_error(
        &inst,
        Some(&net),
        &["cncop3.ini", "[network]", "retries", "lots"],
    );
}

#[test]
fn plain_http_url_without_allow_insecure_http_exits_2() {
    let net = standard_net(NetOptions::default());
    let inst = Install::bare();
    let url = format!("http://127.0.0.1:{}/cncop", net.port());
    inst.setup(&net, &format!("[network]\nurl = {url}"));
    let line = assert_config_error(&inst, Some(&net), &["cncop3.ini", "[network]", "url"]);
    assert!(
        line.contains("http://") || line.contains("https"),
        "says the scheme is the problem: {line}"
    );
}

#[test]
fn unknown_flag_exits_2_with_usage() {
    let inst = Install::bare();
    let o = inst.run(&["--frobnicate"]);
    assert_exit(&o, 2, "unknown flag");
    assert!(o.stdout.is_empty(), "{}", show(&o));
    let lines = err_lines(&o);
    assert!(lines.len() >= 2, "a message and a usage line\n{}", show(&o));
    assert!(
        lines.iter().any(|l| l.contains("--frobnicate")),
        "names the unknown flag\n{}",
        show(&o)
    );
    assert!(
        lines.iter().any(|l| l.starts_with("usage:")),
        "a line starting 'usage:'\n{}",
        show(&o)
    );
}

#[test]
fn help_flags_print_help_on_stdout_and_exit_0() {
    let inst = Install::bare();
    for flag in ["-?", "-h", "--help"] {
        let o = inst.run(&[flag]);
        assert_exit(&o, 0, flag);
        let out = stdout_of(&o);
        assert!(
            out.to_ascii_lowercase().contains("usage"),
            "{flag}: help on stdout\n{}",
            show(&o)
        );
        for opt in [
            "--recreate",
            "--noupdate",
            "--update",
            "--dry-run",
            "--list",
        ] {
            assert!(out.contains(opt), "{flag}: help lists {opt}\n{out}");
        }
        assert!(
            o.stderr.is_empty(),
            "{flag}: nothing on stderr\n{}",
            show(&o)
        );
        // One usage line: the help's is the one a usage error prints.
        let bad = inst.run(&["--frobnicate"]);
        let usage = err_lines(&bad)
            .into_iter()
            .find(|l| l.starts_with("usage:"))
            .expect("a usage line");
        assert_eq!(out.lines().next(), Some(usage.as_str()), "{flag}");
    }
    assert!(!inst.db_path().exists());
}

#[test]
fn noupdate_with_update_exits_2() {
    let net = net_with_profile(NetOptions::default(), small_profile(DEVICE_ID, &[]));
    let inst = Install::bare();
    inst.setup(&net, "");
    let o = inst.run(&["--noupdate", "--update"]);
    assert_exit(&o, 2, "--noupdate --update");
    let err = stderr_of(&o);
    assert!(
        err.contains("--noupdate") && err.contains("--update"),
        "names both flags\n{}",
        show(&o)
    );
    assert!(o.stdout.is_empty(), "{}", show(&o));
    assert_eq!(net.connections(), 0, "nothing is done");
    assert!(!inst.db_path().exists());
}

#[test]
fn json_without_list_exits_2() {
    let inst = Install::bare();
    let o = inst.run(&["--json"]);
    assert_exit(&o, 2, "--json alone");
    assert!(
        err_lines(&o).iter().any(|l| l.starts_with("usage:")),
        "{}",
        show(&o)
    );
}
