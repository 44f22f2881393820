//! Where a new call's dialplan runs: a task per call, driving the call through its
//! [`CallHandle`].

use crate::b2bua::RouteStarter;
use crate::b2bua::control::CallHandle;
use crate::config::Config;
use crate::dialplan::call::{CallControl, CallerId, DialRequest, DialTarget, Strategy};
use std::sync::Arc;
use std::time::Duration;

/// The built-in plan used until the Lua engine is wired: dial the extension named in
/// the Request-URI, and refuse with what the dial says when nobody answers.
pub fn starter(_config: &Config) -> Result<RouteStarter, String> {
    Ok(Arc::new(|mut handle: CallHandle| {
        tokio::spawn(async move {
            let dest = handle.info().request_uri.clone();
            let user = crate::sip::Uri::parse_str(&dest)
                .ok()
                .and_then(|u| u.user().map(str::to_string))
                .unwrap_or_default();
            let result = handle
                .dial(DialRequest {
                    targets: vec![DialTarget::Extension(user)],
                    strategy: Strategy::Parallel,
                    timeout: Duration::from_secs(30),
                    caller_id: CallerId::default(),
                    headers: Vec::new(),
                })
                .await;
            if let Some(code) = result.status.fallback_response(result.sip_code) {
                let _ = handle.reject(code, None).await;
            }
            handle.finish(Ok(()));
        });
    }))
}
