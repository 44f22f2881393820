//! The `switchboard` command: runs the server, checks a config, and talks to a running
//! server's admin API. Exit status 0 on success, 1 with a message on stderr otherwise.

use clap::{Parser, Subcommand};
use serde_json::Value;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use switchboard::admin::client::{AdminClient, ClientError};
use switchboard::config::{self, Config};
use switchboard::dialplan::{self, Dialplan};
use switchboard::server::{self, RunOptions};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "switchboard",
    version,
    about = "An office PBX: SIP B2BUA with RTP relay and Lua dialplans"
)]
struct Cli {
    /// Config file; without it the embedded default is used (see README.md).
    #[arg(long, short, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log filter: a level (error, warn, info, debug, trace) or tracing directives such as
    /// "info,switchboard::sip=debug". Overrides RUST_LOG; default info.
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the server; SIGINT or SIGTERM stops it cleanly.
    Run {
        /// Log every SIP message sent and received, with addresses.
        #[arg(long)]
        sip_trace: bool,
    },
    /// Validate the config and the dialplans without starting anything.
    Check,
    /// Check or test the Lua dialplans in `[dialplan] dir`.
    Dialplan {
        #[command(subcommand)]
        command: DialplanCommand,
    },
    /// Show the running server's version, uptime, listeners and counters.
    Status,
    /// List registered contacts.
    Registrations,
    /// List banned source addresses.
    Bans,
    /// Lift the ban on a source address.
    Unban {
        /// The banned IP address.
        address: String,
    },
    /// List calls in progress.
    Calls,
    /// Reload the config and dialplans without dropping calls.
    Reload,
    /// Show the passwords generated for extensions that have none in the config.
    Secrets,
    /// List call detail records, newest last.
    Cdr {
        /// How many records, counting back from the newest.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Output format.
        #[arg(long, value_enum, default_value_t = CdrFormat::Json)]
        format: CdrFormat,
    },
}

#[derive(Subcommand)]
enum DialplanCommand {
    /// Compile every script and run default.lua's top level; report the first error as
    /// file:line: message.
    Check,
    /// Run the simulated calls in the dialplan folder's tests/*.lua.
    Test,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(message) = init_logging(cli.log_level.as_deref()) {
        eprintln!("switchboard: {message}");
        return ExitCode::FAILURE;
    }
    match execute(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("switchboard: {message}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(level: Option<&str>) -> Result<(), String> {
    let filter = match level {
        Some(level) => {
            EnvFilter::try_new(level).map_err(|e| format!("--log-level {level:?}: {e}"))?
        }
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    Ok(())
}

fn execute(cli: Cli) -> Result<(), String> {
    let config = Config::load(cli.config.as_deref()).map_err(|e| e.to_string())?;
    match cli.command {
        Command::Run { sip_trace } => run(config, RunOptions { sip_trace }),
        Command::Check => check(&config),
        Command::Dialplan {
            command: DialplanCommand::Check,
        } => dialplan_check(&config),
        Command::Dialplan {
            command: DialplanCommand::Test,
        } => dialplan_test(&config),
        Command::Secrets => secrets(&config),
        Command::Cdr { limit, format } => cdr(&config, limit, format),
        Command::Status => admin_call(&config, "status", |c| c.get("/api/status")),
        Command::Registrations => {
            admin_call(&config, "registrations", |c| c.get("/api/registrations"))
        }
        Command::Bans => admin_call(&config, "bans", |c| c.get("/api/bans")),
        Command::Unban { address } => admin_call(&config, "unban", |c| {
            c.delete(&format!("/api/bans/{address}"))
        }),
        Command::Calls => admin_call(&config, "calls", |c| c.get("/api/calls")),
        Command::Reload => admin_call(&config, "reload", |c| c.post("/api/reload")),
    }
}

fn run(config: Config, opts: RunOptions) -> Result<(), String> {
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime
        .block_on(server::run(config, opts))
        .map_err(|e| e.to_string())
}

fn check(config: &Config) -> Result<(), String> {
    check_dialplans(config)?;
    println!(
        "{}: OK ({} listeners, {} extensions)",
        config.origin,
        config.sip.listen.len(),
        config.extensions.len()
    );
    Ok(())
}

/// `switchboard check`'s part for the dialplans. A config whose dialplan folder does not
/// exist is still checked (and passes) with a warning, so a config can be validated
/// before its dialplans are in place; `dialplan check` insists on the folder.
fn check_dialplans(config: &Config) -> Result<(), String> {
    let dir = &config.dialplan.dir;
    if !dir.exists() {
        println!(
            "dialplans: {} does not exist: `switchboard run` needs it",
            dir.display()
        );
        return Ok(());
    }
    dialplan_check(config)
}

fn dialplan_check(config: &Config) -> Result<(), String> {
    let plan = Dialplan::load(&config.dialplan.dir).map_err(|e| e.to_string())?;
    println!(
        "dialplans in {}: OK ({})",
        plan.dir().display(),
        plan.files().join(", ")
    );
    Ok(())
}

fn dialplan_test(config: &Config) -> Result<(), String> {
    let dir = &config.dialplan.dir;
    let report = dialplan::harness::run_tests(dir).map_err(|e| e.to_string())?;
    if report.files.is_empty() {
        println!(
            "no tests: add *.lua files to {}",
            dir.join(dialplan::harness::TESTS_DIR).display()
        );
        return Ok(());
    }
    println!("{report}");
    if report.success() {
        Ok(())
    } else {
        Err(format!("{} dialplan tests failed", report.failed()))
    }
}

/// Reads the secrets file directly rather than asking the server: the file's 0600 mode
/// is the access control, and the admin API never hands out passwords.
fn secrets(config: &Config) -> Result<(), String> {
    let path = config.secrets_path();
    let stored = config::read_secrets(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let generated: Vec<_> = config
        .extensions
        .iter()
        .filter(|(_, ext)| ext.credential.is_none())
        .map(|(name, _)| name)
        .collect();
    if generated.is_empty() {
        println!(
            "Every extension has a password or ha1 in {}.",
            config.origin
        );
        return Ok(());
    }
    println!("Generated passwords ({}):", path.display());
    for name in generated {
        match stored.extensions.get(name) {
            Some(entry) => println!("  {name}  {}", entry.password),
            None => println!("  {name}  (none yet: `switchboard run` generates it on start)"),
        }
    }
    Ok(())
}

/// Calls the running server's admin API at `[admin] listen` and prints the JSON answer.
#[derive(Clone, Copy, clap::ValueEnum)]
enum CdrFormat {
    Json,
    Csv,
}

/// `switchboard cdr`: the records come as JSON from the admin API; CSV is made here
/// with the same writer the API's `?format=csv` uses.
fn cdr(config: &Config, limit: usize, format: CdrFormat) -> Result<(), String> {
    let path = format!("/api/cdrs?limit={limit}");
    match format {
        CdrFormat::Json => admin_call(config, "cdr", |c| c.get(&path)),
        CdrFormat::Csv => {
            let client = AdminClient::new(config.admin.listen);
            let json = client
                .get(&path)
                .map_err(|e| format!("`switchboard cdr`: {e}"))?;
            let rows: Vec<(u64, switchboard::store::Cdr)> = json["cdrs"]
                .as_array()
                .map(|records| {
                    records
                        .iter()
                        .filter_map(|r| {
                            Some((r["id"].as_u64()?, serde_json::from_value(r.clone()).ok()?))
                        })
                        .collect()
                })
                .unwrap_or_default();
            print!("{}", switchboard::store::cdrs_to_csv(&rows));
            Ok(())
        }
    }
}

fn admin_call(
    config: &Config,
    command: &str,
    call: impl FnOnce(&AdminClient) -> Result<Value, ClientError>,
) -> Result<(), String> {
    let client = AdminClient::new(config.admin.listen);
    match call(&client) {
        Ok(json) => {
            let text = serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?;
            println!("{text}");
            Ok(())
        }
        Err(e @ ClientError::Unreachable { .. }) => Err(format!(
            "{e}\n(admin.listen from {}; is `switchboard run` running with this config?)",
            config.origin
        )),
        Err(ClientError::Status {
            status: 404,
            message,
        }) => Err(format!("`switchboard {command}`: {message}")),
        Err(e) => Err(format!("`switchboard {command}`: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn config_and_log_level_are_accepted_before_or_after_the_command() {
        let a = Cli::try_parse_from(["switchboard", "--config", "a.toml", "status"]).unwrap();
        let b = Cli::try_parse_from([
            "switchboard",
            "status",
            "--config",
            "a.toml",
            "--log-level",
            "debug",
        ])
        .unwrap();
        assert_eq!(a.config, Some(PathBuf::from("a.toml")));
        assert_eq!(b.config, Some(PathBuf::from("a.toml")));
        assert_eq!(b.log_level.as_deref(), Some("debug"));
        let run = Cli::try_parse_from(["switchboard", "run", "--sip-trace"]).unwrap();
        assert!(matches!(run.command, Command::Run { sip_trace: true }));
    }

    #[test]
    fn dialplan_subcommands_parse() {
        let cli = Cli::try_parse_from(["switchboard", "dialplan", "test", "-c", "a.toml"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Dialplan {
                command: DialplanCommand::Test
            }
        ));
        assert_eq!(cli.config, Some(PathBuf::from("a.toml")));
        assert!(Cli::try_parse_from(["switchboard", "dialplan"]).is_err());
    }

    #[test]
    fn sip_trace_belongs_to_run_only() {
        assert!(Cli::try_parse_from(["switchboard", "status", "--sip-trace"]).is_err());
    }
}
