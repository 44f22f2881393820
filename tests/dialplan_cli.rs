//! `switchboard dialplan test|check` end to end: the shipped dialplan passes its tests,
//! broken copies fail with file:line, and `switchboard check` checks the dialplans too.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("dialplans")
}

/// A config in a temp dir whose `[dialplan] dir` is `dialplans`.
struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Setup {
    fn with_dialplans(dialplans: &Path) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("switchboard.toml");
        std::fs::write(
            &config,
            format!("[dialplan]\ndir = {:?}\n", dialplans.display().to_string()),
        )
        .unwrap();
        Setup { dir, config }
    }

    /// A copy of the shipped dialplans with `file` edited by `edit`.
    fn with_broken_copy(file: &str, edit: impl FnOnce(String) -> String) -> (Setup, PathBuf) {
        let setup = Setup::with_dialplans(&PathBuf::from("copy"));
        let copy = setup.dir.path().join("copy");
        copy_dir(&shipped(), &copy);
        let path = copy.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, edit(text)).unwrap();
        (setup, path)
    }

    fn switchboard(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .unwrap()
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The 1-based line of `needle` in `text`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn the_shipped_dialplan_passes_its_tests() {
    let setup = Setup::with_dialplans(&shipped());
    let out = setup.switchboard(&["dialplan", "test"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("tests/groups.lua"), "{text}");
    assert!(
        text.contains("  ok    support hunts through its members in order"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("passed, 0 failed"), "{text}");
}

#[test]
fn a_script_error_fails_the_tests_with_file_and_line() {
    let marker = "local settings = features.settings(ext)";
    let (setup, path) = Setup::with_broken_copy("default.lua", |text| {
        text.replace(
            marker,
            &format!("{marker}\n  local broken = settings.dnd.on"),
        )
    });
    let line = line_of(&std::fs::read_to_string(&path).unwrap(), "local broken");
    let out = setup.switchboard(&["dialplan", "test"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let expected = format!(
        "{}:{line}: attempt to index a boolean value",
        path.display()
    );
    assert!(stdout(&out).contains(&expected), "{}", stdout(&out));
    assert!(stdout(&out).contains("FAIL  an extension rings and is answered"));
    assert!(
        stderr(&out).contains("dialplan tests failed"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_wrong_expectation_fails_with_what_differs() {
    let (setup, _) = Setup::with_broken_copy("tests/outside.lua", |text| {
        text.replace("rejected = 503, reason", "rejected = 502, reason")
    });
    let out = setup.switchboard(&["dialplan", "test"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("FAIL  9 + a number is refused with 503 until trunks exist"),
        "{text}"
    );
    assert!(
        text.contains("rejected: expected rejected 502 No Trunk Available"),
        "{text}"
    );
    assert!(
        text.contains("got rejected 503 No Trunk Available"),
        "{text}"
    );
}

#[test]
fn syntax_errors_fail_check_test_and_the_config_check() {
    let (setup, path) = Setup::with_broken_copy("office.lua", |text| {
        text.replacen("ring_seconds = 20,", "ring_seconds = ,", 1)
    });
    let line = line_of(&std::fs::read_to_string(&path).unwrap(), "ring_seconds = ,");
    let expected = format!("{}:{line}: unexpected symbol near ','", path.display());
    for args in [
        &["dialplan", "check"][..],
        &["dialplan", "test"],
        &["check"],
    ] {
        let out = setup.switchboard(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&out).contains(&expected),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn check_reports_good_dialplans() {
    let setup = Setup::with_dialplans(&shipped());
    for args in [&["dialplan", "check"][..], &["check"]] {
        let out = setup.switchboard(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        assert!(
            stdout(&out).contains("OK (default.lua, features.lua, office.lua)"),
            "{args:?}: {}",
            stdout(&out)
        );
    }
}

#[test]
fn dialplan_check_needs_the_folder() {
    let setup = Setup::with_dialplans(&PathBuf::from("missing"));
    let out = setup.switchboard(&["dialplan", "check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot read the folder"),
        "{}",
        stderr(&out)
    );
    // A config check alone still passes, with a note.
    let out = setup.switchboard(&["check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("does not exist"), "{}", stdout(&out));
}
