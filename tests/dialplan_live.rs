//! The Lua dialplan inside the running server: a runaway script rejects only its own
//! call, a broken edit is refused with file:line while the old plan keeps routing,
//! and reloads during a load run drop no calls.

mod common;

use common::{SIPP_EXTENSIONS, Server, call_uac, cdrs, start_callee};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn copy_dialplans(to: &Path) {
    let from = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/dialplans"));
    for entry in std::fs::read_dir(from).expect("dialplans") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "lua") {
            std::fs::copy(&path, to.join(path.file_name().expect("name"))).expect("copy");
        }
    }
}

/// The shipped plan, with 1999 routed into an endless loop.
fn plan_with_runaway(dir: &Path) {
    copy_dialplans(dir);
    let default = dir.join("default.lua");
    let text = std::fs::read_to_string(&default).expect("default.lua");
    let text = text.replace(
        "function route(call)\n",
        "function route(call)\n  if call.to.user == \"1999\" then while true do end end\n",
    );
    assert!(
        text.contains("while true do end"),
        "the route function moved"
    );
    std::fs::write(default, text).expect("write");
}

fn reload(server: &Server) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["reload", "--config"])
        .arg(&server.config)
        .output()
        .expect("cli")
}

#[test]
fn a_runaway_script_rejects_its_call_with_500_while_other_calls_go_through() {
    let dir = tempfile::tempdir().expect("tempdir");
    plan_with_runaway(dir.path());
    let server = Server::start_with_dialplans(SIPP_EXTENSIONS, dir.path());
    let _callee = start_callee(&server);

    let looping = std::thread::scope(|s| {
        let looping = s.spawn(|| call_uac(&server, "1999", 1, 1, 0));
        let normal = call_uac(&server, "1001", 20, 10, 100);
        assert!(
            normal.status.success(),
            "calls beside the runaway script failed: {}",
            String::from_utf8_lossy(&normal.stdout)
        );
        looping.join().expect("thread")
    });
    assert!(!looping.status.success(), "the runaway call cannot succeed");
    let ok = common::wait_until(Duration::from_secs(10), || {
        cdrs(&server)
            .iter()
            .any(|r| r["callee"] == "1999" && r["hangup_cause"] == "rejected with 500")
    });
    assert!(ok, "no 500 for the runaway call: {:?}", cdrs(&server));
}

#[test]
fn a_broken_edit_is_refused_with_file_and_line_and_the_old_plan_keeps_routing() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dialplans(dir.path());
    let server = Server::start_with_dialplans(SIPP_EXTENSIONS, dir.path());
    let _callee = start_callee(&server);

    let default = dir.path().join("default.lua");
    let good = std::fs::read_to_string(&default).expect("read");
    std::fs::write(
        &default,
        good.replace("function route(call)", "function route(call) if then"),
    )
    .expect("write");
    let out = reload(&server);
    let message =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{message}");
    assert!(
        message.contains("default.lua:"),
        "no file:line in {message}"
    );

    let calls = call_uac(&server, "1001", 5, 5, 100);
    assert!(
        calls.status.success(),
        "the old plan stopped routing: {}",
        String::from_utf8_lossy(&calls.stdout)
    );

    std::fs::write(&default, good).expect("restore");
    let out = reload(&server);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn reloads_during_a_load_run_drop_no_calls() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dialplans(dir.path());
    let server = Server::start_with_dialplans(SIPP_EXTENSIONS, dir.path());
    let _callee = start_callee(&server);
    let load = std::thread::scope(|s| {
        let load = s.spawn(|| call_uac(&server, "1001", 300, 50, 200));
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(700));
            let out = reload(&server);
            assert!(
                out.status.success(),
                "reload failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        load.join().expect("thread")
    });
    assert!(
        load.status.success(),
        "calls failed during reloads: {}",
        String::from_utf8_lossy(&load.stdout)
    );
}
