//! Killing the agent at every step of an accepted root rotation and an
//! accepted update (PROTOCOL 3 and 8.3): the trust state on disk is always
//! one the agent accepted as a whole (before the run, after the rotation,
//! after the update), never a mix or nothing; when ccs3updater was told, the
//! state that led to it was already on disk; and the next run, without any
//! manual step, exits 0 and ends in the same state as an uninterrupted run.
//!
//! Kill moments: while the agent waits for each answer of the run (the
//! network holds that request), then moments spread over a measured run (one
//! random point in each of N equal slices). `TRUST_KILL_POINTS` sets N
//! (default 24); the long sweep is the ignored test, run by `.ci/run`.

use std::net::UdpSocket;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// Every file of the template's `Config/`, copied into a fresh install.
fn clone_install(template: &Install) -> Install {
    let inst = Install::appliance();
    for entry in std::fs::read_dir(template.path("Config")).expect("read Config") {
        let entry = entry.expect("entry");
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            std::fs::copy(entry.path(), inst.path("Config").join(entry.file_name()))
                .expect("copy a Config file");
        }
    }
    inst
}

fn spawn(inst: &Install) -> Child {
    let mut cmd = agent_command();
    cmd.env("CNCOP_HOME", inst.root())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd.spawn().expect("start the agent")
}

fn drain(sock: &UdpSocket) -> Vec<String> {
    let mut got = Vec::new();
    while let Some((d, _)) = recv_datagram(sock, Duration::from_millis(200)) {
        got.push(String::from_utf8_lossy(&d).into_owned());
    }
    got
}

fn wait_gone(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

struct Scene {
    net: TestNetwork,
    updater: UdpSocket,
    template: Install,
    /// Trust state before the run, after the rotations, after the update.
    states: [Vec<u8>; 3],
}

/// A device that accepted root 1 and release 1 (3.4.0, installed); then
/// the network offers roots 2 and 3 and a release of 3.10.0.
fn scene() -> Scene {
    let updater = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = updater.local_addr().expect("addr").port();
    let net = net_with_profile(NetOptions::default(), two_jobs());
    let template = Install::appliance();
    template.setup(&net, &update_ini(port.into(), "On"));
    let mut vendor = signed_release(&net, &template, "3.4.0");
    assert_exit(&template.run(&[]), 0, "the template's first run");
    assert!(drain(&updater).is_empty());
    let before = trust_state_bytes(&template).expect("trust state kept");
    rotate_keys(&mut vendor, 2);
    vendor.publish_roots(&net);
    vendor.publish_release(&net, &builds("3.10.0"), FAR);

    let rotated = clone_install(&template);
    assert_exit(&rotated.run(&["--noupdate"]), 0, "rotations only");
    let after_rotation = trust_state_bytes(&rotated).expect("kept");
    let full = clone_install(&template);
    assert_exit(&full.run(&[]), 0, "rotations and update");
    let after_update = trust_state_bytes(&full).expect("kept");
    assert_eq!(
        drain(&updater).len(),
        1,
        "the uninterrupted run announced 3.10.0"
    );
    assert!(before != after_rotation && after_rotation != after_update);
    Scene {
        net,
        updater,
        template,
        states: [before, after_rotation, after_update],
    }
}

/// Checks the state after a kill, then that the next run completes it.
fn check(scene: &Scene, inst: &Install, what: &str, failures: &mut Vec<String>) {
    let told = drain(&scene.updater);
    let state = trust_state_bytes(inst);
    let which = state
        .as_ref()
        .and_then(|s| scene.states.iter().position(|k| k == s));
    match which {
        None => failures.push(format!(
            "{what}: the trust state is none of the accepted ones ({} bytes)",
            state.map_or(0, |s| s.len())
        )),
        Some(i) if !told.is_empty() && i != 2 => failures.push(format!(
            "{what}: ccs3updater was told before the update's trust state was on disk (state {i})"
        )),
        Some(_) => {}
    }
    let o = inst.run(&[]);
    if o.status.code() != Some(0) {
        failures.push(format!("{what}: the next run failed\n{}", show(&o)));
    }
    if trust_state_bytes(inst).as_deref() != Some(&scene.states[2][..]) {
        failures.push(format!(
            "{what}: the next run did not end in the accepted state"
        ));
    }
    drain(&scene.updater);
}

/// The paths (below `v3/`) the run asks for, in order.
const STEPS: [&str; 6] = [
    "/trust/root/2.xml",
    "/trust/root/3.xml",
    "/trust/root/4.xml",
    "/profile",
    "/software/timestamp.xml",
    "/software/release/2.xml",
];

fn sweep(points: usize) {
    let scene = scene();
    let mut failures = Vec::new();

    // While the agent waits for each answer.
    for step in STEPS {
        let inst = clone_install(&scene.template);
        scene.net.push_fault(
            step,
            Fault::Delay {
                for_: Duration::from_secs(30),
            },
        );
        let child = spawn(&inst);
        let deadline = Instant::now() + Duration::from_secs(60);
        while scene.net.pending_faults() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            scene.net.pending_faults(),
            0,
            "the agent never asked for {step}"
        );
        wait_gone(child);
        check(
            &scene,
            &inst,
            &format!("killed waiting for {step}"),
            &mut failures,
        );
    }

    // Spread over a measured run.
    let mut took = Vec::new();
    for _ in 0..3 {
        let inst = clone_install(&scene.template);
        let t0 = Instant::now();
        assert_exit(&inst.run(&[]), 0, "a measured run");
        took.push(t0.elapsed());
        drain(&scene.updater);
    }
    took.sort();
    let run = took[1];
    let mut seed = std::process::id() as u64 | 1;
    for i in 0..points {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let frac = (i as f64 + (seed >> 11) as f64 / (1u64 << 53) as f64) / points as f64;
        let at = run.mul_f64(frac);
        let inst = clone_install(&scene.template);
        let child = spawn(&inst);
        std::thread::sleep(at);
        wait_gone(child);
        check(
            &scene,
            &inst,
            &format!("killed {} ms into the run", at.as_millis()),
            &mut failures,
        );
    }
    println!(
        "trust kill sweep: {} request steps + {points} moments over a {} ms run, {} failures",
        STEPS.len(),
        run.as_millis(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn points() -> usize {
    std::env::var("TRUST_KILL_POINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

#[test]
fn a_kill_at_any_step_of_a_rotation_and_an_update_leaves_an_accepted_trust_state() {
    sweep(points());
}

#[test]
#[ignore = "long sweep (400 kill moments, a few minutes): .ci/run runs the ignored tests"]
fn long_kill_sweep_of_a_rotation_and_an_update() {
    sweep(400);
}
