//! `brookd`: the broker daemon. Loads the configuration, recovers the store,
//! starts the actors, serves until SIGTERM/SIGINT, then shuts down in order
//! and exits 0.

/// Many small, short-lived allocations (frames, envelopes, buffers) cross
/// threads here; mimalloc's per-thread free lists beat glibc malloc at it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow_free::run;

mod anyhow_free {
    use brook::broker;
    use brook::clock::SystemClock;
    use brook::logging::{self, LogFormat};
    use brook::signals::Signals;
    use brook::store::retention::StatvfsUsage;
    use brook::Config;
    use clap::Parser;
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::time::Duration;

    /// brookd — a RocketMQ-style message broker.
    #[derive(Debug, Parser)]
    #[command(name = "brookd", version, about)]
    struct Cli {
        /// TOML configuration file (environment variables BROOK_* override it).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print the effective configuration as TOML and exit.
        #[arg(long)]
        print_config: bool,
        /// Log format: human-readable terminal lines or JSON objects.
        #[arg(long, value_enum, default_value = "term")]
        log_format: LogFormat,
        /// Lowest level logged: critical, error, warning, info, debug, trace.
        #[arg(long, default_value = "info")]
        log_level: String,
    }

    pub fn run() -> i32 {
        let cli = Cli::parse();
        let mut config = match Config::load(cli.config.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("brookd: {e}");
                return 2;
            }
        };
        let warnings = match config.sanitize() {
            Ok(w) => w,
            Err(e) => {
                eprintln!("brookd: {e}");
                return 2;
            }
        };
        if cli.print_config {
            print!("{}", config.to_toml());
            return 0;
        }
        let Ok(level) = cli.log_level.parse::<slog::Level>() else {
            eprintln!("brookd: unknown log level {:?}", cli.log_level);
            return 2;
        };
        let (logger, _guard) = logging::init(cli.log_format, level);
        for warning in warnings {
            slog::warn!(logger, "configuration adjusted"; "detail" => warning);
        }
        let code = serve(config, &logger);
        slog::info!(logger, "brookd exiting"; "code" => code);
        code
    }

    fn serve(config: Config, logger: &slog::Logger) -> i32 {
        raise_fd_limit(logger);
        if config.server.disable_thp {
            disable_thp(logger);
        }
        let started = std::time::Instant::now();
        let mut config = config;
        let mut opened = match broker::open_store(&config) {
            Ok(o) => o,
            Err(e) => {
                slog::crit!(logger, "cannot open the store"; "error" => %e, "data_dir" => %config.data_dir.display());
                return 1;
            }
        };
        let rec = &opened.recovered;
        slog::info!(logger, "store recovered";
            "clean" => rec.clean, "write_pos" => rec.write_pos, "scan_from" => rec.scan_from,
            "replayed" => rec.replayed, "removed_segments" => rec.removed_segments,
            "elapsed_ms" => started.elapsed().as_millis() as u64);
        if let Some((at, reason)) = &rec.truncated {
            slog::warn!(logger, "cut a torn tail off the commit log"; "at" => at, "reason" => reason);
        }
        for note in opened.backend_note.iter().chain(&opened.space_note) {
            slog::warn!(logger, "{}", note);
        }
        slog::info!(logger, "io backend chosen"; "backend" => ?opened.backend, "configured" => ?config.store.io_backend);
        if config.controller_mode {
            if let Err(e) = join_controller(&mut config, &mut opened, logger) {
                slog::crit!(logger, "cannot join the controller"; "error" => %e);
                return 1;
            }
        }
        let config = Arc::new(config);
        let system = actix::System::new();
        let logger = logger.clone();
        system.block_on(async move {
            // Handlers go in before the broker says it is listening, so a
            // SIGTERM right after readiness still shuts down in order.
            let signals = Signals::install();
            let running =
                match broker::start(opened, &config, logger.clone(), Arc::new(SystemClock), Arc::new(StatvfsUsage))
                    .await
                {
                    Ok(r) => r,
                    Err(e) => {
                        slog::crit!(logger, "cannot start"; "error" => %e);
                        return 1;
                    }
                };
            let server = match broker::serve(&running, config.clone(), logger.clone()).await {
                Ok(s) => s,
                Err(e) => {
                    slog::crit!(logger, "cannot listen"; "error" => %e);
                    // The actors are running: stop them in order. Left to the
                    // runtime's drop, an actor not yet started (the
                    // housekeeper, on this thread) would start there, outside
                    // the runtime, and panic setting its timers.
                    stop_in_order(&running, &logger).await;
                    return 1;
                }
            };
            if let Some(http) = server.http_addr {
                slog::info!(logger, "http listening"; "addr" => %http);
            }
            slog::info!(logger, "listening"; "addr" => %server.local_addr, "data_dir" => %config.data_dir.display(),
                "flush" => ?config.store.flush);
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
            let signal = signals.wait().await;
            slog::info!(logger, "shutting down"; "signal" => signal);
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
            server.stop(Duration::from_secs(5)).await;
            stop_in_order(&running, &logger).await
        })
    }

    /// The ordered shutdown of the running actors; returns the exit code.
    async fn stop_in_order(running: &broker::Running, logger: &slog::Logger) -> i32 {
        match broker::shutdown(running).await {
            Ok(cp) => {
                slog::info!(logger, "stopped cleanly"; "log_end" => cp.log_end);
                0
            }
            Err(e) if broker::only_out_of_space(running, &e) => {
                slog::warn!(logger, "disk full: shutdown synced the log but could not write its checkpoint; \
                    the next start recovers from the log"; "error" => %e);
                0
            }
            Err(e) => {
                slog::error!(logger, "shutdown could not checkpoint; the next start will recover"; "error" => %e);
                1
            }
        }
    }

    /// Controller mode: asks the controller for this broker's id and role
    /// before anything starts; the role decides `broker_id` (0: master).
    fn join_controller(
        config: &mut Config,
        opened: &mut broker::OpenedStore,
        logger: &slog::Logger,
    ) -> brook::error::Result<()> {
        let epochs = brook::store::epochs::EpochFile::load(opened.paths.epochs())
            .map_err(|e| brook::error::Error::io("read the epoch file", e))?;
        let epoch = epochs.last().map_or(0, |e| e.epoch);
        let joined = brook::ha::controller::join(config, &opened.paths, (epoch, opened.recovered.write_pos), logger)?;
        config.broker_id = joined.role_id();
        opened.joined = Some(joined);
        Ok(())
    }

    /// Each queue keeps its consume-queue file open, so tens of thousands of
    /// queues need as many descriptors: lift the soft limit to the hard one,
    /// and (when privileged) the hard one to the kernel's `nr_open`.
    fn raise_fd_limit(logger: &slog::Logger) {
        let nr_open: u64 =
            std::fs::read_to_string("/proc/sys/fs/nr_open").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        // SAFETY: getrlimit/setrlimit on a zeroed, owned struct.
        unsafe {
            let mut limit: libc::rlimit = std::mem::zeroed();
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return;
            }
            let wanted = limit.rlim_max.max(nr_open as libc::rlim_t);
            let raised = libc::rlimit { rlim_cur: wanted, rlim_max: wanted };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                limit.rlim_cur = limit.rlim_max;
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    slog::warn!(logger, "cannot raise the open-file limit");
                }
            }
        }
    }

    /// Turns transparent huge pages off for this process: memory touched
    /// from now on, including the allocator's regions reserved before,
    /// faults in 4 KiB pages.
    fn disable_thp(logger: &slog::Logger) {
        // SAFETY: PR_SET_THP_DISABLE takes integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } != 0 {
            slog::warn!(logger, "cannot turn transparent huge pages off"; "error" => %std::io::Error::last_os_error());
        }
    }
}

fn main() {
    std::process::exit(run());
}
