//! The registrar's admin API, behind `switchboard registrations`, `bans` and `unban`:
//!
//! - `GET /api/registrations` → `{"registrations": [{aor, contact, source, transport,
//!   expires_in, q, user_agent, reachable, rtt_ms}]}`
//! - `GET /api/bans` → `{"count", "max_bans", "evicted", "spared", "bans": [{address,
//!   reason, banned_at_unix, until_unix, remaining_secs}]}`: `count` bans in force,
//!   `evicted` bans dropped early to make room since start, `spared` packets that
//!   would have banned a protected address (trusted, registered, a recent caller)
//! - `DELETE /api/bans/{address}` → `{"unbanned": address}`, 404 if it was not banned.

use super::Registrar;
use crate::admin::ApiError;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{Value, json};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

/// Routes to merge into the admin router.
pub fn admin_routes(registrar: Arc<Registrar>) -> Router {
    Router::new()
        .route("/api/registrations", get(registrations))
        .route("/api/bans", get(bans))
        .route("/api/bans/{address}", delete(unban))
        .with_state(registrar)
}

async fn registrations(State(registrar): State<Arc<Registrar>>) -> Json<Value> {
    Json(json!({ "registrations": registrar.registrations(SystemTime::now()) }))
}

#[derive(Serialize)]
struct BanView {
    address: IpAddr,
    reason: String,
    banned_at_unix: u64,
    until_unix: u64,
    remaining_secs: u64,
}

async fn bans(State(registrar): State<Arc<Registrar>>) -> Json<Value> {
    let now = SystemTime::now();
    let now_unix = super::unix_secs(now);
    let bans: Vec<BanView> = registrar
        .security()
        .bans(now)
        .into_iter()
        .map(|(address, ban)| BanView {
            address,
            remaining_secs: ban.until_unix.saturating_sub(now_unix),
            reason: ban.reason,
            banned_at_unix: ban.banned_at_unix,
            until_unix: ban.until_unix,
        })
        .collect();
    let stats = registrar.security().stats();
    Json(json!({
        "count": bans.len(),
        "max_bans": stats.max_bans,
        "evicted": stats.evicted,
        "spared": stats.spared,
        "bans": bans,
    }))
}

async fn unban(
    State(registrar): State<Arc<Registrar>>,
    Path(address): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let ip: IpAddr = address.parse().map_err(|_| ApiError {
        status: StatusCode::BAD_REQUEST,
        message: format!("{address:?} is not an IP address"),
    })?;
    if registrar.security().unban(ip) {
        Ok(Json(json!({ "unbanned": ip })))
    } else {
        Err(ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("{ip} is not banned"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registrar::tests::{NOW, PHONE, at, login, open, udp};
    use crate::sip::auth::DigestAlgorithm;
    use axum::response::IntoResponse;
    use tempfile::TempDir;

    async fn body(resp: axum::response::Response) -> (StatusCode, Value) {
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn registrations_bans_and_unban() {
        let tmp = TempDir::new().unwrap();
        let registrar = Arc::new(open(&tmp, NOW));
        // Ban time is the real clock here, since the handlers read it.
        let now = SystemTime::now();
        let banned: IpAddr = "192.0.2.66".parse().unwrap();
        registrar
            .security()
            .admit(now, banned, Some("friendly-scanner"));

        let resp = login(
            &registrar,
            super::super::unix_secs(now),
            udp(PHONE),
            ("1001", "pw1001"),
            DigestAlgorithm::Sha256,
            ("adm", 1),
            &[
                "Contact: <sip:1001@10.0.0.5:5060>",
                "User-Agent: Yealink T46",
            ],
        );
        assert_eq!(resp.status, 200);
        let (_, json) = body(
            registrations(State(registrar.clone()))
                .await
                .into_response(),
        )
        .await;
        let list = json["registrations"].as_array().unwrap();
        assert_eq!(list.len(), 1);
        let expires_in = list[0]["expires_in"].as_u64().unwrap();
        assert!((1..=3600).contains(&expires_in), "{expires_in}");
        assert_eq!(
            list[0],
            json!({
                "aor": "1001",
                "contact": "sip:1001@10.0.0.5:5060",
                "source": PHONE,
                "transport": "UDP",
                "expires_in": expires_in,
                "q": 1.0,
                "user_agent": "Yealink T46",
                "reachable": null,
                "rtt_ms": null,
            })
        );

        let (_, json) = body(bans(State(registrar.clone())).await.into_response()).await;
        assert_eq!(json["count"], 1);
        assert_eq!(json["max_bans"], 10_000);
        assert_eq!(json["evicted"], 0);
        assert_eq!(json["spared"], 0);
        let list = json["bans"].as_array().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0]["address"], "192.0.2.66");
        assert_eq!(list[0]["reason"], "scanner User-Agent \"friendly-scanner\"");
        assert!(list[0]["remaining_secs"].as_u64().unwrap() > 0);

        let lift = |address: &str| {
            let registrar = registrar.clone();
            let address = address.to_owned();
            async move { body(unban(State(registrar), Path(address)).await.into_response()).await }
        };
        assert_eq!(
            lift("192.0.2.66").await,
            (StatusCode::OK, json!({ "unbanned": "192.0.2.66" }))
        );
        let (status, json) = lift("192.0.2.66").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(json["error"], "192.0.2.66 is not banned");
        let (status, _) = lift("not-an-ip").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            registrar.security().admit(at(NOW), banned, None),
            crate::registrar::Admission::Allow
        );
    }
}
