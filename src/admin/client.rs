//! The blocking HTTP client behind the admin subcommands (`switchboard status`, ...).

use serde_json::Value;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

pub struct AdminClient {
    addr: SocketAddr,
    agent: ureq::Agent,
}

#[derive(Debug)]
pub enum ClientError {
    /// Nothing answered at the address: the server is not running, or runs with another
    /// config.
    Unreachable { addr: SocketAddr, detail: String },
    /// The server answered with an error status; `message` is its `error` field when it
    /// sent one (a 404 from an older server says the endpoint is not available yet).
    Status { status: u16, message: String },
    /// The server answered something that is not the JSON the API promises.
    BadResponse(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Unreachable { addr, detail } => {
                write!(
                    f,
                    "cannot reach the switchboard admin API at http://{addr}: {detail}"
                )
            }
            ClientError::Status { status, message } => write!(f, "{message} (HTTP {status})"),
            ClientError::BadResponse(detail) => {
                write!(f, "unexpected answer from the admin API: {detail}")
            }
        }
    }
}

impl std::error::Error for ClientError {}

impl AdminClient {
    /// `listen` is the server's `[admin] listen`; a wildcard address is reached over
    /// loopback.
    pub fn new(listen: SocketAddr) -> AdminClient {
        let ip = match listen.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let config = ureq::Agent::config_builder()
            // Error statuses carry a JSON message worth showing; read them as answers.
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build();
        AdminClient {
            addr: SocketAddr::new(ip, listen.port()),
            agent: ureq::Agent::new_with_config(config),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.answer(self.agent.get(self.url(path)).call())
    }

    pub fn post(&self, path: &str) -> Result<Value, ClientError> {
        self.answer(self.agent.post(self.url(path)).send_empty())
    }

    pub fn delete(&self, path: &str) -> Result<Value, ClientError> {
        self.answer(self.agent.delete(self.url(path)).call())
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn answer(
        &self,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Value, ClientError> {
        let response = result.map_err(|e| match e {
            ureq::Error::Io(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::Timeout(_)
            | ureq::Error::HostNotFound => ClientError::Unreachable {
                addr: self.addr,
                detail: e.to_string(),
            },
            other => ClientError::BadResponse(other.to_string()),
        })?;
        let status = response.status();
        let text = response
            .into_body()
            .read_to_string()
            .map_err(|e| ClientError::BadResponse(e.to_string()))?;
        let json: Option<Value> = serde_json::from_str(&text).ok();
        if status.is_success() {
            return json.ok_or_else(|| ClientError::BadResponse(format!("not JSON: {text:.200}")));
        }
        let message = json
            .as_ref()
            .and_then(|j| j["error"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
        Err(ClientError::Status {
            status: status.as_u16(),
            message,
        })
    }
}
