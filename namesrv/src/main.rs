//! `brook-namesrv`: a name server. Brokers register their topics with
//! every name server; clients ask any of them where a topic lives. Name
//! servers are independent of each other and keep nothing on disk.
//!
//! - [`config`]: defaults, TOML file, `BROOK_NAMESRV_*` environment.
//! - [`table`]: the registered brokers and the routes built from them.
//! - [`server`]: connections, requests, expiry.

mod config;
mod server;
mod table;

use brook::logging::{self, LogFormat};
use brook::signals::Signals;
use clap::Parser;
use config::NamesrvConfig;
use server::NameServer;
use std::path::PathBuf;

/// brook-namesrv — where brook's topics live.
#[derive(Debug, Parser)]
#[command(name = "brook-namesrv", version, about)]
struct Cli {
    /// Address to listen on (default 127.0.0.1:9876; env BROOK_NAMESRV_LISTEN).
    #[arg(long)]
    listen: Option<String>,
    /// TOML configuration file (environment variables BROOK_NAMESRV_* override it).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log format: human-readable terminal lines or JSON objects.
    #[arg(long, value_enum, default_value = "term")]
    log_format: LogFormat,
    /// Lowest level logged: critical, error, warning, info, debug, trace.
    #[arg(long, default_value = "info")]
    log_level: String,
}

fn main() {
    std::process::exit(run());
}

fn run() -> i32 {
    let cli = Cli::parse();
    let mut config = match NamesrvConfig::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("brook-namesrv: {e}");
            return 2;
        }
    };
    if let Some(listen) = cli.listen {
        config.listen = listen;
    }
    let Ok(level) = cli.log_level.parse::<slog::Level>() else {
        eprintln!("brook-namesrv: unknown log level {:?}", cli.log_level);
        return 2;
    };
    let (logger, _guard) = logging::init(cli.log_format, level);
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            slog::crit!(logger, "cannot start the runtime"; "error" => %e);
            return 1;
        }
    };
    let code = runtime.block_on(serve(config, logger.clone()));
    slog::info!(logger, "brook-namesrv exiting"; "code" => code);
    code
}

async fn serve(config: NamesrvConfig, logger: slog::Logger) -> i32 {
    let signals = Signals::install();
    let listener = match tokio::net::TcpListener::bind(&config.listen).await {
        Ok(l) => l,
        Err(e) => {
            slog::crit!(logger, "cannot listen"; "addr" => &config.listen, "error" => %e);
            return 1;
        }
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            slog::crit!(logger, "cannot read the bound address"; "error" => %e);
            return 1;
        }
    };
    let expiry = config.broker_expiry_ms;
    let names = NameServer::new(config, addr, logger.clone());
    let (stop, stopping) = tokio::sync::watch::channel(false);
    tokio::spawn(names.clone().expire_loop(stopping.clone()));
    tokio::spawn(names.accept_loop(listener, stopping));
    slog::info!(logger, "listening"; "addr" => %addr, "broker_expiry_ms" => expiry);
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    let signal = signals.wait().await;
    slog::info!(logger, "shutting down"; "signal" => signal);
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    let _ = stop.send(true);
    0
}
