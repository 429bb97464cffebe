//! The one failpoint helper: crash tests (feature `failpoints`) stall the
//! broker at a named step with `BROOK_FAILPOINT=<name>` and kill it there.
//! Without the feature every call is an empty future the compiler removes;
//! production code carries no failpoint macros.

/// Waits for an hour if `BROOK_FAILPOINT` names this step (feature
/// `failpoints` only), so a test can SIGKILL the broker exactly there.
pub async fn stall(_name: &str) {
    #[cfg(feature = "failpoints")]
    if std::env::var("BROOK_FAILPOINT").is_ok_and(|v| v == _name) {
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
    }
}

/// [`stall`] for a step that runs outside the runtime (start-up work done
/// before any actor runs).
pub fn stall_blocking(_name: &str) {
    #[cfg(feature = "failpoints")]
    if std::env::var("BROOK_FAILPOINT").is_ok_and(|v| v == _name) {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
