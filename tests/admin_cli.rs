//! The `switchboard` binary end to end: `run` on a loopback config, the admin
//! subcommands against it, `check` on good and bad configs, and SIGTERM/SIGINT shutdown.

mod common;

use common::free_port;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

struct TestConfig {
    dir: tempfile::TempDir,
    path: PathBuf,
    admin_port: u16,
    listen: Vec<String>,
}

impl TestConfig {
    fn new() -> TestConfig {
        Self::with_admin_port(free_port())
    }

    fn with_admin_port(admin_port: u16) -> TestConfig {
        let dir = tempfile::tempdir().unwrap();
        let listen = vec![
            format!("udp:127.0.0.1:{}", free_port()),
            format!("tcp:127.0.0.1:{}", free_port()),
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
        self.start_with(&[]).0
    }

    /// Starts `run` with `run_args`; returns the server and the receiver of every log
    /// line written after it became ready.
    fn start_with(&self, run_args: &[&str]) -> (Server, std::sync::mpsc::Receiver<String>) {
        let mut child = Command::new(BIN)
            .args(["--log-level", "info", "run"])
            .args(run_args)
            .arg("--config")
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
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        (Server { child: Some(child) }, rx)
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

#[test]
fn sip_trace_logs_each_message_with_its_direction_and_peer() {
    let config = TestConfig::new();
    let (server, log) = config.start_with(&["--sip-trace"]);
    let sip: SocketAddr = config.listen[0]
        .strip_prefix("udp:")
        .unwrap()
        .parse()
        .unwrap();
    let phone = UdpSocket::bind("127.0.0.1:0").unwrap();
    let request = format!(
        "OPTIONS sip:{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKtrace1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:t@127.0.0.1>;tag=1\r\nTo: <sip:{sip}>\r\n\
         Call-ID: trace-test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        phone.local_addr().unwrap()
    );
    phone.send_to(request.as_bytes(), sip).unwrap();
    phone
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = phone.recv_from(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"SIP/2.0 200"));
    drop(server);
    // The log holds both messages whole, each with its direction and the phone's address.
    let text: String = log.iter().collect::<Vec<_>>().join("\n");
    let phone = phone.local_addr().unwrap().to_string();
    let received = text
        .find(&format!("received from Udp {phone}\nOPTIONS sip:"))
        .unwrap_or_else(|| panic!("the request is not traced: {text}"));
    let answered = text
        .find(&format!("sent to Udp {phone}\nSIP/2.0 200 OK"))
        .unwrap_or_else(|| panic!("the response is not traced: {text}"));
    assert!(received < answered, "{text}");
    assert_eq!(text.matches("Call-ID: trace-test").count(), 2, "{text}");
}
