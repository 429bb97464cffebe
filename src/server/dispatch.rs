//! Routes each request to its handler (`handlers::<area>::<kind>`) and
//! frames the answer. Nothing else lives here: checks, actor calls and
//! error mapping belong to the handlers.

use crate::server::context::{BrokerCore, ConnInfo};
use crate::server::handlers::pull::PulledAnswer;
use crate::server::handlers::send::SendBody;
use crate::server::handlers::{broker, groups, pull, query, retry, send, topics, trace, txn, Reply};
use brook_proto::request::QueueRef;
use brook_proto::{ErrorCode, Frame, Outbound, Request, Response, WireError};

/// How a request's answer goes out.
pub enum Answer {
    /// An answer to encode.
    Reply(Reply),
    /// A pull's answer, encoded already but for the request id.
    Pulled(PulledAnswer),
}

impl Answer {
    /// The frame that answers request `id`.
    pub fn framed(self, id: u64, max_frame: usize) -> Outbound {
        let body = match self {
            Answer::Reply(body) => body,
            Answer::Pulled(PulledAnswer { frame, offsets }) => match frame.finish(id, offsets, max_frame) {
                Ok(bytes) => return Outbound::Encoded(bytes),
                Err(e) => Err(WireError::new(ErrorCode::Internal, format!("pull answer not encoded: {e}"))),
            },
        };
        Frame::Response { id, body }.into()
    }
}

/// Answers one request, timing it for `rocketmq_rpc_latency`.
pub async fn handle(core: &BrokerCore, conn: &ConnInfo, request: Request) -> Answer {
    let (code, started) = (request.code(), std::time::Instant::now());
    let answer = route(core, conn, request).await;
    let ok = match &answer {
        Answer::Reply(reply) => reply.is_ok(),
        Answer::Pulled(_) => true,
    };
    core.metrics.rpc(code, ok, started.elapsed().as_millis() as u64);
    answer
}

async fn route(core: &BrokerCore, conn: &ConnInfo, request: Request) -> Answer {
    let reply = match request {
        Request::Hello { .. } => Err(WireError::new(ErrorCode::InvalidArgument, "hello was already received")),
        Request::Ping => Ok(Response::Pong),
        Request::CreateTopic { name, queues } => topics::create(core, &name, queues),
        Request::DeleteTopic { name } => topics::delete(core, &name).await,
        Request::ListTopics => topics::list(core),
        Request::DescribeTopic { name } => topics::describe(core, &name).await,
        Request::Send { topic, queue, messages, producer } => {
            send::one(core, conn, SendBody::Owned { topic, queue, messages, producer }).await
        }
        Request::Pull { topic, queue, offset, max_messages, max_bytes, tags, long_poll_ms, sql } => {
            let asked = pull::PullAsk { offset, max_messages, max_bytes, long_poll_ms };
            return match pull::pull(core, &topic, queue, asked, (tags.as_deref(), sql.as_deref())).await {
                Ok(pulled) => {
                    core.metrics.pulled(&conn.client.client_id, &topic, queue, pulled.offsets.0);
                    Answer::Pulled(pulled)
                }
                Err(e) => Answer::Reply(Err(e)),
            };
        }
        Request::Heartbeat(heartbeat) => groups::heartbeat(core, conn, heartbeat).await,
        Request::LeaveGroup { group, member } => groups::leave(core, &group, member).await,
        Request::CommitOffsets { group, member, offsets, generation } => {
            groups::commit(core, &group, member, offsets, generation).await
        }
        Request::ResetOffsets { group, topic, to } => groups::reset(core, &group, &topic, to).await,
        Request::GetMessage { msg_id } => query::get_message(core, &msg_id).await,
        Request::QueryByKey { topic, key, begin_ms, end_ms, max } => {
            query::by_key(core, &topic, &key, (begin_ms, end_ms), max).await
        }
        Request::OffsetsAtTime { topic, time_ms } => query::offsets_at_time(core, &topic, time_ms).await,
        Request::FetchOffset { group, member, topic, queue } => {
            groups::fetch(core, &group, member, QueueRef { topic, queue }).await
        }
        Request::LockQueue { group, member, topic, queue } => {
            groups::lock(core, &group, member, QueueRef { topic, queue }).await
        }
        Request::UnlockQueue { group, member, topic, queue } => {
            groups::unlock(core, &group, member, QueueRef { topic, queue }).await
        }
        Request::ListGroups => groups::list(core),
        Request::DescribeGroup { group } => groups::describe(core, &group).await,
        Request::SendBack { group, log_offset, to_dlq } => retry::send_back(core, &group, log_offset, to_dlq).await,
        Request::ResendDlq { group, msg_id } => retry::resend_dlq(core, &group, &msg_id).await,
        Request::RegisterProducer { group } => txn::register(core, conn, &group),
        Request::EndTransaction { group, msg_id, outcome, .. } => txn::end(core, &group, &msg_id, outcome).await,
        Request::ListTransactions => txn::list(core).await,
        Request::ReportTrace { group, traces } => trace::report(core, conn, &group, traces),
        Request::InitProducer => send::init_producer(core).await,
        Request::BrokerStatus => broker::status(core),
        Request::CheckTransaction { .. } => {
            Err(WireError::new(ErrorCode::InvalidArgument, "CheckTransaction is sent by the broker, not to it"))
        }
        Request::AssignmentChanged { .. } | Request::OffsetsReset { .. } => {
            Err(WireError::new(ErrorCode::InvalidArgument, "notices are sent by the broker, not to it"))
        }
        Request::RegisterBroker(_)
        | Request::UnregisterBroker { .. }
        | Request::GetRoute { .. }
        | Request::GetClusterInfo
        | Request::Controller(_) => {
            Err(WireError::new(ErrorCode::NotSupported, "this is a broker; routes are asked of a name server"))
        }
    };
    Answer::Reply(reply)
}
