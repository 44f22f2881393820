//! The running dialplan: the current version, reloads that keep the old version when
//! the new one fails, a watcher that reloads on file changes, and the admin endpoint.

use super::call::CallControl;
use super::load::{Dialplan, Fingerprint};
use super::{DialplanError, RouteOutcome, Services};
use crate::admin::ApiError;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, UNIX_EPOCH};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Holds the dialplan new calls get. A call takes the current `Arc<Dialplan>` when it
/// starts and keeps it to the end, so a reload never changes code under a running call.
#[derive(Debug)]
pub struct DialplanHandle {
    dir: PathBuf,
    services: Services,
    current: RwLock<Current>,
    /// Serialises reloads so versions are numbered in the order they were loaded.
    reloading: Mutex<()>,
}

#[derive(Debug, Clone)]
struct Current {
    plan: Arc<Dialplan>,
    version: u64,
}

/// What `switchboard reload` and `/api/dialplan` report about the running version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReloadInfo {
    /// 1 for the version loaded at start, one more for each successful reload.
    pub version: u64,
    pub dir: PathBuf,
    pub files: Vec<String>,
    /// Unix seconds.
    pub loaded_at: u64,
}

impl DialplanHandle {
    /// Loads `dir`; fails (with file and line) if it does not load, since the server
    /// cannot route calls without a dialplan.
    pub fn open(dir: &Path, services: Services) -> Result<Arc<DialplanHandle>, DialplanError> {
        let plan = Dialplan::load(dir)?;
        Ok(Arc::new(DialplanHandle {
            dir: dir.to_path_buf(),
            services,
            current: RwLock::new(Current {
                plan: Arc::new(plan),
                version: 1,
            }),
            reloading: Mutex::new(()),
        }))
    }

    fn snapshot(&self) -> Current {
        // A writer only swaps an Arc; a poisoned lock still holds a complete value.
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The version new calls run.
    pub fn current(&self) -> Arc<Dialplan> {
        self.snapshot().plan
    }

    pub fn info(&self) -> ReloadInfo {
        let Current { plan, version } = self.snapshot();
        ReloadInfo {
            version,
            dir: plan.dir().to_path_buf(),
            files: plan.files().to_vec(),
            loaded_at: plan
                .loaded_at()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    /// Compiles and checks the folder again. On success new calls get the new version;
    /// on failure the running version stays and the error says why. Blocks while
    /// compiling (milliseconds): call it from a blocking context.
    pub fn reload(&self) -> Result<ReloadInfo, DialplanError> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        let plan = Dialplan::load(&self.dir)?;
        {
            let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
            current.version += 1;
            current.plan = Arc::new(plan);
        }
        Ok(self.info())
    }

    /// Routes one call with the current version.
    pub async fn route<C: CallControl>(&self, call: &mut C) -> RouteOutcome {
        let plan = self.current();
        plan.run(call, &self.services).await
    }

    /// Checks the folder every `period` and reloads when a script was added, removed or
    /// changed. A version that fails to load is reported once and not retried until the
    /// files change again. Stops when `stop` turns true.
    pub fn watch(
        self: &Arc<Self>,
        period: Duration,
        mut stop: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        let handle = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut rejected: Option<Fingerprint> = None;
            let mut unreadable: Option<String> = None;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.wait_for(|stop| *stop) => return,
                }
                let dir = handle.dir.clone();
                let seen = match tokio::task::spawn_blocking(move || Fingerprint::of(&dir)).await {
                    Ok(Ok(seen)) => seen,
                    Ok(Err(e)) => {
                        let why = e.to_string();
                        if unreadable.as_ref() != Some(&why) {
                            tracing::warn!(dir = %handle.dir.display(), error = %why, "cannot watch the dialplan folder");
                            unreadable = Some(why);
                        }
                        continue;
                    }
                    Err(_) => return,
                };
                unreadable = None;
                if &seen == handle.current().fingerprint() || rejected.as_ref() == Some(&seen) {
                    continue;
                }
                let reloading = handle.clone();
                match tokio::task::spawn_blocking(move || reloading.reload()).await {
                    Ok(Ok(info)) => {
                        rejected = None;
                        tracing::info!(version = info.version, files = ?info.files, "dialplan reloaded");
                    }
                    Ok(Err(e)) => {
                        tracing::error!(
                            traceback = e.traceback.as_deref().unwrap_or(""),
                            "dialplan not reloaded, the running version stays: {e}"
                        );
                        rejected = Some(seen);
                    }
                    Err(_) => return,
                }
            }
        })
    }
}

/// `POST /api/reload` (what `switchboard reload` calls) and `GET /api/dialplan`.
pub fn admin_routes(handle: Arc<DialplanHandle>) -> Router {
    Router::new()
        .route("/api/reload", post(reload))
        .route("/api/dialplan", get(show))
        .with_state(handle)
}

async fn show(State(handle): State<Arc<DialplanHandle>>) -> Json<ReloadInfo> {
    Json(handle.info())
}

async fn reload(
    State(handle): State<Arc<DialplanHandle>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let result = tokio::task::spawn_blocking(move || handle.reload())
        .await
        .map_err(|e| ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("reload did not finish: {e}"),
        })?;
    match result {
        Ok(info) => Ok(Json(serde_json::json!({ "dialplan": info }))),
        Err(e) => Err(ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: format!("dialplan not reloaded, the running version stays: {e}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialplan::MemoryKv;
    use std::fs;

    fn handle_in(dir: &Path) -> Arc<DialplanHandle> {
        DialplanHandle::open(dir, Services::new(Arc::new(MemoryKv::default()))).unwrap()
    }

    #[test]
    fn a_failed_reload_keeps_the_running_version() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("default.lua"), "function route(call) end").unwrap();
        let handle = handle_in(dir.path());
        let first = handle.current();
        assert_eq!(handle.info().version, 1);

        fs::write(
            dir.path().join("default.lua"),
            "function route(call)\n  if x then\nend",
        )
        .unwrap();
        let err = handle.reload().unwrap_err();
        assert_eq!(err.line, Some(3));
        assert!(Arc::ptr_eq(&first, &handle.current()));
        assert_eq!(handle.info().version, 1);

        fs::write(
            dir.path().join("default.lua"),
            "function route(c) end -- v2",
        )
        .unwrap();
        let info = handle.reload().unwrap();
        assert_eq!(info.version, 2);
        assert_eq!(info.files, ["default.lua"]);
        assert!(!Arc::ptr_eq(&first, &handle.current()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_reload_endpoint_reports_success_and_file_line_errors() {
        use crate::admin::client::{AdminClient, ClientError};
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("default.lua"), "function route(call) end").unwrap();
        let handle = handle_in(dir.path());
        let (stop, stopped) = watch::channel(false);
        let server = crate::admin::serve(
            "127.0.0.1:0".parse().unwrap(),
            admin_routes(handle.clone()),
            async move {
                let mut stopped = stopped;
                let _ = stopped.wait_for(|s| *s).await;
            },
        )
        .await
        .unwrap();
        let client = AdminClient::new(server.local_addr);
        let post = |client: AdminClient| {
            tokio::task::spawn_blocking(move || (client.post("/api/reload"), client))
        };

        let (answer, client) = post(client).await.unwrap();
        assert_eq!(answer.unwrap()["dialplan"]["version"], 2);

        fs::write(
            dir.path().join("default.lua"),
            "function route(call)\n  call:dial(\nend",
        )
        .unwrap();
        let (answer, client) = post(client).await.unwrap();
        match answer {
            Err(ClientError::Status {
                status: 422,
                message,
            }) => {
                let at = format!("{}:3:", dir.path().join("default.lua").display());
                assert!(message.contains("the running version stays"), "{message}");
                assert!(message.contains(&at), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let shown = tokio::task::spawn_blocking(move || client.get("/api/dialplan"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(shown["version"], 2);
        assert_eq!(shown["files"], serde_json::json!(["default.lua"]));
        stop.send(true).unwrap();
        server.finished().await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn the_watcher_reloads_changed_files() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("default.lua"), "function route(call) end").unwrap();
        let handle = handle_in(dir.path());
        let (stop, stopped) = watch::channel(false);
        let watcher = handle.watch(Duration::from_secs(1), stopped);

        fs::write(
            dir.path().join("default.lua"),
            "function route(call) end -- changed",
        )
        .unwrap();
        while handle.info().version < 2 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // A broken edit is not taken; the version stays until the files are fixed.
        fs::write(dir.path().join("default.lua"), "function route(").unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(handle.info().version, 2);
        fs::write(dir.path().join("extra.lua"), "return {}").unwrap();
        fs::write(dir.path().join("default.lua"), "function route(call) end").unwrap();
        while handle.info().version < 3 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(handle.info().files, ["default.lua", "extra.lua"]);
        stop.send(true).unwrap();
        watcher.await.unwrap();
    }
}
