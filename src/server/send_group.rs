//! A connection's sends on their way to the queues: those read in one turn
//! are gathered ([`SendGroup`]) and handed on together, in arrival order.
//! A group is checked and encoded where it was read — except a big one on
//! a connection served on the log writer's thread, which is prepared on
//! the pool ([`Offload`]): decoding and encoding many messages there runs
//! beside the writer instead of taking its turns.

use crate::actors::writer::idle_poll;
use crate::server::context::{BrokerCore, ConnInfo};
use crate::server::handlers::send::{self, PreparedSends, SendBody, SendRequest};
use crate::server::outbox::PendingSends;
use crate::server::wire::{Offered, Wire};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, OwnedSemaphorePermit};

/// A group of at least this many sends, or this many bytes of them, read
/// on the writer's thread is prepared on the pool: the connection pipelines
/// or batches, each hop to the pool is shared by many messages, and the
/// pool's threads work beside the writer's. A synchronous producer's send
/// comes alone and stays.
const OFFLOAD_REQUESTS: usize = 4;
const OFFLOAD_BYTES: usize = 16 << 10;

/// A connection whose big groups outnumber its others by this many (in a
/// running count: up one for each big group, down one for each other) had
/// better be served by the pool: it pipelines or batches, and reading and
/// answering it would take the writer's thread's turns.
const MOVE_AT: u32 = 8;

/// Send requests read together, waiting to be handed on.
pub(super) struct SendGroup {
    requests: Vec<SendRequest>,
    permits: Vec<OwnedSemaphorePermit>,
    /// Their bytes as read.
    bytes: usize,
    /// Where big groups are prepared (a connection served on the writer's
    /// thread only).
    offload: Option<Offload>,
    /// Big groups less others, in a running count (see [`MOVE_AT`]).
    pipelining: u32,
    /// The connection moved to the pool: big groups are prepared where
    /// they are read again.
    moved: bool,
}

impl SendGroup {
    /// A group for a connection served on the writer's thread (`pool`
    /// given: big groups are prepared there) or on the pool.
    pub fn new(pool: Option<tokio::runtime::Handle>) -> Self {
        Self {
            requests: Vec::new(),
            permits: Vec::new(),
            bytes: 0,
            offload: pool.map(Offload::new),
            pipelining: 0,
            moved: false,
        }
    }

    pub fn push(&mut self, request: SendRequest, permit: OwnedSemaphorePermit) {
        self.bytes += match &request.body {
            SendBody::Wire(bytes) => bytes.len(),
            SendBody::Owned { messages, .. } => messages.iter().map(|m| m.body.len()).sum(),
        };
        self.requests.push(request);
        self.permits.push(permit);
    }

    /// Whether the connection is served on the writer's thread and
    /// pipelines or batches enough to be better served by the pool.
    pub fn wants_pool(&self) -> bool {
        self.offload.is_some() && !self.moved && self.pipelining >= MOVE_AT
    }

    /// The connection is served by the pool from now on. Groups handed to
    /// the pool before still go first.
    pub fn served_by_pool(&mut self) {
        self.moved = true;
    }

    /// Whether the group is one send awaiting its answer.
    pub fn is_one_awaited(&self) -> bool {
        self.requests.len() == 1 && self.requests.iter().all(|r| r.id.is_some())
    }

    /// Hands the gathered sends (if any) to the queues, and the wait for
    /// their answers to the connection's writer. The writer awaits them
    /// itself: a task of their own cost a spawn, and a wake-up and a channel
    /// push to reach the writer, for every answer.
    ///
    /// A lone send (`wire` given) is answered where its placements are
    /// (see [`Wire`]); its answer goes to the writer only when the writer
    /// is busy, or to finish a cut write.
    pub fn hand_on(
        &mut self,
        (core, info): (&Arc<BrokerCore>, &Arc<ConnInfo>),
        writer: &mpsc::UnboundedSender<PendingSends>,
        wire: Option<&Arc<Wire>>,
    ) {
        if self.requests.is_empty() {
            return;
        }
        let requests = std::mem::take(&mut self.requests);
        let permits = std::mem::take(&mut self.permits);
        let bytes = std::mem::take(&mut self.bytes);
        let big = requests.len() >= OFFLOAD_REQUESTS || bytes >= OFFLOAD_BYTES;
        self.pipelining = if big { self.pipelining.saturating_add(1) } else { self.pipelining.saturating_sub(1) };
        let moved = self.moved;
        if let Some(offload) = self.offload.as_mut().filter(|o| (big && !moved) || o.busy()) {
            offload.hand((core, info), writer, (requests, permits));
            return;
        }
        // Handed to the queues here, in the read loop, not later: the
        // connection runtime steals and reorders tasks, and a connection's
        // sends must be stored in the order they arrived.
        let prepared = send::prepare_sends(core, info, requests);
        // Traced sends record their trace events from a task: not from
        // the writer's thread.
        if let Some(wire) = wire.filter(|_| !prepared.traced()) {
            let (wire, writer) = (wire.clone(), writer.clone());
            prepared.submit_then((core.clone(), info.clone()), move |answers| {
                idle_poll::answered(Arc::as_ptr(&wire) as usize);
                let answers = match wire.answer(answers) {
                    Offered::Written => return drop(permits),
                    // Woken with nothing new: it writes the rest first.
                    Offered::Cut => Vec::new(),
                    Offered::Busy(answers) => answers,
                };
                let _ = writer.send(Box::pin(async move {
                    drop(permits);
                    answers
                }));
            });
            return;
        }
        submit_awaited(prepared, (core, info), writer, permits);
    }
}

/// Hands prepared sends to the queues and their wait to the connection's
/// writer. A writer gone (its socket failed) drops the wait: the sends are
/// stored all the same, and nobody is left to answer.
fn submit_awaited(
    prepared: PreparedSends,
    (core, info): (&Arc<BrokerCore>, &Arc<ConnInfo>),
    writer: &mpsc::UnboundedSender<PendingSends>,
    permits: Vec<OwnedSemaphorePermit>,
) {
    let submitted = prepared.submit(core);
    let (core, info) = (core.clone(), info.clone());
    let _ = writer.send(Box::pin(async move {
        let answers = submitted.answers(&core, &info).await;
        drop(permits);
        answers
    }));
}

/// A group handed to the pool.
type Gathered = (Vec<SendRequest>, Vec<OwnedSemaphorePermit>);

/// Big send groups of a connection served on the writer's thread, prepared
/// and handed to the queues on the pool by one task, one after another.
/// While any is there, later groups follow them (however small), so the
/// connection's sends are still stored in the order they arrived.
struct Offload {
    pool: tokio::runtime::Handle,
    /// The task's queue, once started.
    queue: Option<mpsc::UnboundedSender<Gathered>>,
    /// Groups handed over and not yet handed to the queues.
    behind: Arc<AtomicUsize>,
}

impl Offload {
    fn new(pool: tokio::runtime::Handle) -> Self {
        Self { pool, queue: None, behind: Arc::default() }
    }

    /// Whether a group handed over earlier is not yet with the queues.
    fn busy(&self) -> bool {
        // Acquire: pairs with the task's release after its submit, so a
        // group submitted here once this reads 0 follows it in the
        // queues' mailbox.
        self.behind.load(Ordering::Acquire) > 0
    }

    fn hand(
        &mut self,
        (core, info): (&Arc<BrokerCore>, &Arc<ConnInfo>),
        writer: &mpsc::UnboundedSender<PendingSends>,
        group: Gathered,
    ) {
        let queue = self.queue.get_or_insert_with(|| {
            let (tx, mut rx) = mpsc::unbounded_channel::<Gathered>();
            let (core, info, writer, behind) = (core.clone(), info.clone(), writer.clone(), self.behind.clone());
            self.pool.spawn(async move {
                while let Some((requests, permits)) = rx.recv().await {
                    let prepared = send::prepare_sends(&core, &info, requests);
                    submit_awaited(prepared, (&core, &info), &writer, permits);
                    behind.fetch_sub(1, Ordering::Release);
                }
            });
            tx
        });
        self.behind.fetch_add(1, Ordering::Relaxed);
        if let Err(mpsc::error::SendError((requests, permits))) = queue.send(group) {
            // The task is gone (the runtime shutting down): prepared here.
            self.behind.fetch_sub(1, Ordering::Relaxed);
            submit_awaited(send::prepare_sends(core, info, requests), (core, info), writer, permits);
        }
    }
}
