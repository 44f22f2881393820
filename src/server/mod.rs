//! `switchboard run`: starts every part of the server and stops them on SIGINT/SIGTERM.

mod calls_api;
mod core;
mod routing;

use crate::admin::Stats;
use crate::admin::{self, AdminState};
use crate::b2bua::{B2bua, B2buaContext, CdrSink};
use crate::config::{Config, Listen};
use crate::dialplan::{DialplanHandle, Services};
use crate::media::{PortAllocator, PortRange};
use crate::registrar::{Registrar, RegistrarSettings};
use crate::sip::checks::Capabilities;
use crate::sip::dialog::{MIN_SE_FLOOR, TimerPolicy};
use crate::sip::transaction::{TimerConfig, TransactionLayer};
use crate::store::Store;
use crate::transport::{Dispatcher, Hub};
use core::{CoreContext, Shard, ShardInputs};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;
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
    if config.sip.min_se_secs < MIN_SE_FLOOR {
        tracing::warn!(
            min_se_secs = config.sip.min_se_secs,
            "sip.min_se_secs is below the RFC 4028 minimum of {MIN_SE_FLOOR} s: for tests only"
        );
    }

    // Installed before anything reports ready, so an early SIGTERM still shuts down cleanly.
    let mut signals = ShutdownSignals::install()?;
    let (stop, stopped) = watch::channel(false);
    let stats = Arc::new(Stats::default());
    let store = Store::open(&config.storage.dir)
        .map_err(|e| format!("storage.dir {}: {e}", config.storage.dir.display()))?;
    let registrar = Arc::new(Registrar::new(
        SystemTime::now(),
        &config,
        RegistrarSettings {
            default_expires: config.registrar.default_expires,
            min_expires: config.registrar.min_expires,
            max_expires: config.registrar.max_expires,
            qualify_interval_secs: config.registrar.qualify_interval_secs,
            nonce_lifetime_secs: config.registrar.nonce_lifetime_secs,
            ..RegistrarSettings::default()
        },
        store.clone(),
    )?);
    let dialplan = if config.dialplan.dir.is_dir() {
        let services = Services::new(Arc::new(store.clone()))
            .with_recordings(config.storage.dir.join("recordings"));
        let plan = DialplanHandle::open(&config.dialplan.dir, services)
            .map_err(|e| format!("dialplan.dir: {e}"))?;
        plan.watch(Duration::from_secs(1), stopped.clone());
        tracing::info!(dir = %config.dialplan.dir.display(), "dialplan loaded; watching for changes");
        Some(plan)
    } else {
        tracing::warn!(dir = %config.dialplan.dir.display(), "no dialplan folder: calls go straight to the extension dialled");
        None
    };
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
    // Media sockets listen on every IPv4 interface; SDP names the one each phone uses.
    let ports = Arc::new(PortAllocator::new(
        std::net::IpAddr::from([0, 0, 0, 0]),
        PortRange {
            first: config.media.rtp_ports.start,
            last: config.media.rtp_ports.end,
        },
    ));
    let (cdrs, cdr_writer) = CdrSink::start(store.clone());
    let ctx = Arc::new(CoreContext {
        hub: hub.clone(),
        caps: Capabilities::pbx(),
        user_agent: config.sip.user_agent.clone(),
        registrar: registrar.clone(),
    });
    let prompts = Arc::new(crate::media::prompts::Prompts::new(
        config.media.sounds_dir.clone(),
        config.media.language.clone(),
        config.media.moh_dir.clone(),
    ));
    let b2bua_ctx = Arc::new(B2buaContext {
        registrar: registrar.clone(),
        ports: ports.clone(),
        cdrs,
        route: routing::starter(dialplan.clone()),
        public_address: config.media.public_address,
        hub: hub.clone(),
        user_agent: config.sip.user_agent.clone(),
        t1: config.sip.t1,
        t2: config.sip.t2,
        media_timeout: config.media.timeout,
        timer_policy: TimerPolicy::new(config.sip.session_expires_secs, config.sip.min_se_secs),
        codecs: crate::b2bua::CodecPolicy::new(&config.media.codecs, &config.extensions),
        prompts: prompts.clone(),
        music: match prompts.music("default") {
            Ok(music) => {
                // Encoded for each codec in the background; held calls meanwhile
                // encode it themselves.
                let encoding = music.clone();
                std::thread::spawn(move || encoding.prepare());
                Some(music)
            }
            Err(e) => {
                tracing::warn!(error = %e, "no hold music: parties on hold hear silence");
                None
            }
        },
    });
    let timers = TimerConfig {
        t1: config.sip.t1,
        t2: config.sip.t2,
        t4: config.sip.t4,
    };
    let mut shard_tasks = Vec::new();
    let mut shard_queries = Vec::new();
    for (i, inbound) in queues.into_iter().enumerate() {
        let (command_tx, commands) = mpsc::unbounded_channel();
        let (query_tx, queries) = mpsc::unbounded_channel();
        shard_queries.push(query_tx);
        let b2bua = B2bua::new(i, b2bua_ctx.clone(), command_tx);
        let shard = Shard::new(i, ctx.clone(), TransactionLayer::new(timers), b2bua);
        let inputs = ShardInputs {
            inbound,
            commands,
            queries,
            shutdown: stopped.clone(),
        };
        shard_tasks.push(tokio::spawn(shard.run(inputs)));
    }
    drop(b2bua_ctx);
    hub.start(listeners, stopped.clone());

    let mut state = AdminState::new(&config, bound);
    state.stats = stats;
    let state = Arc::new(state);
    let routes = admin::router(state)
        .merge(crate::registrar::admin_routes(registrar.clone()))
        .merge(calls_api::routes(shard_queries, store.clone(), ports));
    let routes = match &dialplan {
        Some(plan) => routes.merge(crate::dialplan::admin_routes(plan.clone())),
        None => routes,
    };
    let admin = admin::serve(config.admin.listen, routes, wait_for_stop(stopped)).await?;

    let signal_name = signals.recv().await;
    tracing::info!(signal = signal_name, "shutting down");
    // Nobody listening only means every part has already stopped.
    let _ = stop.send(true);
    admin.finished().await?;
    for t in shard_tasks {
        let _ = t.await;
    }
    // The shards held the last CDR senders: the writer drains what is queued and ends.
    let _ = cdr_writer.await;
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
