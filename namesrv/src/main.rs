//! `brook-namesrv`: a name server. Brokers register their topics with
//! every name server; clients ask any of them where a topic lives. Name
//! servers are independent of each other and keep nothing on disk.
//!
//! - [`config`]: defaults, TOML file, `BROOK_NAMESRV_*` environment.
//! - [`table`]: the registered brokers and the routes built from them.
//! - [`server`]: connections, requests, expiry.
//! - [`controller`]: with `--controller`, a voter of the Raft group that
//!   elects masters.

mod config;
mod controller;
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
    /// Run a controller voter here (needs --controller-id and --controller-peers).
    #[arg(long)]
    controller: bool,
    /// This voter's id among --controller-peers.
    #[arg(long)]
    controller_id: Option<u64>,
    /// Every voter's Raft address: 1=127.0.0.1:9880,2=127.0.0.1:9881,3=127.0.0.1:9882.
    #[arg(long)]
    controller_peers: Option<String>,
    /// Where the controller keeps its Raft log and snapshots.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
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
    config.controller |= cli.controller;
    if let Some(id) = cli.controller_id {
        config.controller_id = id;
    }
    if let Some(peers) = cli.controller_peers {
        config.controller_peers = peers;
    }
    if let Some(dir) = cli.data_dir {
        config.data_dir = dir;
    }
    if config.controller {
        if let Err(e) = config.peers() {
            eprintln!("brook-namesrv: {e}");
            return 2;
        }
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
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let controller = if config.controller {
        match start_controller(&config, stopping.clone(), &logger).await {
            Ok(c) => Some(c),
            Err(e) => {
                slog::crit!(logger, "cannot start the controller"; "error" => %e);
                return 1;
            }
        }
    } else {
        None
    };
    let names = NameServer::new(config, addr, controller.clone(), logger.clone());
    tokio::spawn(names.clone().expire_loop(stopping.clone()));
    tokio::spawn(names.accept_loop(listener, stopping));
    slog::info!(logger, "listening"; "addr" => %addr, "broker_expiry_ms" => expiry);
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    let signal = signals.wait().await;
    slog::info!(logger, "shutting down"; "signal" => signal);
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    let _ = stop.send(true);
    if let Some(controller) = controller {
        controller.consensus().shutdown().await;
    }
    0
}

/// Starts this voter: Raft over its data dir, its peer listener, and the
/// leader's scan for silent masters.
async fn start_controller(
    config: &NamesrvConfig,
    stopping: tokio::sync::watch::Receiver<bool>,
    logger: &slog::Logger,
) -> Result<std::sync::Arc<controller::Controller>, String> {
    let peers = config.peers()?;
    let peer_addr = peers.get(&config.controller_id).cloned().unwrap_or_default();
    let listener = tokio::net::TcpListener::bind(&peer_addr)
        .await
        .map_err(|e| format!("cannot listen for controller peers on {peer_addr}: {e}"))?;
    let consensus = controller::consensus::RaftConsensus::start(config.controller_id, peers.clone(), &config.data_dir)
        .await
        .map_err(|e| format!("controller storage in {}: {e}", config.data_dir.display()))?;
    let settings = controller::ControllerSettings {
        broker_expiry: std::time::Duration::from_millis(config.controller_broker_expiry_ms),
        unclean_election: config.enable_unclean_election,
    };
    let controller = controller::Controller::new(consensus.clone(), settings, logger.clone());
    let forward_to = controller.clone();
    let forward = move |request| {
        let controller = forward_to.clone();
        async move { controller.handle_here(request).await }
    };
    tokio::spawn(consensus.serve_peers(listener, forward, logger.clone()));
    tokio::spawn(controller.clone().scan_loop(stopping));
    slog::info!(logger, "controller voter started"; "id" => config.controller_id, "peer_addr" => peer_addr,
        "voters" => ?peers, "data_dir" => %config.data_dir.display(),
        "broker_expiry_ms" => config.controller_broker_expiry_ms);
    Ok(controller)
}
