//! Structured logs through slog: human-readable lines on a terminal (or
//! plain text when piped), one JSON object per line with `--log-format
//! json`. Records go through slog-async so logging never blocks an actor.

use slog::{o, Drain, Level};

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable.
    Term,
    /// One JSON object per line.
    Json,
}

/// Keeps the async drain alive; dropping it flushes pending records.
pub struct LogGuard(
    #[expect(dead_code, reason = "held only to flush the async drain when dropped")] slog_async::AsyncGuard,
);

/// Builds the root logger writing to stderr at `level` and above.
pub fn init(format: LogFormat, level: Level) -> (slog::Logger, LogGuard) {
    let (drain, guard) = match format {
        LogFormat::Json => {
            let json = slog_json::Json::new(std::io::stderr()).add_default_keys().build().fuse();
            slog_async::Async::new(json.filter_level(level).fuse()).chan_size(16_384).build_with_guard()
        }
        LogFormat::Term => {
            let decorator = slog_term::TermDecorator::new().stderr().build();
            let term = slog_term::FullFormat::new(decorator).build().fuse();
            slog_async::Async::new(term.filter_level(level).fuse()).chan_size(16_384).build_with_guard()
        }
    };
    (slog::Logger::root(drain.fuse(), o!()), LogGuard(guard))
}

/// A logger that drops everything (tests and benches).
pub fn discard() -> slog::Logger {
    slog::Logger::root(slog::Discard, o!())
}
