//! Call detail records go to redb from a task of their own, so a shard never waits for
//! a disk sync. Records are gathered for a moment and written in one transaction: at
//! hundreds of calls per second a commit (and fsync) per record cost more CPU than the
//! calls themselves.

use crate::store::{Cdr, Store};
use tokio::sync::mpsc;

/// How long the writer gathers records before committing them.
const BATCH_WINDOW: std::time::Duration = std::time::Duration::from_millis(200);

#[derive(Clone)]
pub struct CdrSink {
    tx: mpsc::UnboundedSender<Cdr>,
}

impl CdrSink {
    /// Starts the writer task; it ends when every sink is dropped and the queue is empty.
    pub fn start(store: Store) -> (CdrSink, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Cdr>();
        let task = tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                tokio::time::sleep(BATCH_WINDOW).await;
                let mut batch = vec![first];
                while let Ok(more) = rx.try_recv() {
                    batch.push(more);
                }
                let store = store.clone();
                let written = tokio::task::spawn_blocking(move || store.append_cdrs(&batch)).await;
                match written {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "CDRs not written"),
                    Err(e) => tracing::error!(error = %e, "CDR writer failed"),
                }
            }
        });
        (CdrSink { tx }, task)
    }

    pub fn write(&self, cdr: Cdr) {
        if self.tx.send(cdr).is_err() {
            tracing::error!("CDR writer has stopped; record lost");
        }
    }
}
