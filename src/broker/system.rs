//! The broker's own readers of its system topics, started after the
//! registry: one scheduler per delay level, the timer wheel and the
//! transaction checker, each resuming from its progress file.

use crate::actors::appender::Appender;
use crate::actors::producer_registry::ProducerRegistry;
use crate::actors::queue_registry::QueueRegistry;
use crate::actors::scheduler::SchedulerActor;
use crate::actors::timer_wheel::TimerWheelActor;
use crate::actors::txn_checker::{TxnCheckerActor, TxnConfig};
use crate::broker::OpenedStore;
use crate::config::Config;
use crate::delay::DelayPolicy;
use crate::error::{IoContext, Result};
use crate::store::progress::{ProgressFile, SystemFiles, MAX_VALUES};
use crate::store::timer::Buckets;
use actix::{Actor, Addr, Arbiter};
use brook_proto::system::{META_TOPIC, SCHEDULE_TOPIC, TIMER_TOPIC, TRACE_TOPIC, TRANS_HALF_TOPIC, TRANS_OP_TOPIC};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// The running system actors.
pub struct SystemActors {
    /// One per delay level (index 0 is level 1).
    pub schedulers: Vec<Addr<SchedulerActor>>,
    /// Exact-time delivery.
    pub wheel: Addr<TimerWheelActor>,
    /// Transactions.
    pub txn: Addr<TxnCheckerActor>,
    /// Connections of each producer group (for transaction checks).
    pub producers: Arc<ProducerRegistry>,
    /// The address message ids name, known once the listener is bound.
    pub advertised: Arc<OnceLock<SocketAddr>>,
    /// Their files, synced at each checkpoint.
    pub files: Arc<SystemFiles>,
}

fn open_progress(path: &Path, all: &mut Vec<Arc<ProgressFile>>) -> Result<(Arc<ProgressFile>, [u64; MAX_VALUES])> {
    let (file, values) = ProgressFile::open(path).ctx(|| format!("open {}", path.display()))?;
    let file = Arc::new(file);
    all.push(file.clone());
    Ok((file, values))
}

/// Creates the system topics (one schedule queue per delay level, one timer
/// queue, the transaction half and op queues) and starts their actors on
/// `arbiter` (idle on a slave).
pub fn start(
    config: &Config,
    store: &OpenedStore,
    registry: &Arc<QueueRegistry>,
    appender: &Appender,
    delays: &DelayPolicy,
    (arbiter, metrics): (&Arbiter, &Arc<crate::metrics::Metrics>),
    logger: &slog::Logger,
) -> Result<SystemActors> {
    // A slave's log is its master's: its readers wait (and resume from the
    // progress the master's log carries once it is promoted).
    let standby = config.is_slave();
    let levels = delays.levels_ms().len() as u32;
    if store.topics.get(SCHEDULE_TOPIC).is_none_or(|t| t.queues < levels) {
        store.topics.create(SCHEDULE_TOPIC, levels)?;
    }
    for topic in [TIMER_TOPIC, TRANS_HALF_TOPIC, TRANS_OP_TOPIC, TRACE_TOPIC, META_TOPIC] {
        if store.topics.get(topic).is_none() {
            store.topics.create(topic, 1)?;
        }
    }
    let mut progress = Vec::new();
    let mut schedulers = Vec::new();
    for level in 1..=levels {
        let (file, values) = open_progress(&store.paths.schedule().join(format!("level-{level}")), &mut progress)?;
        let actor = SchedulerActor::new(level, registry.clone(), appender.clone(), file, values[0], logger);
        let actor = if standby { actor.standby() } else { actor };
        schedulers.push(SchedulerActor::start_in_arbiter(&arbiter.handle(), move |_| actor));
    }
    let timer_dir = store.paths.timer();
    let buckets = Arc::new(
        Buckets::open(timer_dir.clone(), config.store.timer_bucket_ms)
            .ctx(|| format!("open {}", timer_dir.display()))?,
    );
    let wheel_progress = open_progress(&timer_dir.join("progress"), &mut progress)?;
    let actor = TimerWheelActor::new(
        registry.clone(),
        appender.clone(),
        buckets.clone(),
        wheel_progress,
        metrics.clone(),
        logger.clone(),
    );
    let actor = if standby { actor.standby() } else { actor };
    let wheel = TimerWheelActor::start_in_arbiter(&arbiter.handle(), move |_| actor);

    let (timeout_ms, check_interval_ms) = config.transaction_times_ms()?;
    let txn_config = TxnConfig { timeout_ms, check_interval_ms, check_max: config.transaction_check_max };
    let producers = Arc::new(ProducerRegistry::default());
    let advertised = Arc::new(OnceLock::new());
    let txn_progress = open_progress(&store.paths.txn().join("progress"), &mut progress)?;
    let actor = TxnCheckerActor::new(
        registry.clone(),
        appender.clone(),
        producers.clone(),
        txn_progress,
        advertised.clone(),
        txn_config,
        logger,
    );
    let actor = if standby { actor.standby() } else { actor };
    let txn = TxnCheckerActor::start_in_arbiter(&arbiter.handle(), move |_| actor);
    Ok(SystemActors {
        schedulers,
        wheel,
        txn,
        producers,
        advertised,
        files: Arc::new(SystemFiles { progress, buckets }),
    })
}
