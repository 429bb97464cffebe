//! The stop signals a daemon (brookd, brook-namesrv) obeys: SIGTERM, as
//! systemd sends, and SIGINT, as a terminal does.

use tokio::signal::unix::{signal, Signal, SignalKind};

/// SIGTERM and SIGINT handlers, installed before the daemon says it is
/// ready so a signal right after readiness is not lost.
pub struct Signals(Option<(Signal, Signal)>);

impl Signals {
    /// Installs the handlers (inside a tokio runtime).
    pub fn install() -> Self {
        Self(signal(SignalKind::terminate()).ok().zip(signal(SignalKind::interrupt()).ok()))
    }

    /// Waits for either; names the one that came.
    pub async fn wait(self) -> &'static str {
        let Some((mut term, mut int)) = self.0 else {
            std::future::pending::<()>().await;
            return "none";
        };
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    }
}
