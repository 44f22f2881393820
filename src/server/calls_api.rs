//! Admin endpoints for calls: `GET /api/calls` (live calls, from every shard) and
//! `GET /api/cdrs` (call detail records as JSON or CSV).

use super::core::ShardQuery;
use crate::admin::ApiError;
use crate::b2bua::CallSummary;
use crate::media::PortAllocator;
use crate::store::Store;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

#[derive(Clone)]
struct CallsState {
    shards: Arc<Vec<mpsc::UnboundedSender<ShardQuery>>>,
    store: Store,
    ports: Arc<PortAllocator>,
}

pub fn routes(
    shards: Vec<mpsc::UnboundedSender<ShardQuery>>,
    store: Store,
    ports: Arc<PortAllocator>,
) -> Router {
    Router::new()
        .route("/api/calls", get(calls))
        .route("/api/cdrs", get(cdrs))
        .with_state(CallsState {
            shards: Arc::new(shards),
            store,
            ports,
        })
}

async fn calls(State(s): State<CallsState>) -> Result<Json<serde_json::Value>, ApiError> {
    let mut all: Vec<CallSummary> = Vec::new();
    for shard in s.shards.iter() {
        let (tx, rx) = oneshot::channel();
        if shard.send(ShardQuery::Calls(tx)).is_ok()
            && let Ok(calls) = rx.await
        {
            all.extend(calls);
        }
    }
    Ok(Json(
        serde_json::json!({ "calls": all, "media_ports_in_use": s.ports.in_use() }),
    ))
}

#[derive(Deserialize)]
struct CdrQuery {
    limit: Option<usize>,
    after: Option<u64>,
    format: Option<String>,
}

async fn cdrs(
    State(s): State<CallsState>,
    Query(q): Query<CdrQuery>,
) -> Result<Response, ApiError> {
    let store = s.store.clone();
    let limit = q.limit.unwrap_or(100);
    let rows = tokio::task::spawn_blocking(move || store.list_cdrs(limit, q.after))
        .await
        .map_err(|e| ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: e.to_string(),
        })?
        .map_err(|e| ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: e.to_string(),
        })?;
    match q.format.as_deref() {
        Some("csv") => Ok((
            [(header::CONTENT_TYPE, "text/csv")],
            crate::store::cdrs_to_csv(&rows),
        )
            .into_response()),
        None | Some("json") => {
            let records: Vec<serde_json::Value> = rows
                .into_iter()
                .map(|(id, cdr)| {
                    let mut v = serde_json::to_value(cdr).unwrap_or_default();
                    v["id"] = id.into();
                    v
                })
                .collect();
            Ok(Json(serde_json::json!({ "cdrs": records })).into_response())
        }
        Some(other) => Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            message: format!("unknown format {other:?}; use json or csv"),
        }),
    }
}
