//! The console: a single page (`console.html`, embedded in the binary, no
//! build step) and the JSON it reads under `/api/`. Every action goes
//! through the same request handlers as brookctl's requests, so it is
//! refused with the same errors; actions that change anything are refused
//! unless `http.console_writes = true` (the console has no login yet).

use super::State;
use crate::server::handlers::{broker, groups, query, retry, topics, Reply};
use actix_web::{web, HttpResponse};
use brook_proto::consumer::ResetTo;
use brook_proto::{ErrorCode, Response, WireError};
use serde::Deserialize;
use serde_json::json;

/// The page.
const PAGE: &str = include_str!("console.html");

/// Routes of the console and its API.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(page))
        .route("/api/overview", web::get().to(overview))
        .route("/api/topics", web::get().to(list_topics))
        .route("/api/topics", web::post().to(create_topic))
        .route("/api/topics/{name}", web::get().to(describe_topic))
        .route("/api/topics/{name}", web::delete().to(delete_topic))
        .route("/api/topics/{name}/route", web::get().to(topic_route))
        .route("/api/groups", web::get().to(list_groups))
        .route("/api/groups/{group}", web::get().to(describe_group))
        .route("/api/groups/{group}/reset", web::post().to(reset_group))
        .route("/api/messages/id/{id}", web::get().to(message_by_id))
        .route("/api/messages/key", web::get().to(messages_by_key))
        .route("/api/messages/time", web::get().to(offsets_at_time))
        .route("/api/messages/trace/{id}", web::get().to(trace))
        .route("/api/dlq/{group}/resend", web::post().to(resend_dead_letter))
        .route("/api/cluster", web::get().to(cluster));
}

async fn page() -> HttpResponse {
    HttpResponse::Ok().content_type("text/html; charset=utf-8").body(PAGE)
}

/// A handler's answer as JSON: the response's payload, or the wire error
/// with a status that fits it.
fn answer(reply: Reply) -> HttpResponse {
    match reply {
        Ok(response) => HttpResponse::Ok().json(payload(response)),
        Err(e) => refused(&e),
    }
}

fn payload(response: Response) -> serde_json::Value {
    let value = match response {
        Response::Topic(info) => serde_json::to_value(info),
        Response::Topics(list) => serde_json::to_value(list),
        Response::Groups(list) => serde_json::to_value(list),
        Response::Group(info) => serde_json::to_value(info),
        Response::Message(m) => serde_json::to_value(m),
        Response::Messages(list) => serde_json::to_value(list),
        Response::QueueOffsets(list) => serde_json::to_value(list),
        Response::Status(status) => serde_json::to_value(status),
        Response::Sent(acks) => serde_json::to_value(acks),
        Response::Done => Ok(json!({ "done": true })),
        other => Ok(json!({ "answer": format!("{other:?}") })),
    };
    value.unwrap_or_else(|e| json!({ "error": e.to_string() }))
}

fn refused(e: &WireError) -> HttpResponse {
    let body = json!({ "error": format!("{:?}", e.code), "message": e.message });
    match e.code {
        ErrorCode::TopicNotFound | ErrorCode::GroupNotFound | ErrorCode::MessageNotFound => {
            HttpResponse::NotFound().json(body)
        }
        ErrorCode::Internal | ErrorCode::StorageFailure => HttpResponse::InternalServerError().json(body),
        ErrorCode::BrokerBusy | ErrorCode::DiskFull | ErrorCode::ShuttingDown => {
            HttpResponse::ServiceUnavailable().json(body)
        }
        _ => HttpResponse::BadRequest().json(body),
    }
}

/// The refusal of a change while `http.console_writes` is off.
fn read_only(state: &State) -> Option<HttpResponse> {
    if state.core.config.http.console_writes {
        return None;
    }
    Some(HttpResponse::Forbidden().json(json!({
        "error": "ConsoleReadOnly",
        "message": "the console only reads: set http.console_writes = true (BROOK_HTTP__CONSOLE_WRITES) to allow changes",
    })))
}

async fn overview(state: web::Data<State>) -> HttpResponse {
    let core = &state.core;
    let status = match broker::status(core) {
        Ok(response) => payload(response),
        Err(e) => return refused(&e),
    };
    // The retention horizon: when the oldest message still on disk was
    // stored (none while the log is empty).
    let (min, end) = (core.reader.segments().min_offset(), core.writer_stats.write_pos());
    let reader = core.reader.clone();
    let oldest_ms = if min < end {
        tokio::task::spawn_blocking(move || reader.read_at(min).map(|r| r.head.store_ts).ok()).await.ok().flatten()
    } else {
        None
    };
    HttpResponse::Ok().json(json!({
        "status": status,
        "oldest_ms": oldest_ms,
        "history": core.traffic.history(),
        "connections": core.metrics.connections.load(std::sync::atomic::Ordering::Relaxed),
        "retention_hours": core.config.store.retention_hours,
        "disk_max_used_ratio": core.config.store.disk_max_used_ratio,
        "console_writes": core.config.http.console_writes,
        "backend": state.backend,
    }))
}

/// Topics with their queues and the messages they hold now.
async fn list_topics(state: web::Data<State>) -> HttpResponse {
    let list = match topics::list(&state.core) {
        Ok(Response::Topics(list)) => list,
        Ok(other) => return HttpResponse::Ok().json(payload(other)),
        Err(e) => return refused(&e),
    };
    let mut rows = Vec::with_capacity(list.len());
    for t in list {
        let messages = match topics::describe(&state.core, &t.name).await {
            Ok(Response::Topic(info)) => info.queue_stats.iter().map(|q| q.max_offset - q.min_offset).sum::<u64>(),
            _ => 0,
        };
        rows.push(json!({ "name": t.name, "queues": t.queues, "messages": messages }));
    }
    HttpResponse::Ok().json(rows)
}

/// The topic's route as the name servers give it (null when standalone).
async fn topic_route(state: web::Data<State>, name: web::Path<String>) -> HttpResponse {
    let names = state.core.config.namesrv();
    if names.is_empty() {
        return HttpResponse::Ok().json(serde_json::Value::Null);
    }
    let router = match brook_client::Router::connect(brook_client::Endpoint::NameServers(names), "brook-console").await
    {
        Ok(router) => router,
        Err(e) => {
            return HttpResponse::ServiceUnavailable().json(json!({ "error": "NameServers", "message": e.to_string() }))
        }
    };
    match router.route(&name).await {
        Ok(route) => HttpResponse::Ok().json(route),
        Err(brook_client::ClientError::Broker(e)) => refused(&e),
        Err(e) => HttpResponse::ServiceUnavailable().json(json!({ "error": "NameServers", "message": e.to_string() })),
    }
}

#[derive(Deserialize)]
struct NewTopic {
    name: String,
    queues: u32,
}

async fn create_topic(state: web::Data<State>, body: web::Json<NewTopic>) -> HttpResponse {
    if let Some(refusal) = read_only(&state) {
        return refusal;
    }
    answer(topics::create(&state.core, &body.name, body.queues))
}

async fn describe_topic(state: web::Data<State>, name: web::Path<String>) -> HttpResponse {
    answer(topics::describe(&state.core, &name).await)
}

async fn delete_topic(state: web::Data<State>, name: web::Path<String>) -> HttpResponse {
    if let Some(refusal) = read_only(&state) {
        return refusal;
    }
    answer(topics::delete(&state.core, &name).await)
}

async fn list_groups(state: web::Data<State>) -> HttpResponse {
    answer(groups::list(&state.core))
}

async fn describe_group(state: web::Data<State>, group: web::Path<String>) -> HttpResponse {
    answer(groups::describe(&state.core, &group).await)
}

#[derive(Deserialize)]
struct Reset {
    topic: String,
    /// ms since the epoch.
    time_ms: i64,
}

async fn reset_group(state: web::Data<State>, group: web::Path<String>, body: web::Json<Reset>) -> HttpResponse {
    if let Some(refusal) = read_only(&state) {
        return refusal;
    }
    answer(groups::reset(&state.core, &group, &body.topic, ResetTo::Time(body.time_ms)).await)
}

async fn message_by_id(state: web::Data<State>, id: web::Path<String>) -> HttpResponse {
    answer(query::get_message(&state.core, &id).await)
}

#[derive(Deserialize)]
struct ByKey {
    topic: String,
    key: String,
    max: Option<u32>,
}

async fn messages_by_key(state: web::Data<State>, q: web::Query<ByKey>) -> HttpResponse {
    answer(query::by_key(&state.core, &q.topic, &q.key, (0, i64::MAX), q.max.unwrap_or(64)).await)
}

#[derive(Deserialize)]
struct AtTime {
    topic: String,
    time_ms: i64,
}

async fn offsets_at_time(state: web::Data<State>, q: web::Query<AtTime>) -> HttpResponse {
    answer(query::offsets_at_time(&state.core, &q.topic, q.time_ms).await)
}

/// A message's trace events (sent with tracing on), oldest first.
async fn trace(state: web::Data<State>, id: web::Path<String>) -> HttpResponse {
    let records = match query::by_key(&state.core, brook_proto::system::TRACE_TOPIC, &id, (0, i64::MAX), 1024).await {
        Ok(Response::Messages(records)) => records,
        Ok(_) => Vec::new(),
        Err(e) if e.code == ErrorCode::TopicNotFound => Vec::new(),
        Err(e) => return refused(&e),
    };
    let mut events: Vec<serde_json::Value> =
        records.iter().filter_map(|r| serde_json::from_slice(&r.message.body).ok()).collect();
    events.sort_by_key(|e| e["time"].as_i64().unwrap_or(0));
    HttpResponse::Ok().json(events)
}

#[derive(Deserialize)]
struct Resend {
    id: String,
}

async fn resend_dead_letter(
    state: web::Data<State>,
    group: web::Path<String>,
    body: web::Json<Resend>,
) -> HttpResponse {
    if let Some(refusal) = read_only(&state) {
        return refusal;
    }
    answer(retry::resend_dlq(&state.core, &group, &body.id).await)
}

/// Who this broker is, and (in a cluster) every broker the name servers
/// know.
async fn cluster(state: web::Data<State>) -> HttpResponse {
    let core = &state.core;
    let names = core.config.namesrv();
    let mut brokers = serde_json::Value::Null;
    if !names.is_empty() {
        let endpoint = brook_client::Endpoint::NameServers(names.clone());
        if let Ok(router) = brook_client::Router::connect(endpoint, "brook-console").await {
            if let Ok(Response::Cluster(list)) = router.ask_names(brook_proto::Request::GetClusterInfo).await {
                brokers = serde_json::to_value(list).unwrap_or_default();
            }
        }
    }
    HttpResponse::Ok().json(json!({
        "cluster": core.identity.cluster,
        "broker_name": core.identity.broker_name,
        "broker_id": core.identity.broker_id,
        "addr": core.identity.addr.to_string(),
        "namesrv": names,
        "brokers": brokers,
    }))
}
