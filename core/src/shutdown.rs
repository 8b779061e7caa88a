//! Signals: SIGTERM/SIGINT cancel a token (drain and exit), SIGHUP asks for a
//! config reload.

use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// What a daemon listens to while it runs.
#[derive(Clone, Default)]
pub struct Signals {
    /// Cancelled on SIGTERM or SIGINT.
    pub shutdown: CancellationToken,
    /// Notified on SIGHUP (one listener; a SIGHUP while it is busy is
    /// kept for its next wait).
    pub reload: Arc<Notify>,
}

impl Signals {
    /// Signals driven by the process's own SIGTERM/SIGINT/SIGHUP.
    pub fn from_process() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        let s = Signals::default();
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let (shutdown, reload) = (s.shutdown.clone(), s.reload.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => { tracing::info!("SIGTERM: draining"); shutdown.cancel(); }
                    _ = int.recv() => { tracing::info!("SIGINT: draining"); shutdown.cancel(); }
                    _ = hup.recv() => { tracing::info!("SIGHUP: reload requested"); reload.notify_one(); }
                }
            }
        });
        Ok(s)
    }
}
