//! Where a new call's dialplan runs: a task per call, driving the call through its
//! [`CallHandle`].

use crate::b2bua::RouteStarter;
use crate::b2bua::control::CallHandle;
use crate::dialplan::DialplanHandle;
use crate::dialplan::call::{CallControl, CallerId, DialRequest, DialTarget, Strategy};
use std::sync::Arc;
use std::time::Duration;

/// Runs `route(call)` of the current Lua dialplan for each call. Without a dialplan
/// folder (a bare `switchboard run` outside the source tree), calls go to the extension
/// the Request-URI names, which is what the shipped plan does for extensions.
pub fn starter(plan: Option<Arc<DialplanHandle>>) -> RouteStarter {
    match plan {
        Some(plan) => Arc::new(move |mut call: CallHandle| {
            let plan = plan.clone();
            tokio::spawn(async move {
                let outcome = plan.route(&mut call).await;
                call.finish(outcome.error.map_or(Ok(()), |e| Err(e.to_string())));
            });
        }),
        None => Arc::new(|mut call: CallHandle| {
            tokio::spawn(async move {
                let dest = call.info().request_uri.clone();
                let user = crate::sip::Uri::parse_str(&dest)
                    .ok()
                    .and_then(|u| u.user().map(str::to_string))
                    .unwrap_or_default();
                let result = call
                    .dial(DialRequest {
                        targets: vec![DialTarget::Extension(user)],
                        strategy: Strategy::Parallel,
                        timeout: Duration::from_secs(30),
                        caller_id: CallerId::default(),
                        headers: Vec::new(),
                    })
                    .await;
                if let Some(code) = result.status.fallback_response(result.sip_code) {
                    let _ = call.reject(code, None).await;
                }
                call.finish(Ok(()));
            });
        }),
    }
}
