//! `switchboard run`: starts every part of the server and stops them on SIGINT/SIGTERM.

mod core;

use crate::admin::Stats;
use crate::admin::{self, AdminState};
use crate::config::{Config, Listen};
use crate::sip::checks::Capabilities;
use crate::sip::transaction::{TimerConfig, TransactionLayer};
use crate::transport::{Dispatcher, Hub};
use core::{CoreContext, Shard};
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
    let stats = Arc::new(Stats::default());
    let shards = std::thread::available_parallelism().map_or(2, |n| n.get());
    let (dispatcher, queues) = Dispatcher::new(shards);
    let (hub, listeners) = Hub::bind(
        &config.sip.listen,
        stats.clone(),
        opts.sip_trace,
        dispatcher,
    )
    .await?;
    let mut bound = Vec::new();
    for l in &listeners {
        let (transport, addr) = l.local_addr()?;
        tracing::info!(transport = transport.as_str(), %addr, "SIP listening");
        bound.push(Listen { transport, addr });
    }
    let ctx = Arc::new(CoreContext {
        hub: hub.clone(),
        caps: Capabilities::pbx(),
        user_agent: config.sip.user_agent.clone(),
    });
    let timers = TimerConfig {
        t1: config.sip.t1,
        t2: config.sip.t2,
        t4: config.sip.t4,
    };
    let mut shard_tasks = Vec::new();
    for (i, queue) in queues.into_iter().enumerate() {
        let shard = Shard::new(i, ctx.clone(), TransactionLayer::new(timers));
        shard_tasks.push(tokio::spawn(shard.run(queue, stopped.clone())));
    }
    hub.start(listeners, stopped.clone());

    let mut state = AdminState::new(&config, bound);
    state.stats = stats;
    let state = Arc::new(state);
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
    for t in shard_tasks {
        let _ = t.await;
    }
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
