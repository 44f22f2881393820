//! The TOML configuration: parsed in two steps so every problem is reported with the
//! key it belongs to. Serde reads the file into plain `*File` structs (strings and
//! numbers, unknown keys rejected so typos are caught); `validate` turns those into the
//! typed [`Config`] the server uses, naming the key of the first bad value.
//!
//! The embedded default (`config/default.toml`) lists extensions without passwords;
//! [`Config::resolve_secrets`] generates random ones on first start and keeps them in
//! `<storage.dir>/secrets.toml`, so no install ships a guessable password.

use crate::media::codec::CodecKind;
use crate::sip::{Host, SipStr};
use rand::Rng;
use serde::{Deserialize, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The config `switchboard run` uses when no `--config` is given.
pub const EMBEDDED_DEFAULT: &str = include_str!("../config/default.toml");

/// File name of the generated extension passwords inside `storage.dir`.
pub const SECRETS_FILE: &str = "secrets.toml";

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where the config came from, for messages and `switchboard status`.
    pub origin: Origin,
    pub sip: SipConfig,
    pub media: MediaConfig,
    pub admin: AdminConfig,
    pub storage: StorageConfig,
    pub dialplan: DialplanConfig,
    /// Keyed by extension number (the user part of its AOR).
    pub extensions: BTreeMap<String, Extension>,
    pub security: SecurityConfig,
    pub registrar: RegistrarConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Embedded,
    File(PathBuf),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Embedded => f.write_str("embedded default config"),
            Origin::File(path) => write!(f, "{}", path.display()),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SipConfig {
    pub listen: Vec<Listen>,
    /// RFC 3261 timers: T1 (RTT estimate), T2 (max non-INVITE retransmit interval),
    /// T4 (max time a message stays in the network).
    pub t1: Duration,
    pub t2: Duration,
    pub t4: Duration,
    /// Offered in challenges in this order (one WWW-/Proxy-Authenticate header each).
    pub auth_algorithms: Vec<DigestAlgorithm>,
    /// The SIP domain this server is authoritative for; `None` accepts any host.
    pub domain: Option<String>,
    pub user_agent: String,
    /// RFC 4028 session timers: the interval (seconds) asked for in our INVITEs and
    /// the longest granted to a caller, and the shortest accepted (Min-SE).
    pub session_expires_secs: u32,
    pub min_se_secs: u32,
}

impl SipConfig {
    /// The digest realm: the domain when one is set, otherwise a fixed name, so HA1
    /// values stay valid whatever address the phones use to reach the server.
    pub fn realm(&self) -> &str {
        self.domain.as_deref().unwrap_or("switchboard")
    }
}

/// One `[sip] listen` entry: `udp:0.0.0.0:5060`, `tcp:[::]:5060`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    pub transport: Transport,
    pub addr: SocketAddr,
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.transport.as_str(), self.addr)
    }
}

impl Serialize for Listen {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The transports a listener can use. TLS and WebSocket slot in here later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// Digest algorithms of RFC 7616 / RFC 8760 that switchboard can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DigestAlgorithm {
    Md5,
    Sha256,
}

impl DigestAlgorithm {
    /// The token as it appears in the `algorithm=` parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            DigestAlgorithm::Md5 => "MD5",
            DigestAlgorithm::Sha256 => "SHA-256",
        }
    }

    /// Length in bytes of this algorithm's hash, which is also the length of an HA1.
    pub fn hash_len(self) -> usize {
        match self {
            DigestAlgorithm::Md5 => 16,
            DigestAlgorithm::Sha256 => 32,
        }
    }

    /// Algorithm tokens are case-insensitive (RFC 7616 §3.3 compares them as tokens).
    fn parse(name: &str) -> Option<DigestAlgorithm> {
        [DigestAlgorithm::Md5, DigestAlgorithm::Sha256]
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(name))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct MediaConfig {
    pub rtp_ports: PortRange,
    /// The address written into SDP when the host is behind NAT; `None` uses the
    /// address of the interface the call arrived on.
    pub public_address: Option<IpAddr>,
    /// A bridged call ends when a leg that should be sending has sent no RTP or RTCP
    /// for this long; `None` (`timeout_secs = 0`) never ends calls for silence.
    pub timeout: Option<Duration>,
    /// The codecs offered and accepted, in preference order.
    pub codecs: Vec<CodecKind>,
    /// Prompts: `<sounds_dir>/<language>/<name>.wav`, Asterisk's layout.
    pub sounds_dir: PathBuf,
    pub language: String,
    /// Music on hold: one folder of looped WAV files per class (`default`, ...).
    pub moh_dir: PathBuf,
}

/// An inclusive port range that starts even, so RTP gets even ports and RTCP the next
/// odd one (RFC 3550 §11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Relative paths are taken from the config file's directory.
    pub dir: PathBuf,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            dir: PathBuf::from("./data"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DialplanConfig {
    /// Relative paths are taken from the config file's directory.
    pub dir: PathBuf,
}

impl Default for DialplanConfig {
    fn default() -> Self {
        DialplanConfig {
            dir: PathBuf::from("./dialplans"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Extension {
    pub display_name: Option<String>,
    /// `None` until [`Config::resolve_secrets`] has filled in a generated password.
    pub credential: Option<Credential>,
    /// The effective list: the extension's own override, else `[sip] auth_algorithms`,
    /// narrowed to the one algorithm an `ha1` was computed with.
    pub auth_algorithms: Vec<DigestAlgorithm>,
    /// The extension's own codec list, replacing `[media] codecs` on its calls.
    pub codecs: Option<Vec<CodecKind>>,
}

#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Password(String),
    /// H(username:realm:password) precomputed with one algorithm (RFC 7616 §3.4.2).
    Ha1 {
        algorithm: DigestAlgorithm,
        hash: Vec<u8>,
    },
}

/// Keeps secrets out of logs and panic messages.
impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Password(_) => f.write_str("Password(<redacted>)"),
            Credential::Ha1 { algorithm, .. } => {
                write!(f, "Ha1({}, <redacted>)", algorithm.as_str())
            }
        }
    }
}

/// Limits of the scanner and brute-force defence (issue 3). A source that exceeds them
/// is banned and its packets are dropped unanswered.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// Failed digest responses (not first challenges) tolerated per source per window.
    pub max_auth_failures: u32,
    pub failure_window_secs: u64,
    /// Requests per second per source before a ban; 0 turns the limit off.
    pub max_requests_per_sec: u32,
    pub ban_secs: u64,
    /// Drop requests whose User-Agent contains one of `scanner_user_agents`
    /// (case-insensitive), without an answer.
    pub drop_scanner_user_agents: bool,
    pub scanner_user_agents: Vec<String>,
    /// Bans held at once; when full, the ban closest to its end makes room, so a flood
    /// of forged sources costs bounded memory.
    pub max_bans: u32,
    /// Addresses and networks never banned (they are still authenticated as usual).
    pub trusted: Vec<IpNetwork>,
}

/// An address (`192.0.2.7`) or a network (`10.0.0.0/8`, `2001:db8::/32`) in
/// `security.trusted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct IpNetwork {
    addr: IpAddr,
    prefix: u8,
}

impl IpNetwork {
    /// Whether `ip` is in this network; an IPv4-mapped IPv6 address counts as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (net, ip, width) = match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => (u32::from(net).into(), u32::from(ip).into(), 32),
            (IpAddr::V6(net), IpAddr::V6(ip)) => (u128::from(net), u128::from(ip), 128),
            _ => return false,
        };
        // Equal in the top `prefix` bits; shifting all bits out (a /0) leaves 0 == 0.
        let host_bits = width - u32::from(self.prefix);
        net.checked_shr(host_bits).unwrap_or(0) == ip.checked_shr(host_bits).unwrap_or(0)
    }
}

impl TryFrom<String> for IpNetwork {
    type Error = String;

    fn try_from(text: String) -> Result<IpNetwork, String> {
        let wrong = || format!("{text:?} is not an address or address/prefix");
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text.as_str(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| wrong())?;
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse().ok().filter(|p| *p <= max).ok_or_else(wrong)?,
            None => max,
        };
        Ok(IpNetwork { addr, prefix })
    }
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            max_auth_failures: 5,
            failure_window_secs: 300,
            max_requests_per_sec: 100,
            ban_secs: 3600,
            drop_scanner_user_agents: true,
            scanner_user_agents: [
                "friendly-scanner",
                "sipvicious",
                "sipcli",
                "sip-scan",
                "iWar",
                "sundayddr",
                "SIVuS",
                "VaxSIPUserAgent",
                "pplsip",
            ]
            .map(String::from)
            .to_vec(),
            max_bans: 10_000,
            trusted: Vec::new(),
        }
    }
}

/// Registration limits and keep-alive pings (issue 3).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrarConfig {
    /// Expiry when neither the Contact nor the REGISTER asks for one.
    pub default_expires: u32,
    /// Shorter non-zero expiries get 423 Interval Too Brief with this Min-Expires.
    pub min_expires: u32,
    /// Longer expiries are shortened to this.
    pub max_expires: u32,
    /// Seconds between OPTIONS pings to UDP contacts; 0 turns qualify off.
    pub qualify_interval_secs: u64,
    /// How long a digest nonce is accepted before a `stale=true` challenge.
    pub nonce_lifetime_secs: u64,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            default_expires: 3600,
            min_expires: 60,
            max_expires: 7200,
            qualify_interval_secs: 30,
            nonce_lifetime_secs: 300,
        }
    }
}

/// A config problem: which file, which key, what is wrong.
#[derive(Debug)]
pub struct ConfigError {
    /// The config file (or "embedded default config", or the secrets file).
    pub file: String,
    /// Dotted key path such as `media.rtp_ports` or `sip.listen[1]`.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "{}: {}: {}", self.file, key, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// What [`Config::resolve_secrets`] did, so the server can tell the admin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedSecrets {
    pub file: PathBuf,
    /// Extensions that got a new password in this call.
    pub generated: Vec<String>,
    /// Extensions that use a password generated on an earlier start.
    pub reused: Vec<String>,
}

impl Config {
    /// Loads `path`, or the embedded default when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            None => Config::parse(EMBEDDED_DEFAULT, Origin::Embedded),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
                    file: path.display().to_string(),
                    key: None,
                    message: format!("cannot read: {e}"),
                })?;
                Config::parse(&text, Origin::File(path.to_path_buf()))
            }
        }
    }

    /// Parses and validates config text. Relative directories are resolved against the
    /// directory of a config file (the working directory for the embedded default).
    pub fn parse(text: &str, origin: Origin) -> Result<Config, ConfigError> {
        let file = origin.to_string();
        let raw: ConfigFile =
            toml::from_str(text).map_err(|e| describe_toml_error(&file, text, &e))?;
        let base = match &origin {
            Origin::File(path) => path.parent().map(Path::to_path_buf),
            Origin::Embedded => None,
        };
        validate(raw, origin, base.as_deref()).map_err(|e| ConfigError {
            file,
            key: Some(e.key),
            message: e.message,
        })
    }

    pub fn secrets_path(&self) -> PathBuf {
        self.storage.dir.join(SECRETS_FILE)
    }

    /// Gives every extension without a password or HA1 a random password: the one stored
    /// in `<storage.dir>/secrets.toml` by an earlier start, or a new one, which is then
    /// written there (mode 0600). The server calls this once at start-up; `check` does not,
    /// so validating a config never writes files.
    pub fn resolve_secrets(&mut self) -> Result<ResolvedSecrets, ConfigError> {
        let path = self.secrets_path();
        let file_error = |message: String| ConfigError {
            file: path.display().to_string(),
            key: None,
            message,
        };
        let mut stored = read_secrets(&path).map_err(file_error)?;
        let mut report = ResolvedSecrets {
            file: path.clone(),
            generated: Vec::new(),
            reused: Vec::new(),
        };
        for (name, ext) in &mut self.extensions {
            if ext.credential.is_some() {
                continue;
            }
            let password = match stored.extensions.get(name) {
                Some(entry) if !entry.password.is_empty() => {
                    report.reused.push(name.clone());
                    entry.password.clone()
                }
                _ => {
                    let password = generate_password();
                    stored.extensions.insert(
                        name.clone(),
                        StoredSecret {
                            password: password.clone(),
                        },
                    );
                    report.generated.push(name.clone());
                    password
                }
            };
            ext.credential = Some(Credential::Password(password));
        }
        if !report.generated.is_empty() {
            write_secrets(&path, &stored).map_err(file_error)?;
        }
        Ok(report)
    }
}

/// The secrets file as stored on disk.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SecretsFile {
    #[serde(default)]
    pub extensions: BTreeMap<String, StoredSecret>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct StoredSecret {
    pub password: String,
}

/// Serde knows the key path of a type error or unknown key but toml keeps it private;
/// find it again from the error's position, so these errors name their key like the
/// validation errors do. Syntax errors keep toml's own message with its source excerpt.
fn describe_toml_error(file: &str, text: &str, error: &toml::de::Error) -> ConfigError {
    let located = error.span().and_then(|span| {
        let document = toml::de::DeTable::parse(text).ok()?;
        let key = key_at(document.get_ref(), span.start)?;
        let line = text.get(..span.start)?.matches('\n').count() + 1;
        Some((key, line))
    });
    match located {
        Some((key, line)) => ConfigError {
            file: file.to_string(),
            key: Some(key),
            message: format!("{} (line {line})", error.message()),
        },
        None => ConfigError {
            file: file.to_string(),
            key: None,
            message: error.to_string().trim_end().to_string(),
        },
    }
}

/// The dotted path (`sip.listen[1]`) of the innermost key or value that covers `offset`.
fn key_at(table: &toml::de::DeTable<'_>, offset: usize) -> Option<String> {
    fn covers(span: std::ops::Range<usize>, offset: usize) -> bool {
        span.contains(&offset)
    }
    fn inside(value: &toml::Spanned<toml::de::DeValue<'_>>, offset: usize) -> Option<String> {
        match value.get_ref() {
            toml::de::DeValue::Table(table) => key_at(table, offset).map(|k| format!(".{k}")),
            toml::de::DeValue::Array(items) => {
                items.into_iter().enumerate().find_map(|(i, item)| {
                    let deeper = inside(item, offset);
                    if deeper.is_some() || covers(item.span(), offset) {
                        Some(format!("[{i}]{}", deeper.unwrap_or_default()))
                    } else {
                        None
                    }
                })
            }
            _ => None,
        }
    }
    table.iter().find_map(|(key, value)| {
        let name = toml_key(key.get_ref());
        if let Some(rest) = inside(value, offset) {
            return Some(format!("{name}{rest}"));
        }
        (covers(key.span(), offset) || covers(value.span(), offset)).then_some(name)
    })
}

/// A key as written in TOML: bare when it can be, quoted otherwise.
fn toml_key(name: &str) -> String {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
    {
        name.to_string()
    } else {
        format!("{name:?}")
    }
}

/// Reads a secrets file; a missing file is an empty one.
pub fn read_secrets(path: &Path) -> Result<SecretsFile, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).map_err(|e| e.to_string().trim_end().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SecretsFile::default()),
        Err(e) => Err(format!("cannot read: {e}")),
    }
}

/// Writes through a temporary file and a rename, so a crash never leaves half a file,
/// and with mode 0600 from the first byte.
fn write_secrets(path: &Path, secrets: &SecretsFile) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create directory {}: {e}", dir.display()))?;
    let body = toml::to_string(secrets).map_err(|e| format!("cannot encode: {e}"))?;
    let text = format!(
        "# Passwords switchboard generated for extensions that have none in the config.\n\
         # Keep this file private. To choose a password, set it in the config instead.\n\n{body}"
    );
    let tmp = path.with_extension("toml.tmp");
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        // `mode` only applies to a new file; a leftover temp file may have another.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| format!("cannot write: {e}"))
}

/// 20 characters from a 31-symbol alphabet without look-alikes (0/O, 1/l/I): about 99
/// bits, and still typeable on a phone's keypad menu.
fn generate_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    // The largest multiple of the alphabet size below 256; bytes above it are redrawn so
    // every symbol is equally likely.
    const LIMIT: u8 = (256 / ALPHABET.len() * ALPHABET.len()) as u8;
    let mut rng = rand::rng();
    let mut out = String::with_capacity(20);
    while out.len() < 20 {
        let mut byte = [0u8; 1];
        rng.fill_bytes(&mut byte);
        if byte[0] < LIMIT {
            out.push(char::from(ALPHABET[usize::from(byte[0]) % ALPHABET.len()]));
        }
    }
    out
}

// ---- the file as serde reads it ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    sip: SipFile,
    #[serde(default)]
    media: MediaFile,
    #[serde(default)]
    admin: AdminFile,
    #[serde(default)]
    storage: StorageConfig,
    #[serde(default)]
    dialplan: DialplanConfig,
    #[serde(default)]
    extensions: BTreeMap<String, ExtensionFile>,
    #[serde(default)]
    security: SecurityConfig,
    #[serde(default)]
    registrar: RegistrarConfig,
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct SipFile {
    listen: Vec<String>,
    t1_ms: u64,
    t2_ms: u64,
    t4_ms: u64,
    auth_algorithms: Vec<String>,
    domain: Option<String>,
    user_agent: String,
    session_expires_secs: u32,
    min_se_secs: u32,
}

impl Default for SipFile {
    fn default() -> Self {
        SipFile {
            listen: vec!["udp:0.0.0.0:5060".into(), "tcp:0.0.0.0:5060".into()],
            t1_ms: 500,
            t2_ms: 4000,
            t4_ms: 5000,
            // MD5 only: phones that meet a SHA-256 challenge may give up (README "Phones").
            auth_algorithms: vec!["MD5".into()],
            domain: None,
            user_agent: concat!("switchboard/", env!("CARGO_PKG_VERSION")).into(),
            session_expires_secs: 1800,
            min_se_secs: crate::sip::dialog::MIN_SE_FLOOR,
        }
    }
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct MediaFile {
    rtp_ports: String,
    public_address: Option<String>,
    timeout_secs: u64,
    codecs: Vec<String>,
    sounds_dir: PathBuf,
    language: String,
    moh_dir: PathBuf,
}

impl Default for MediaFile {
    fn default() -> Self {
        MediaFile {
            rtp_ports: "20000-29999".into(),
            public_address: None,
            timeout_secs: 60,
            codecs: ["PCMU", "PCMA", "G722", "opus"].map(String::from).to_vec(),
            sounds_dir: PathBuf::from("./sounds"),
            language: "en".into(),
            moh_dir: PathBuf::from("./sounds/moh"),
        }
    }
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct AdminFile {
    listen: String,
}

impl Default for AdminFile {
    fn default() -> Self {
        AdminFile {
            listen: "127.0.0.1:5080".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExtensionFile {
    password: Option<String>,
    ha1: Option<String>,
    display_name: Option<String>,
    auth_algorithms: Option<Vec<String>>,
    codecs: Option<Vec<String>>,
}

// ---- validation ----

/// A bad value and the key it sits under.
#[derive(Debug)]
struct KeyError {
    key: String,
    message: String,
}

fn bad(key: impl Into<String>, message: impl Into<String>) -> KeyError {
    KeyError {
        key: key.into(),
        message: message.into(),
    }
}

fn validate(raw: ConfigFile, origin: Origin, base: Option<&Path>) -> Result<Config, KeyError> {
    let sip = validate_sip(raw.sip)?;
    let extensions = raw
        .extensions
        .into_iter()
        .map(|(name, ext)| {
            let ext = validate_extension(&name, ext, &sip.auth_algorithms)?;
            Ok((name, ext))
        })
        .collect::<Result<_, KeyError>>()?;
    Ok(Config {
        origin,
        media: validate_media(raw.media, base)?,
        admin: AdminConfig {
            listen: raw.admin.listen.parse().map_err(|_| {
                bad(
                    "admin.listen",
                    format!("{:?} is not an address:port", raw.admin.listen),
                )
            })?,
        },
        storage: StorageConfig {
            dir: resolve_dir("storage.dir", raw.storage.dir, base)?,
        },
        dialplan: DialplanConfig {
            dir: resolve_dir("dialplan.dir", raw.dialplan.dir, base)?,
        },
        security: validate_security(raw.security)?,
        registrar: validate_registrar(raw.registrar)?,
        sip,
        extensions,
    })
}

fn validate_sip(raw: SipFile) -> Result<SipConfig, KeyError> {
    if raw.listen.is_empty() {
        return Err(bad("sip.listen", "at least one listener is needed"));
    }
    let mut listen: Vec<Listen> = Vec::with_capacity(raw.listen.len());
    for (i, spec) in raw.listen.iter().enumerate() {
        let key = format!("sip.listen[{i}]");
        let l = parse_listen(spec).map_err(|m| bad(&key, m))?;
        if listen.contains(&l) {
            return Err(bad(key, format!("{spec:?} is listed twice")));
        }
        listen.push(l);
    }
    for (key, ms) in [
        ("sip.t1_ms", raw.t1_ms),
        ("sip.t2_ms", raw.t2_ms),
        ("sip.t4_ms", raw.t4_ms),
    ] {
        if ms == 0 {
            return Err(bad(key, "must be greater than 0"));
        }
    }
    if raw.t2_ms < raw.t1_ms {
        return Err(bad(
            "sip.t2_ms",
            format!(
                "{} must not be less than sip.t1_ms ({})",
                raw.t2_ms, raw.t1_ms
            ),
        ));
    }
    let domain = match raw.domain {
        Some(d) => {
            let text = SipStr::from(d.as_str());
            Host::parse(&text, &text).map_err(|_| {
                bad(
                    "sip.domain",
                    format!("{d:?} is not a host name or IP address"),
                )
            })?;
            Some(d)
        }
        None => None,
    };
    if raw.user_agent.is_empty() || raw.user_agent.chars().any(char::is_control) {
        return Err(bad("sip.user_agent", "must be non-empty text on one line"));
    }
    if raw.min_se_secs == 0 {
        return Err(bad("sip.min_se_secs", "must be greater than 0"));
    }
    if raw.session_expires_secs < raw.min_se_secs {
        return Err(bad(
            "sip.session_expires_secs",
            format!("must be at least sip.min_se_secs ({})", raw.min_se_secs),
        ));
    }
    if raw.session_expires_secs > MAX_TIMER_SECS {
        return Err(bad(
            "sip.session_expires_secs",
            format!("must be at most {MAX_TIMER_SECS} (a day)"),
        ));
    }
    Ok(SipConfig {
        listen,
        t1: Duration::from_millis(raw.t1_ms),
        t2: Duration::from_millis(raw.t2_ms),
        t4: Duration::from_millis(raw.t4_ms),
        auth_algorithms: parse_algorithms("sip.auth_algorithms", &raw.auth_algorithms)?,
        domain,
        user_agent: raw.user_agent,
        session_expires_secs: raw.session_expires_secs,
        min_se_secs: raw.min_se_secs,
    })
}

/// The longest session interval and media timeout: longer ones are surely typos, and
/// deadlines this far ahead are what `Instant` arithmetic can always represent.
const MAX_TIMER_SECS: u32 = 86_400;

/// `proto:addr:port`, IPv6 in brackets: `udp:[::]:5060`.
fn parse_listen(spec: &str) -> Result<Listen, String> {
    let (proto, addr) = spec.split_once(':').ok_or_else(|| {
        format!("{spec:?} is not transport:address:port (e.g. \"udp:0.0.0.0:5060\")")
    })?;
    let transport = match proto.to_ascii_lowercase().as_str() {
        "udp" => Transport::Udp,
        "tcp" => Transport::Tcp,
        "tls" | "ws" | "wss" => {
            return Err(format!(
                "transport {proto:?} is not supported yet (use udp or tcp)"
            ));
        }
        _ => return Err(format!("unknown transport {proto:?} (use udp or tcp)")),
    };
    let addr = addr.parse::<SocketAddr>().map_err(|_| {
        format!(
            "{addr:?} is not address:port (an IPv6 address goes in brackets: \"{proto}:[::]:5060\")"
        )
    })?;
    Ok(Listen { transport, addr })
}

fn parse_algorithms(key: &str, names: &[String]) -> Result<Vec<DigestAlgorithm>, KeyError> {
    if names.is_empty() {
        return Err(bad(
            key,
            "at least one algorithm is needed (\"SHA-256\", \"MD5\")",
        ));
    }
    let mut out = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let alg = DigestAlgorithm::parse(name).ok_or_else(|| {
            bad(
                format!("{key}[{i}]"),
                format!("unknown algorithm {name:?} (use \"SHA-256\" or \"MD5\")"),
            )
        })?;
        if out.contains(&alg) {
            return Err(bad(
                format!("{key}[{i}]"),
                format!("{name:?} is listed twice"),
            ));
        }
        out.push(alg);
    }
    Ok(out)
}

fn validate_media(raw: MediaFile, base: Option<&Path>) -> Result<MediaConfig, KeyError> {
    const KEY: &str = "media.rtp_ports";
    let (start, end) = raw
        .rtp_ports
        .split_once('-')
        .and_then(|(s, e)| Some((s.trim().parse::<u16>().ok()?, e.trim().parse::<u16>().ok()?)))
        .ok_or_else(|| {
            bad(
                KEY,
                format!("{:?} is not a range like \"20000-29999\"", raw.rtp_ports),
            )
        })?;
    if start % 2 != 0 {
        return Err(bad(
            KEY,
            format!("start {start} must be even (RTP uses even ports, RTCP the next)"),
        ));
    }
    if start == 0 || start >= end {
        return Err(bad(
            KEY,
            format!("start {start} must be above 0 and below end {end}"),
        ));
    }
    let public_address = match raw.public_address {
        Some(text) => {
            let ip = text.parse::<IpAddr>().map_err(|_| {
                bad(
                    "media.public_address",
                    format!("{text:?} is not an IP address"),
                )
            })?;
            if ip.is_unspecified() {
                return Err(bad(
                    "media.public_address",
                    "must be a real address, not 0.0.0.0 or ::",
                ));
            }
            Some(ip)
        }
        None => None,
    };
    if raw.timeout_secs > u64::from(MAX_TIMER_SECS) {
        return Err(bad(
            "media.timeout_secs",
            format!("must be at most {MAX_TIMER_SECS} (a day); 0 turns the timeout off"),
        ));
    }
    Ok(MediaConfig {
        rtp_ports: PortRange { start, end },
        public_address,
        timeout: (raw.timeout_secs > 0).then(|| Duration::from_secs(raw.timeout_secs)),
        codecs: parse_codecs("media.codecs", &raw.codecs)?,
        sounds_dir: resolve_dir("media.sounds_dir", raw.sounds_dir, base)?,
        language: valid_language(&raw.language)?,
        moh_dir: resolve_dir("media.moh_dir", raw.moh_dir, base)?,
    })
}

/// A language folder name such as `en` or `en_GB`: one path component.
fn valid_language(language: &str) -> Result<String, KeyError> {
    let ok = !language.is_empty()
        && language
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    if ok {
        Ok(language.to_string())
    } else {
        Err(bad(
            "media.language",
            format!("{language:?} is not a language folder name such as \"en\""),
        ))
    }
}

/// A codec list: known names (any case), each once, at least one.
fn parse_codecs(key: &str, names: &[String]) -> Result<Vec<CodecKind>, KeyError> {
    if names.is_empty() {
        return Err(bad(key, "must name at least one codec"));
    }
    let mut kinds: Vec<CodecKind> = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let sdp_name = match name.to_ascii_lowercase().as_str() {
            "pcmu" => Some(("PCMU", 8000, 1)),
            "pcma" => Some(("PCMA", 8000, 1)),
            "g722" => Some(("G722", 8000, 1)),
            "opus" => Some(("opus", 48000, 2)),
            _ => None,
        };
        let kind = sdp_name.and_then(|(n, rate, channels)| CodecKind::from_sdp(n, rate, channels));
        let kind = kind.ok_or_else(|| {
            bad(
                format!("{key}[{i}]"),
                format!("unknown codec {name:?} (known: PCMU, PCMA, G722, opus)"),
            )
        })?;
        if kinds.contains(&kind) {
            return Err(bad(
                format!("{key}[{i}]"),
                format!("{name:?} is listed twice"),
            ));
        }
        kinds.push(kind);
    }
    Ok(kinds)
}

fn resolve_dir(key: &str, dir: PathBuf, base: Option<&Path>) -> Result<PathBuf, KeyError> {
    if dir.as_os_str().is_empty() {
        return Err(bad(key, "must not be empty"));
    }
    Ok(match base {
        Some(base) if dir.is_relative() => base.join(dir.strip_prefix(".").unwrap_or(&dir)),
        _ => dir,
    })
}

/// Extension names become the user part of an AOR; keep them to characters that need no
/// escaping in a SIP URI.
fn valid_extension_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+'))
}

fn validate_extension(
    name: &str,
    raw: ExtensionFile,
    global: &[DigestAlgorithm],
) -> Result<Extension, KeyError> {
    let key = format!("extensions.{}", toml_key(name));
    if !valid_extension_name(name) {
        return Err(bad(
            &key,
            "extension names may use only letters, digits and - _ . +",
        ));
    }
    let own_algorithms = match &raw.auth_algorithms {
        Some(names) => Some(parse_algorithms(&format!("{key}.auth_algorithms"), names)?),
        None => None,
    };
    let credential = match (raw.password, raw.ha1) {
        (Some(_), Some(_)) => return Err(bad(&key, "set either password or ha1, not both")),
        (Some(p), None) if p.is_empty() => {
            return Err(bad(
                format!("{key}.password"),
                "must not be empty (leave it out to get a generated one)",
            ));
        }
        (Some(p), None) => Some(Credential::Password(p)),
        (None, Some(hex_text)) => Some(parse_ha1(&format!("{key}.ha1"), &hex_text)?),
        (None, None) => None,
    };
    let auth_algorithms = match (&credential, own_algorithms) {
        // An HA1 verifies only responses computed with its own algorithm.
        (Some(Credential::Ha1 { algorithm, .. }), Some(list)) => {
            if let Some(other) = list.iter().find(|a| *a != algorithm) {
                return Err(bad(
                    format!("{key}.auth_algorithms"),
                    format!(
                        "{} needs a password: ha1 is an {} hash",
                        other.as_str(),
                        algorithm.as_str()
                    ),
                ));
            }
            list
        }
        (Some(Credential::Ha1 { algorithm, .. }), None) => vec![*algorithm],
        (_, Some(list)) => list,
        (_, None) => global.to_vec(),
    };
    if let Some(d) = &raw.display_name
        && (d.is_empty() || d.chars().any(char::is_control))
    {
        return Err(bad(
            format!("{key}.display_name"),
            "must be non-empty text on one line",
        ));
    }
    let codecs = match &raw.codecs {
        Some(names) => Some(parse_codecs(&format!("{key}.codecs"), names)?),
        None => None,
    };
    Ok(Extension {
        display_name: raw.display_name,
        credential,
        auth_algorithms,
        codecs,
    })
}

/// The algorithm is told by the length: 32 hex digits for MD5, 64 for SHA-256.
fn parse_ha1(key: &str, text: &str) -> Result<Credential, KeyError> {
    let hash = hex::decode(text).map_err(|_| bad(key, "must be hexadecimal"))?;
    let algorithm = [DigestAlgorithm::Md5, DigestAlgorithm::Sha256]
        .into_iter()
        .find(|a| a.hash_len() == hash.len())
        .ok_or_else(|| {
            bad(
                key,
                format!(
                    "has {} hex digits; MD5 needs 32, SHA-256 needs 64",
                    text.len()
                ),
            )
        })?;
    Ok(Credential::Ha1 { algorithm, hash })
}

fn validate_registrar(raw: RegistrarConfig) -> Result<RegistrarConfig, KeyError> {
    if raw.min_expires == 0 {
        return Err(bad("registrar.min_expires", "must be greater than 0"));
    }
    if raw.nonce_lifetime_secs == 0 {
        return Err(bad(
            "registrar.nonce_lifetime_secs",
            "must be greater than 0",
        ));
    }
    if raw.max_expires < raw.min_expires {
        return Err(bad(
            "registrar.max_expires",
            format!("must be at least min_expires ({})", raw.min_expires),
        ));
    }
    if !(raw.min_expires..=raw.max_expires).contains(&raw.default_expires) {
        return Err(bad(
            "registrar.default_expires",
            format!(
                "must lie between min_expires ({}) and max_expires ({})",
                raw.min_expires, raw.max_expires
            ),
        ));
    }
    Ok(raw)
}

fn validate_security(raw: SecurityConfig) -> Result<SecurityConfig, KeyError> {
    for (key, value) in [
        (
            "security.max_auth_failures",
            u64::from(raw.max_auth_failures),
        ),
        ("security.failure_window_secs", raw.failure_window_secs),
        ("security.ban_secs", raw.ban_secs),
        ("security.max_bans", u64::from(raw.max_bans)),
    ] {
        if value == 0 {
            return Err(bad(key, "must be greater than 0"));
        }
    }
    if let Some(i) = raw
        .scanner_user_agents
        .iter()
        .position(|ua| ua.trim().is_empty())
    {
        return Err(bad(
            format!("security.scanner_user_agents[{i}]"),
            "must not be empty",
        ));
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(
            text,
            Origin::File(PathBuf::from("/etc/switchboard/test.toml")),
        )
    }

    fn error_of(text: &str) -> String {
        match parse(text) {
            Ok(_) => panic!("config was accepted:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn embedded_default_is_valid_and_ships_no_passwords() {
        let config = Config::load(None).unwrap();
        assert_eq!(config.origin, Origin::Embedded);
        assert!(!config.extensions.is_empty());
        assert!(config.extensions.values().all(|e| e.credential.is_none()));
        assert_eq!(config.admin.listen, "127.0.0.1:5080".parse().unwrap());
    }

    /// The built-in defaults (for keys a user's file leaves out) and the embedded default
    /// file must describe the same server.
    #[test]
    fn embedded_default_matches_builtin_defaults() {
        let mut embedded = Config::parse(EMBEDDED_DEFAULT, Origin::Embedded).unwrap();
        let builtin = Config::parse("", Origin::Embedded).unwrap();
        embedded.extensions.clear();
        assert_eq!(embedded, builtin);
    }

    #[test]
    fn issue_example_parses() {
        let config = parse(
            r#"
            [sip]
            listen = ["udp:0.0.0.0:5060", "tcp:[::]:5062"]
            t1_ms = 250
            domain = "pbx.example.com"
            [media]
            rtp_ports = "20000-29999"
            public_address = "203.0.113.7"
            [admin]
            listen = "127.0.0.1:5080"
            [storage]
            dir = "./data"
            [dialplan]
            dir = "/srv/dialplans"
            [extensions.1001]
            password = "secret"
            display_name = "Alice"
            "#,
        )
        .unwrap();
        assert_eq!(
            config.sip.listen,
            vec![
                Listen {
                    transport: Transport::Udp,
                    addr: "0.0.0.0:5060".parse().unwrap()
                },
                Listen {
                    transport: Transport::Tcp,
                    addr: "[::]:5062".parse().unwrap()
                },
            ]
        );
        assert_eq!(config.sip.listen[1].to_string(), "tcp:[::]:5062");
        assert_eq!(config.sip.t1, Duration::from_millis(250));
        assert_eq!(config.sip.realm(), "pbx.example.com");
        assert_eq!(
            config.media.rtp_ports,
            PortRange {
                start: 20000,
                end: 29999
            }
        );
        assert_eq!(
            config.media.public_address,
            Some("203.0.113.7".parse().unwrap())
        );
        assert_eq!(config.storage.dir, PathBuf::from("/etc/switchboard/data"));
        assert_eq!(config.dialplan.dir, PathBuf::from("/srv/dialplans"));
        let ext = &config.extensions["1001"];
        assert_eq!(ext.credential, Some(Credential::Password("secret".into())));
        assert_eq!(ext.display_name.as_deref(), Some("Alice"));
        // MD5 only by default: baresip and others give up on a SHA-256 challenge.
        assert_eq!(ext.auth_algorithms, vec![DigestAlgorithm::Md5]);
    }

    #[test]
    fn trusted_networks_match_their_addresses() {
        let config = parse(
            "[security]\nmax_bans = 7\ntrusted = [\"10.1.0.0/16\", \"192.0.2.7\", \"2001:db8::/32\", \"0.0.0.0/0\"]\n",
        )
        .unwrap();
        assert_eq!(config.security.max_bans, 7);
        let [net, host, v6, all] = config.security.trusted[..] else {
            panic!("{:?}", config.security.trusted);
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(net.contains(ip("10.1.255.3")));
        assert!(net.contains(ip("::ffff:10.1.0.1")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(host.contains(ip("192.0.2.7")));
        assert!(!host.contains(ip("192.0.2.6")));
        assert!(v6.contains(ip("2001:db8:1::5")));
        assert!(!v6.contains(ip("2001:db9::5")));
        assert!(!v6.contains(ip("10.1.0.1")));
        assert!(all.contains(ip("203.0.113.9")));
        assert!(!all.contains(ip("::1")));
        assert_eq!(SecurityConfig::default().max_bans, 10_000);
        assert!(SecurityConfig::default().trusted.is_empty());
    }

    #[test]
    fn codec_lists_are_read_in_order_with_per_extension_overrides() {
        let config = parse(
            "[media]\ncodecs = [\"opus\", \"pcmu\"]\n[extensions.1001]\npassword = \"x\"\n\
             codecs = [\"PCMA\"]\n[extensions.1002]\npassword = \"y\"\n",
        )
        .unwrap();
        assert_eq!(config.media.codecs, [CodecKind::Opus, CodecKind::Pcmu]);
        assert_eq!(
            config.extensions["1001"].codecs,
            Some(vec![CodecKind::Pcma])
        );
        assert_eq!(config.extensions["1002"].codecs, None);
        assert_eq!(
            config.media.sounds_dir,
            PathBuf::from("/etc/switchboard/sounds")
        );
    }

    #[test]
    fn bad_values_name_their_key_and_file() {
        let cases = [
            (
                "[media]\nrtp_ports = \"30001-30100\"",
                "media.rtp_ports: start 30001 must be even",
            ),
            (
                "[media]\nrtp_ports = \"30000-30000\"",
                "media.rtp_ports: start 30000 must be above 0 and below end 30000",
            ),
            (
                "[media]\nrtp_ports = \"30000\"",
                "media.rtp_ports: \"30000\" is not a range",
            ),
            (
                "[media]\nrtp_ports = \"30000-70000\"",
                "media.rtp_ports: \"30000-70000\" is not a range",
            ),
            (
                "[media]\npublic_address = \"nat.example\"",
                "media.public_address: \"nat.example\" is not an IP address",
            ),
            (
                "[sip]\nlisten = [\"udp:0.0.0.0:5060\", \"sctp:0.0.0.0:5060\"]",
                "sip.listen[1]: unknown transport \"sctp\"",
            ),
            (
                "[sip]\nlisten = [\"tls:0.0.0.0:5061\"]",
                "sip.listen[0]: transport \"tls\" is not supported yet",
            ),
            (
                "[sip]\nlisten = [\"udp:::5060\"]",
                "sip.listen[0]: \"::5060\" is not address:port (an IPv6 address goes in brackets",
            ),
            (
                "[sip]\nlisten = [\"udp:0.0.0.0:5060\", \"UDP:0.0.0.0:5060\"]",
                "sip.listen[1]: \"UDP:0.0.0.0:5060\" is listed twice",
            ),
            ("[sip]\nlisten = []", "sip.listen: at least one listener"),
            ("[sip]\nt1_ms = 0", "sip.t1_ms: must be greater than 0"),
            (
                "[sip]\nmin_se_secs = 0",
                "sip.min_se_secs: must be greater than 0",
            ),
            (
                "[sip]\nmin_se_secs = 600\nsession_expires_secs = 300",
                "sip.session_expires_secs: must be at least sip.min_se_secs (600)",
            ),
            (
                "[sip]\nsession_expires_secs = 100000",
                "sip.session_expires_secs: must be at most 86400",
            ),
            ("[sip]\nmin_se_secs = -1", "sip.min_se_secs: invalid value"),
            (
                "[media]\ntimeout_secs = 100000",
                "media.timeout_secs: must be at most 86400",
            ),
            (
                "[media]\ntimeout_secs = \"60\"",
                "media.timeout_secs: invalid type",
            ),
            (
                "[media]\ncodecs = [\"PCMU\", \"G729\"]",
                "media.codecs[1]: unknown codec \"G729\" (known: PCMU, PCMA, G722, opus)",
            ),
            (
                "[media]\ncodecs = [\"pcma\", \"PCMA\"]",
                "media.codecs[1]: \"PCMA\" is listed twice",
            ),
            (
                "[media]\ncodecs = []",
                "media.codecs: must name at least one codec",
            ),
            (
                "[extensions.1000]\ncodecs = [\"speex\"]",
                "extensions.1000.codecs[0]: unknown codec \"speex\"",
            ),
            (
                "[media]\nlanguage = \"../en\"",
                "media.language: \"../en\" is not a language folder name",
            ),
            (
                "[sip]\nt1_ms = 5000",
                "sip.t2_ms: 4000 must not be less than sip.t1_ms (5000)",
            ),
            (
                "[sip]\nauth_algorithms = [\"MD5\", \"SHA-1\"]",
                "sip.auth_algorithms[1]: unknown algorithm \"SHA-1\"",
            ),
            (
                "[sip]\nauth_algorithms = []",
                "sip.auth_algorithms: at least one algorithm",
            ),
            (
                "[sip]\ndomain = \"bad domain\"",
                "sip.domain: \"bad domain\" is not a host name",
            ),
            (
                "[sip]\nuser_agent = \"\"",
                "sip.user_agent: must be non-empty",
            ),
            (
                "[admin]\nlisten = \"localhost\"",
                "admin.listen: \"localhost\" is not an address:port",
            ),
            ("[storage]\ndir = \"\"", "storage.dir: must not be empty"),
            (
                "[security]\nban_secs = 0",
                "security.ban_secs: must be greater than 0",
            ),
            (
                "[registrar]\ndefault_expires = 30",
                "registrar.default_expires: must lie between min_expires (60) and max_expires (7200)",
            ),
            (
                "[registrar]\nmin_expires = 0",
                "registrar.min_expires: must be greater than 0",
            ),
            (
                "[registrar]\nmax_expires = 10",
                "registrar.max_expires: must be at least min_expires (60)",
            ),
            (
                "[security]\nscanner_user_agents = [\"x\", \" \"]",
                "security.scanner_user_agents[1]: must not be empty",
            ),
            (
                "[security]\nmax_bans = 0",
                "security.max_bans: must be greater than 0",
            ),
            (
                "[security]\ntrusted = [\"10.0.0.0/8\", \"10.0.0.0/33\"]",
                "security.trusted: \"10.0.0.0/33\" is not an address or address/prefix",
            ),
            (
                "[security]\ntrusted = [\"pbx.example.com\"]",
                "security.trusted: \"pbx.example.com\" is not an address or address/prefix",
            ),
            (
                "[extensions.1001]\npassword = \"a\"\nha1 = \"00\"",
                "extensions.1001: set either password or ha1, not both",
            ),
            (
                "[extensions.1001]\npassword = \"\"",
                "extensions.1001.password: must not be empty",
            ),
            (
                "[extensions.1001]\nha1 = \"xyz\"",
                "extensions.1001.ha1: must be hexadecimal",
            ),
            (
                "[extensions.1001]\nha1 = \"abcd\"",
                "extensions.1001.ha1: has 4 hex digits; MD5 needs 32",
            ),
            (
                "[extensions.\"10 01\"]\npassword = \"a\"",
                "extensions.\"10 01\": extension names may use only",
            ),
            (
                "[extensions.1001]\ndisplay_name = \"a\\nb\"",
                "extensions.1001.display_name: must be non-empty text on one line",
            ),
            (
                "[extensions.1001]\nha1 = \"00112233445566778899aabbccddeeff\"\nauth_algorithms = [\"SHA-256\", \"MD5\"]",
                "extensions.1001.auth_algorithms: SHA-256 needs a password: ha1 is an MD5 hash",
            ),
        ];
        for (text, expected) in cases {
            let message = error_of(text);
            assert!(
                message.starts_with(&format!("/etc/switchboard/test.toml: {expected}")),
                "for {text:?}\n got: {message}\nwant: {expected}"
            );
        }
    }

    #[test]
    fn call_timers_default_to_the_rfc_values_and_can_be_turned_down() {
        let config = parse("").unwrap();
        assert_eq!(config.media.timeout, Some(Duration::from_secs(60)));
        assert_eq!(
            (config.sip.session_expires_secs, config.sip.min_se_secs),
            (1800, 90)
        );
        let config =
            parse("[sip]\nsession_expires_secs = 10\nmin_se_secs = 5\n[media]\ntimeout_secs = 0")
                .unwrap();
        assert_eq!(config.media.timeout, None);
        assert_eq!(
            (config.sip.session_expires_secs, config.sip.min_se_secs),
            (10, 5)
        );
    }

    #[test]
    fn typos_and_wrong_types_are_rejected_with_their_location() {
        let cases = [
            (
                "[sip]\nlisten = [\"udp:0.0.0.0:5060\"]\nt1 = 500\n",
                "sip.t1: unknown field `t1`, expected one of",
            ),
            (
                "[media]\nrtp_port = \"20000-29999\"\n",
                "media.rtp_port: unknown field `rtp_port`",
            ),
            ("[secrity]\n", "secrity: unknown field `secrity`"),
            (
                "\n[sip]\nt1_ms = \"fast\"\n",
                "sip.t1_ms: invalid type: string \"fast\", expected u64 (line 3)",
            ),
            (
                "[sip]\nlisten = [\"udp:0.0.0.0:5060\", 5060]\n",
                "sip.listen[1]: invalid type: integer `5060`",
            ),
            (
                "[security]\nmax_auth_failures = -1\n",
                "security.max_auth_failures: invalid value: integer `-1`",
            ),
            (
                "[extensions.\"10.01\"]\npassword = 3\n",
                "extensions.\"10.01\".password: invalid type: integer `3`",
            ),
            (
                "[extensions]\n1000 = 5\n",
                "extensions.1000: invalid type: integer `5`",
            ),
        ];
        for (text, expected) in cases {
            let message = error_of(text);
            assert!(
                message.starts_with(&format!("/etc/switchboard/test.toml: {expected}")),
                "for {text:?}\n got: {message}\nwant: {expected}"
            );
        }
        // A syntax error has no key; toml's excerpt shows where it is.
        let message = error_of("[sip\n");
        assert!(message.contains("line 1"), "{message}");
    }

    #[test]
    fn ha1_sets_the_algorithm_it_was_computed_with() {
        let config = parse(&format!(
            "[extensions.1001]\nha1 = \"{}\"\n",
            "ab".repeat(32)
        ))
        .unwrap();
        let ext = &config.extensions["1001"];
        assert_eq!(ext.auth_algorithms, vec![DigestAlgorithm::Sha256]);
        assert_eq!(
            ext.credential,
            Some(Credential::Ha1 {
                algorithm: DigestAlgorithm::Sha256,
                hash: vec![0xab; 32]
            })
        );
    }

    #[test]
    fn per_extension_algorithms_override_the_global_list() {
        let config =
            parse("[extensions.1001]\npassword = \"p\"\nauth_algorithms = [\"md5\"]\n").unwrap();
        assert_eq!(
            config.extensions["1001"].auth_algorithms,
            vec![DigestAlgorithm::Md5]
        );
    }

    #[test]
    fn credentials_are_redacted_in_debug_output() {
        let config = parse("[extensions.1001]\npassword = \"hunter2\"\n").unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    fn config_in(dir: &Path, extensions: &str) -> Config {
        let path = dir.join("switchboard.toml");
        std::fs::write(&path, format!("[storage]\ndir = \"store\"\n{extensions}")).unwrap();
        Config::load(Some(&path)).unwrap()
    }

    fn password_of(config: &Config, ext: &str) -> String {
        match &config.extensions[ext].credential {
            Some(Credential::Password(p)) => p.clone(),
            other => panic!("extension {ext} has {other:?}"),
        }
    }

    #[test]
    fn secrets_are_generated_once_stored_privately_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let exts = "[extensions.1000]\n[extensions.1001]\npassword = \"chosen\"\n";
        let mut first = config_in(dir.path(), exts);
        let report = first.resolve_secrets().unwrap();
        let path = dir.path().join("store").join(SECRETS_FILE);
        assert_eq!(
            report,
            ResolvedSecrets {
                file: path.clone(),
                generated: vec!["1000".into()],
                reused: vec![]
            }
        );
        let generated = password_of(&first, "1000");
        assert_eq!(generated.len(), 20);
        assert_eq!(password_of(&first, "1001"), "chosen");

        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let stored = read_secrets(&path).unwrap();
        assert_eq!(stored.extensions.keys().collect::<Vec<_>>(), ["1000"]);
        assert_eq!(stored.extensions["1000"].password, generated);

        // A later start with one more extension keeps the first password.
        let mut second = config_in(dir.path(), &format!("{exts}[extensions.1002]\n"));
        let report = second.resolve_secrets().unwrap();
        assert_eq!(report.generated, vec!["1002".to_string()]);
        assert_eq!(report.reused, vec!["1000".to_string()]);
        assert_eq!(password_of(&second, "1000"), generated);
        assert_ne!(password_of(&second, "1002"), generated);
        assert_eq!(read_secrets(&path).unwrap().extensions.len(), 2);
    }

    #[test]
    fn nothing_is_written_when_every_extension_has_a_credential() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config_in(dir.path(), "[extensions.1001]\npassword = \"p\"\n");
        let report = config.resolve_secrets().unwrap();
        assert!(report.generated.is_empty() && report.reused.is_empty());
        assert!(!dir.path().join("store").exists());
    }

    #[test]
    fn a_corrupt_secrets_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config_in(dir.path(), "[extensions.1000]\n");
        std::fs::create_dir_all(dir.path().join("store")).unwrap();
        std::fs::write(config.secrets_path(), "extensions = 3").unwrap();
        let message = config.resolve_secrets().unwrap_err().to_string();
        assert!(
            message.starts_with(&config.secrets_path().display().to_string()),
            "{message}"
        );
    }

    #[test]
    fn generated_passwords_use_the_whole_alphabet_without_look_alikes() {
        let text: String = (0..50).map(|_| generate_password()).collect();
        assert!(
            text.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        assert!(!text.contains(['0', '1', 'i', 'l', 'o']));
        assert_eq!(
            text.chars()
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            31
        );
    }
}
