//! The slave's side of replication: connect to the master's `ha_listen`
//! (`master_ha_addr`, or the master the name servers list), say who it is,
//! cut its log back if the master says it ran past their common point
//! (durably marked first, carried out by a restart of the process before
//! recovery), then write what the master streams at the same offsets,
//! acknowledging how far it has written and synced. Reconnects for as long
//! as the broker runs.

use crate::actors::writer::{Replicate, WriterActor, WriterStats};
use crate::cluster::namesrv::NameServers;
use crate::error::{Error, Result};
use crate::ha::apply::Applier;
use crate::ha::meta::{MetaEvent, MetaTargets};
use crate::ha::Replication;
use crate::store::StorePaths;
use actix::Addr;
use brook_proto::ha::{HaCodec, HaFrame, HaHello, HaWelcome, HA_MAGIC, HA_VERSION};
use futures::{FutureExt, SinkExt, StreamExt};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

/// Where a run of frames starts.
struct Head {
    offset: u64,
    epoch: u32,
    epoch_start: u64,
}

type Frames = futures::stream::SplitStream<Framed<TcpStream, HaCodec>>;

/// The next run of data: the next frame (`held_back`, or the next to
/// arrive), with the frames already received that follow it (one hop to
/// the writer and one ack for all of them). A frame that does not follow
/// is held back for the next run.
async fn next_run(frames: &mut Frames, held_back: &mut Option<HaFrame>) -> Result<(Head, Run)> {
    let next = match held_back.take() {
        Some(frame) => Ok(Some(Ok(frame))),
        None => tokio::time::timeout(SILENCE, frames.next()).await,
    };
    let frame = match next {
        Ok(Some(Ok(frame))) => frame,
        Ok(Some(Err(e))) => return Err(Error::Busy(format!("replication stream: {e}"))),
        Ok(None) => return Err(Error::Busy("the master closed the stream".into())),
        Err(_) => return Err(Error::Busy(format!("the master was silent for {SILENCE:?}"))),
    };
    let HaFrame::Data { offset, epoch, epoch_start, confirmed, bytes } = frame else {
        return Err(Error::Busy("unexpected frame from the master".into()));
    };
    let mut run = Run { confirmed, bytes: Vec::from(bytes) };
    while run.bytes.len() < COALESCE_BYTES {
        let next = match frames.next().now_or_never() {
            Some(Some(Ok(next))) => next,
            Some(Some(Err(e))) => return Err(Error::Busy(format!("replication stream: {e}"))),
            // Nothing more yet, or the end (seen at the next read).
            Some(None) | None => break,
        };
        *held_back = run.take(next, offset, epoch);
        if held_back.is_some() {
            break;
        }
    }
    Ok((Head { offset, epoch, epoch_start }, run))
}

/// A write handed to the writer: the metadata its records carried.
type Written = tokio::sync::oneshot::Receiver<Result<Vec<MetaEvent>>>;

/// Most writes handed to the writer and not yet answered.
const MAX_WRITING: usize = 4;

/// Most bytes of frames already received that one write takes together.
const COALESCE_BYTES: usize = 256 << 10;

/// Frames taken together into one write.
struct Run {
    confirmed: u64,
    bytes: Vec<u8>,
}

impl Run {
    /// Adds `frame` if it follows the run (same epoch, next offset), or
    /// hands it back.
    fn take(&mut self, frame: HaFrame, offset: u64, epoch: u32) -> Option<HaFrame> {
        match frame {
            HaFrame::Data { offset: at, epoch: e, confirmed, bytes, .. }
                if e == epoch && at == offset + self.bytes.len() as u64 =>
            {
                self.confirmed = self.confirmed.max(confirmed);
                self.bytes.extend_from_slice(&bytes);
                None
            }
            other => Some(other),
        }
    }
}

/// How long connecting and the handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause between attempts.
const RETRY: Duration = Duration::from_secs(1);
/// A master silent for this long (it sends a heartbeat every half second)
/// is given up on, and the slave reconnects.
const SILENCE: Duration = Duration::from_secs(5);

/// What a slave follows its master with.
pub struct Follower {
    /// Replication state.
    pub repl: Arc<Replication>,
    /// The writer (replicated bytes go through it).
    pub writer: Addr<WriterActor>,
    /// Where the log ends.
    pub stats: Arc<WriterStats>,
    /// Makes replicated records readable.
    pub applier: Arc<Mutex<Applier>>,
    /// Where the metadata the records carry goes.
    pub meta: MetaTargets,
    /// The store (for a cut).
    pub paths: StorePaths,
    /// Who this slave is.
    pub hello: HaHello,
    /// `master_ha_addr`, if set.
    pub master_addr: Option<String>,
    /// Otherwise the name servers say.
    pub names: Option<Arc<NameServers>>,
    /// The address connections leave from (the broker's own, so that
    /// each broker of a machine is told apart by address).
    pub local_ip: Option<std::net::IpAddr>,
    /// Logger.
    pub logger: slog::Logger,
}

impl Follower {
    /// Follows the master until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let mut last_error = String::new();
        loop {
            let outcome = tokio::select! {
                outcome = self.session() => outcome,
                () = stop.cancelled() => return,
            };
            self.repl.set_upstream(|up| up.connected = false);
            if let Err(e) = outcome {
                let msg = e.to_string();
                if msg != last_error {
                    slog::warn!(self.logger, "not replicating from the master"; "error" => &msg);
                    last_error = msg;
                }
            }
            tokio::select! {
                () = tokio::time::sleep(RETRY) => {}
                () = stop.cancelled() => return,
            }
        }
    }

    /// The master's replication address.
    async fn master(&self) -> Result<String> {
        if let Some(addr) = &self.master_addr {
            return Ok(addr.clone());
        }
        if self.repl.controlled() {
            // Only the controller's word counts: a name server may still
            // list a deposed master.
            return self
                .repl
                .controller_master()
                .map(|(addr, _)| addr)
                .ok_or_else(|| Error::Busy("the controller names no master yet".into()));
        }
        let names = self.names.as_ref().ok_or_else(|| Error::Config("no master_ha_addr and no name servers".into()))?;
        let brokers = names.cluster().await.map_err(|e| Error::Busy(format!("name servers: {e}")))?;
        brokers
            .into_iter()
            .find(|b| {
                b.cluster == self.hello.cluster
                    && b.broker_name == self.hello.broker_name
                    && b.broker_id == brook_proto::route::MASTER_ID
            })
            .map(|b| b.replica.ha_addr)
            .filter(|addr| !addr.is_empty())
            .ok_or_else(|| Error::Busy(format!("no master of {} is registered", self.hello.broker_name)))
    }

    async fn connect(&self, addr: &str) -> std::io::Result<TcpStream> {
        brook_client::connection::dial(addr, self.local_ip).await
    }

    /// One connection to the master, until it fails.
    async fn session(&self) -> Result<()> {
        let addr = self.master().await?;
        let io = |e: std::io::Error| Error::io(format!("replicate from {addr}"), e);
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, self.connect(&addr))
            .await
            .map_err(|_| Error::Busy(format!("connect to {addr} timed out")))?
            .map_err(io)?;
        let _ = stream.set_nodelay(true);
        let mut framed = Framed::new(stream, HaCodec);
        let end = self.stats.write_pos();
        let hello = HaHello { end, epochs: self.repl.epochs(), ..self.hello.clone() };
        framed.send(HaFrame::Hello(hello)).await.map_err(|e| Error::Busy(e.to_string()))?;
        let welcome = match tokio::time::timeout(CONNECT_TIMEOUT, framed.next()).await {
            Ok(Some(Ok(HaFrame::Welcome(welcome)))) => welcome,
            Ok(Some(Ok(HaFrame::Refused(reason)))) => return Err(Error::Config(format!("master refused: {reason}"))),
            Ok(Some(Err(e))) => return Err(Error::Busy(e.to_string())),
            _ => return Err(Error::Busy(format!("no welcome from {addr}"))),
        };
        if let Some((_, epoch)) = self.repl.controller_master().filter(|_| self.repl.controlled()) {
            if welcome.epoch < epoch {
                return Err(Error::Busy(format!(
                    "{addr} is master of epoch {}, the controller's master is of epoch {epoch}",
                    welcome.epoch
                )));
            }
        }
        if welcome.start < end {
            return Err(self.cut_and_restart(&welcome, end));
        }
        if welcome.start > end {
            return Err(Error::Config(format!("master starts at {} past this log's end {end}", welcome.start)));
        }
        slog::info!(self.logger, "replicating from the master"; "master" => &addr, "from" => end,
            "master_end" => welcome.master_end, "epoch" => welcome.epoch);
        self.repl.set_upstream(|up| {
            up.addr = Some(addr.clone());
            up.connected = true;
            up.master_end = welcome.master_end;
            up.master_epoch = welcome.epoch;
        });
        self.follow(framed, end).await
    }

    /// Streams until the connection fails: writes every frame's bytes, then
    /// acknowledges; acknowledges again whenever the log syncs.
    async fn follow(&self, framed: Framed<TcpStream, HaCodec>, mut end: u64) -> Result<()> {
        let (mut sink, mut frames) = framed.split();
        let (ack_tx, mut ack_rx) = tokio::sync::watch::channel(());
        let stats = self.stats.clone();
        let acks = async move {
            // Each wake sends the newest position; bursts coalesce.
            while ack_rx.changed().await.is_ok() {
                let synced = stats.synced_pos.load(Ordering::Relaxed);
                let ack = HaFrame::Ack { written: stats.write_pos(), synced };
                if sink.send(ack).await.is_err() {
                    return;
                }
            }
        };
        // Under sync flush the synced end moves after the write: it is
        // acknowledged as it moves.
        let mut progress = self.stats.progress.subscribe();
        let sync_flush = self.repl.syncs_each_write();
        let synced_moves = {
            let ack_tx = ack_tx.clone();
            async move {
                if !sync_flush {
                    return std::future::pending().await;
                }
                while progress.changed().await.is_ok() {
                    let _ = ack_tx.send(());
                }
            }
        };
        let take = async {
            let mut held_back = None;
            // Writes handed to the writer, oldest first: the next frames are
            // read while they are written.
            let mut writing: VecDeque<Written> = VecDeque::new();
            loop {
                if held_back.is_none() && !writing.is_empty() {
                    held_back = match frames.next().now_or_never() {
                        Some(Some(Ok(frame))) => Some(frame),
                        Some(Some(Err(e))) => return Err(Error::Busy(format!("replication stream: {e}"))),
                        Some(None) | None => None,
                    };
                }
                if writing.len() >= MAX_WRITING || (held_back.is_none() && !writing.is_empty()) {
                    if let Some(written) = writing.pop_front() {
                        let events = written.await.map_err(|_| Error::ShuttingDown)??;
                        for event in events {
                            self.meta.apply(event).await?;
                        }
                        let _ = ack_tx.send(());
                    }
                    continue;
                }
                let (Head { offset, epoch, epoch_start }, run) = next_run(&mut frames, &mut held_back).await?;
                let len = run.bytes.len() as u64;
                self.repl.set_upstream(|up| {
                    up.confirmed = run.confirmed;
                    up.master_end = up.master_end.max(offset + len);
                });
                if epoch != self.repl.epoch() {
                    self.repl.follow_epoch(epoch, epoch_start)?;
                }
                if len == 0 {
                    if writing.is_empty() {
                        let _ = ack_tx.send(());
                    }
                    continue;
                }
                if offset != end {
                    return Err(Error::Busy(format!("master sent bytes at {offset}, the log ends at {end}")));
                }
                writing.push_back(self.write(offset, run.bytes));
                end = offset + len;
            }
        };
        tokio::select! {
            outcome = take => outcome,
            () = acks => Err(Error::Busy("the master stopped taking acks".into())),
            () = synced_moves => Ok(()),
        }
    }

    /// Hands replicated bytes to the writer, which writes them and makes
    /// their records readable; the answer is the metadata they carried.
    fn write(&self, offset: u64, bytes: Vec<u8>) -> Written {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let applier = self.applier.clone();
        // Shared with the applier, which scans the records here instead of
        // reading them back from the file it just wrote.
        let bytes = bytes::Bytes::from(bytes);
        let held = bytes.clone();
        let done = Box::new(move |written: Result<u64>| {
            let _ = tx.send(written.and_then(|end| applier.lock().advance(end, (&held, offset))));
        });
        self.writer.do_send(Replicate { offset, bytes, done });
        rx
    }

    /// The log ran past the point it shares with the master: marks the cut
    /// durably and starts this process again, which carries it out before
    /// recovery (a crash at any step leaves the mark, and the next start
    /// cuts). Returns only if the restart failed.
    fn cut_and_restart(&self, welcome: &HaWelcome, end: u64) -> Error {
        slog::warn!(self.logger, "this log ran past the master's: cutting it and restarting";
            "cut_at" => welcome.start, "log_end" => end, "master_epoch" => welcome.epoch);
        if let Err(e) = crate::store::truncation::mark(&self.paths, welcome.start) {
            return e;
        }
        crate::ha::restart_process("restart to cut the log")
    }
}

/// The hello a slave of `config` opens with (its log end and epochs are
/// filled in at each connection).
pub fn hello_of(config: &crate::config::Config) -> HaHello {
    HaHello {
        magic: HA_MAGIC,
        version: HA_VERSION,
        cluster: config.cluster.clone(),
        broker_name: config.broker_name.clone(),
        broker_id: config.broker_id,
        segment_bytes: config.store.segment_bytes,
        end: 0,
        epochs: Vec::new(),
    }
}
