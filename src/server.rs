//! `switchboard run`: starts every part of the server and stops them on SIGINT/SIGTERM.
//! For now only the admin API runs; the SIP transports join here.

use crate::admin::{self, AdminState};
use crate::config::Config;
use std::sync::Arc;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Log every SIP message sent and received, with addresses.
    pub sip_trace: bool,
}

pub async fn run(
    mut config: Config,
    opts: RunOptions,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let secrets = config.resolve_secrets()?;
    if !secrets.generated.is_empty() {
        tracing::warn!(
            extensions = ?secrets.generated,
            file = %secrets.file.display(),
            "generated passwords for extensions without one; see them with `switchboard secrets`"
        );
    }
    if !secrets.reused.is_empty() {
        tracing::info!(extensions = ?secrets.reused, file = %secrets.file.display(), "using generated passwords");
    }
    tracing::info!(config = %config.origin, sip_trace = opts.sip_trace, "starting switchboard");

    // Installed before anything reports ready, so an early SIGTERM still shuts down cleanly.
    let mut signals = ShutdownSignals::install()?;
    let (stop, stopped) = watch::channel(false);
    let state = Arc::new(AdminState::new(&config, config.sip.listen.clone()));
    let admin = admin::serve(
        config.admin.listen,
        admin::router(state),
        wait_for_stop(stopped),
    )
    .await?;

    let signal_name = signals.recv().await;
    tracing::info!(signal = signal_name, "shutting down");
    // Nobody listening only means every part has already stopped.
    let _ = stop.send(true);
    admin.finished().await?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves once `true` has been sent, or the sender is gone.
async fn wait_for_stop(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// SIGINT (Ctrl-C) and SIGTERM (systemd, `kill`).
struct ShutdownSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl ShutdownSignals {
    fn install() -> std::io::Result<ShutdownSignals> {
        Ok(ShutdownSignals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Waits for either signal and names the one that came.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}
