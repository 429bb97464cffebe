//! The master's side of replication: the `ha_listen` listener. A
//! connection counts only after a valid hello from a slave of this replica
//! set (same cluster and name, id ≥ 1, same segment size); garbage or a
//! stranger is dropped and changes nothing. Then the master streams its
//! log from the point the two logs share, as fast as the slave takes it,
//! each frame within one segment and one epoch, and takes the slave's acks.

use crate::actors::writer::WriterStats;
use crate::error::{IoContext, Result};
use crate::ha::Replication;
use crate::store::commitlog::LogReader;
use crate::store::epochs::consistent_point;
use crate::store::segment::SegmentSet;
use brook_proto::ha::{EpochEntry, HaCodec, HaFrame, HaHello, HaWelcome, HA_MAGIC, HA_VERSION};
use futures::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

/// Most log bytes in one frame.
pub const CHUNK: u64 = 1 << 20;
/// How long a connection may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// An idle stream sends an empty frame this often (the slave acks it,
/// which keeps a caught-up slave in the set).
const HEARTBEAT: Duration = Duration::from_millis(500);

/// What the listener serves from.
#[derive(Clone)]
pub struct Source {
    /// Replication state.
    pub repl: Arc<Replication>,
    /// The log's segments.
    pub segments: Arc<SegmentSet>,
    /// Reads of them.
    pub reader: LogReader,
    /// Where the log ends.
    pub stats: Arc<WriterStats>,
    /// This replica set's cluster and name.
    pub cluster: String,
    /// Replica set name.
    pub broker_name: String,
    /// Why each slave was last refused.
    pub refused: Arc<parking_lot::Mutex<std::collections::HashMap<u64, String>>>,
    /// Logger.
    pub logger: slog::Logger,
}

/// Binds `addr` (accepting on `runtime`) and serves each slave on `serve_on`
/// — the writer's thread: the log's progress wakes the stream there, and
/// the slave's acks reach the writer, without a hop between threads —
/// until `stop`.
pub async fn listen(
    addr: SocketAddr,
    source: Source,
    (runtime, serve_on): (&tokio::runtime::Handle, actix::ArbiterHandle),
    stop: CancellationToken,
) -> Result<SocketAddr> {
    let listener = runtime
        .spawn(async move { TcpListener::bind(addr).await })
        .await
        .map_err(|e| crate::error::Error::Config(e.to_string()))?
        .ctx(|| format!("bind ha_listen {addr}"))?;
    let local = listener.local_addr().ctx(|| "ha_listen address".into())?;
    slog::info!(source.logger, "replication listening"; "ha_addr" => %local);
    runtime.spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = stop.cancelled() => return,
            };
            match accepted.and_then(|(stream, peer)| Ok((stream.into_std()?, peer))) {
                Ok((stream, peer)) => {
                    let (source, stop) = (source.clone(), stop.clone());
                    serve_on.spawn(async move {
                        // Registered anew with the serving thread's runtime.
                        match TcpStream::from_std(stream) {
                            Ok(stream) => serve(stream, peer, source, stop).await,
                            Err(e) => slog::warn!(source.logger, "replication connection lost"; "error" => %e),
                        }
                    });
                }
                Err(e) => {
                    slog::warn!(source.logger, "replication accept failed"; "error" => %e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(local)
}

/// Why a hello is not one of this replica set's slaves.
fn check_hello(hello: &HaHello, source: &Source) -> std::result::Result<(), String> {
    if hello.magic != HA_MAGIC || hello.version != HA_VERSION {
        return Err(format!("replication protocol {} not spoken here (want {HA_VERSION})", hello.version));
    }
    if hello.cluster != source.cluster || hello.broker_name != source.broker_name {
        return Err(format!(
            "this is the master of {}/{}, not of {}/{}",
            source.cluster, source.broker_name, hello.cluster, hello.broker_name
        ));
    }
    if hello.broker_id == brook_proto::route::MASTER_ID {
        return Err("broker id 0 is the master's; a slave's is 1 or more".into());
    }
    if hello.segment_bytes != source.segments.segment_bytes() {
        return Err(format!(
            "store.segment_bytes {} differs from the master's {}",
            hello.segment_bytes,
            source.segments.segment_bytes()
        ));
    }
    Ok(())
}

/// Where streaming to `hello`'s slave starts, or why it cannot.
fn start_point(hello: &HaHello, source: &Source, epochs: &[EpochEntry], end: u64) -> std::result::Result<u64, String> {
    let start = consistent_point(&hello.epochs, hello.end, epochs, end)
        .ok_or_else(|| format!("the slave's log (epochs {:?}) shares no epoch with the master's", hello.epochs))?;
    let min = source.segments.min_offset();
    if start < min && end > start {
        return Err(format!(
            "the slave's log ends at {start}, below the oldest offset the master keeps ({min}): \
             start the slave from a copy of the master's store"
        ));
    }
    Ok(start)
}

async fn serve(stream: TcpStream, peer: SocketAddr, source: Source, stop: CancellationToken) {
    let _ = stream.set_nodelay(true);
    let mut framed = Framed::new(stream, HaCodec);
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, framed.next()).await {
        Ok(Some(Ok(HaFrame::Hello(hello)))) => hello,
        outcome => {
            let why = match outcome {
                Err(_) => "no hello in time".to_string(),
                Ok(Some(Err(e))) => e.to_string(),
                Ok(Some(Ok(_))) => "a frame other than hello first".to_string(),
                Ok(None) => "closed".to_string(),
            };
            slog::warn!(source.logger, "replication connection dropped: not a slave's hello"; "peer" => %peer,
                "why" => why);
            return;
        }
    };
    let epochs = source.repl.epochs();
    let end = source.stats.write_pos();
    let start = match check_hello(&hello, &source).and_then(|()| start_point(&hello, &source, &epochs, end)) {
        Ok(start) => start,
        Err(reason) => {
            // A slave retries every second: said once per reason.
            let fresh = source.refused.lock().insert(hello.broker_id, reason.clone()).as_ref() != Some(&reason);
            if fresh {
                slog::warn!(source.logger, "slave refused"; "peer" => %peer, "broker_id" => hello.broker_id,
                    "reason" => &reason);
            }
            let _ = framed.send(HaFrame::Refused(reason)).await;
            return;
        }
    };
    let welcome = HaWelcome { epoch: source.repl.epoch(), epochs: epochs.clone(), master_end: end, start };
    if framed.send(HaFrame::Welcome(welcome)).await.is_err() {
        return;
    }
    let id = hello.broker_id;
    source.refused.lock().remove(&id);
    slog::info!(source.logger, "slave connected"; "broker_id" => id, "peer" => %peer, "from" => start,
        "slave_end" => hello.end, "master_end" => end);
    let generation = source.repl.connected(id, peer.to_string(), start);
    let (sink, mut acks) = framed.split();
    let take_acks = async {
        while let Some(Ok(HaFrame::Ack { written, synced })) = acks.next().await {
            source.repl.acked(id, written, synced);
        }
    };
    tokio::select! {
        () = take_acks => {}
        outcome = stream_log(sink, &source, (id, start), &epochs) => {
            if let Err(e) = outcome {
                slog::info!(source.logger, "replication stream ended"; "broker_id" => id, "error" => %e);
            }
        }
        () = stop.cancelled() => {}
    }
    source.repl.disconnected(id, generation);
    slog::info!(source.logger, "slave disconnected"; "broker_id" => id, "peer" => %peer);
}

/// The epoch `pos` belongs to and where the next one starts.
fn epoch_at(epochs: &[EpochEntry], pos: u64) -> (EpochEntry, Option<u64>) {
    let i = epochs.iter().rposition(|e| e.start <= pos).unwrap_or(0);
    let entry = epochs.get(i).copied().unwrap_or(EpochEntry { epoch: 0, start: 0 });
    (entry, epochs.get(i + 1).map(|e| e.start))
}

/// Sends the log from `start` on, forever (until the connection fails).
async fn stream_log(
    mut sink: futures::stream::SplitSink<Framed<TcpStream, HaCodec>, HaFrame>,
    source: &Source,
    (id, start): (u64, u64),
    epochs: &[EpochEntry],
) -> std::io::Result<()> {
    let mut pos = start;
    let mut progress = source.stats.progress.subscribe();
    let seg = source.segments.segment_bytes();
    loop {
        progress.borrow_and_update();
        let end = source.stats.write_pos();
        if pos >= end {
            tokio::select! {
                changed = progress.changed() => if changed.is_err() { return Ok(()) },
                () = tokio::time::sleep(HEARTBEAT) => {
                    let (epoch, _) = epoch_at(epochs, pos);
                    let frame = HaFrame::Data { offset: pos, epoch: epoch.epoch, epoch_start: epoch.start,
                        confirmed: source.repl.confirmed(), bytes: bytes::Bytes::new() };
                    sink.send(frame).await.map_err(std::io::Error::other)?;
                    source.repl.sent(id, pos, true);
                }
            }
            continue;
        }
        let (epoch, next_epoch) = epoch_at(epochs, pos);
        let seg_end = pos - pos % seg + seg;
        let upto = end.min(pos + CHUNK).min(seg_end).min(next_epoch.unwrap_or(u64::MAX));
        let bytes = read(&source.reader, pos, upto).await?;
        // What the page cache held may be less than asked: the rest is the
        // next frame's.
        let upto = pos + bytes.len() as u64;
        let frame = HaFrame::Data {
            offset: pos,
            epoch: epoch.epoch,
            epoch_start: epoch.start,
            confirmed: source.repl.confirmed(),
            bytes: bytes.into(),
        };
        sink.send(frame).await.map_err(std::io::Error::other)?;
        // Caught up if the frame reached the end as it was when it was
        // read (Kafka's rule): under steady load the end always moves on.
        source.repl.sent(id, upto, upto >= end);
        pos = upto;
    }
}

/// The log's bytes from `from` (within one segment, before `to`): what
/// the page cache holds, read right here; if it holds none of it (a slave
/// far behind), read on the blocking pool — the writer's thread never
/// waits for the disk.
async fn read(reader: &LogReader, from: u64, to: u64) -> std::io::Result<Vec<u8>> {
    let len = (to - from) as usize;
    let cached = reader.read_nowait(from, len).map_err(std::io::Error::other)?;
    if !cached.is_empty() {
        return Ok(cached);
    }
    let segments = reader.segments().clone();
    tokio::task::spawn_blocking(move || {
        let base = segments.base_of(from);
        let file = segments
            .file(base)
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("no segment holds {from}")))?;
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, from - base)?;
        Ok(buf)
    })
    .await
    .map_err(std::io::Error::other)?
}
