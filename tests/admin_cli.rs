//! The `switchboard` binary end to end: `run` on a loopback config, the admin
//! subcommands against it, `check` on good and bad configs, and SIGTERM/SIGINT shutdown.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// A port nothing listens on right now (bound to port 0, then released).
fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct TestConfig {
    dir: tempfile::TempDir,
    path: PathBuf,
    admin_port: u16,
    listen: Vec<String>,
}

impl TestConfig {
    fn new() -> TestConfig {
        Self::with_admin_port(free_tcp_port())
    }

    fn with_admin_port(admin_port: u16) -> TestConfig {
        let dir = tempfile::tempdir().unwrap();
        let listen = vec![
            format!("udp:127.0.0.1:{}", free_udp_port()),
            format!("tcp:127.0.0.1:{}", free_tcp_port()),
        ];
        let text = format!(
            "[sip]\nlisten = [\"{}\", \"{}\"]\n\
             [admin]\nlisten = \"127.0.0.1:{admin_port}\"\n\
             [storage]\ndir = \"data\"\n\
             [extensions.2000]\n\
             [extensions.2001]\npassword = \"chosen-password\"\n",
            listen[0], listen[1]
        );
        let path = dir.path().join("switchboard.toml");
        std::fs::write(&path, text).unwrap();
        TestConfig {
            dir,
            path,
            admin_port,
            listen,
        }
    }

    fn secrets_path(&self) -> PathBuf {
        self.dir.path().join("data").join("secrets.toml")
    }

    fn switchboard(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(&self.path)
            .output()
            .unwrap()
    }

    fn start(&self) -> Server {
        let mut child = Command::new(BIN)
            .args(["--log-level", "info", "run", "--config"])
            .arg(&self.path)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut seen = String::new();
        // The server logs this once the admin API accepts connections.
        loop {
            match lines.next() {
                Some(Ok(line)) => {
                    seen.push_str(&line);
                    seen.push('\n');
                    if line.contains("admin API listening") {
                        break;
                    }
                }
                _ => panic!("server exited before it was ready:\n{seen}"),
            }
        }
        // Keep draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Server { child: Some(child) }
    }
}

/// Kills the server if a test fails before stopping it.
struct Server {
    child: Option<Child>,
}

impl Server {
    fn stop(mut self, signal: &str) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        child.wait().unwrap()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stored_password(path: &Path, ext: &str) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let table: toml::Table = toml::from_str(&text).unwrap();
    table["extensions"][ext]["password"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn status_secrets_missing_endpoints_and_signal_shutdown() {
    let config = TestConfig::new();
    let server = config.start();

    let out = config.switchboard(&["status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let status: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["pid"], server.pid());
    assert!(status["uptime_secs"].is_u64());
    assert_eq!(status["listeners"], serde_json::json!(config.listen));
    assert_eq!(status["extensions"], 2);
    assert_eq!(status["config"], config.path.display().to_string());
    assert_eq!(
        status["secrets_file"],
        config.secrets_path().display().to_string()
    );
    for counter in ["messages_in", "messages_out", "parse_errors", "dropped"] {
        assert!(
            status["counters"][counter].is_u64(),
            "counter {counter} in {status}"
        );
    }

    // Only the extension without a password got one, in a private file.
    let mode = std::fs::metadata(config.secrets_path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let password = stored_password(&config.secrets_path(), "2000");
    let out = config.switchboard(&["secrets"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("2000  {password}")),
        "{}",
        stdout(&out)
    );
    assert!(!stdout(&out).contains("2001"), "{}", stdout(&out));

    for (command, key) in [
        ("registrations", "\"registrations\""),
        ("bans", "\"bans\""),
        ("calls", "\"calls\""),
    ] {
        let out = config.switchboard(&[command]);
        assert!(out.status.success(), "{command}: {}", stderr(&out));
        assert!(stdout(&out).contains(key), "{command}: {}", stdout(&out));
    }

    assert_eq!(server.stop("TERM").code(), Some(0));
    let out = config.switchboard(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    let message = stderr(&out);
    assert!(message.contains("cannot reach"), "{message}");
    assert!(
        message.contains(&format!("127.0.0.1:{}", config.admin_port)),
        "{message}"
    );

    // A second start keeps the generated password; Ctrl-C stops it cleanly too.
    let server = config.start();
    assert_eq!(stored_password(&config.secrets_path(), "2000"), password);
    assert_eq!(server.stop("INT").code(), Some(0));
}

#[test]
fn check_accepts_a_good_config_and_names_the_bad_key() {
    let config = TestConfig::new();
    let out = config.switchboard(&["check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !config.secrets_path().exists(),
        "check must not write secrets"
    );

    let text =
        std::fs::read_to_string(&config.path).unwrap() + "[media]\nrtp_ports = \"30001-30100\"\n";
    std::fs::write(&config.path, text).unwrap();
    for command in ["check", "run"] {
        let out = config.switchboard(&[command]);
        assert_eq!(out.status.code(), Some(1), "{command}");
        let expected = format!(
            "{}: media.rtp_ports: start 30001 must be even",
            config.path.display()
        );
        assert!(
            stderr(&out).contains(&expected),
            "{command}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn run_fails_with_the_address_when_the_admin_port_is_taken() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = TestConfig::with_admin_port(port);
    let out = config.switchboard(&["run"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("admin.listen 127.0.0.1:{port}")),
        "{}",
        stderr(&out)
    );
}
