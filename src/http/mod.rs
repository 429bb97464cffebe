//! The HTTP listener (`http.listen`, actix-web): the console at `/` and its
//! JSON under `/api/` ([`console`]), `GET /metrics` in the Prometheus text
//! format ([`exposition`]), `GET /healthz` (the process answers) and
//! `GET /readyz` (recovered, serving, and taking writes).
//! It runs on a thread of its own, so a slow scrape never holds a
//! connection's thread.

pub mod console;
pub mod exposition;

use crate::error::{Error, Result};
use crate::server::context::BrokerCore;
use actix_web::{web, App, HttpResponse, HttpServer};
use std::net::SocketAddr;
use std::sync::Arc;

/// The running listener.
pub struct Http {
    /// The bound address.
    pub local_addr: SocketAddr,
    handle: actix_web::dev::ServerHandle,
}

struct State {
    core: Arc<BrokerCore>,
    backend: &'static str,
}

/// Binds `listen` and serves until [`Http::stop`].
pub fn start(listen: &str, core: Arc<BrokerCore>, backend: &'static str) -> Result<Http> {
    let state = web::Data::new(State { core, backend });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .configure(console::routes)
            .route("/metrics", web::get().to(metrics))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .bind(listen)
    .map_err(|e| Error::Io { context: format!("bind http listener {listen}"), source: e })?;
    let local_addr = *server
        .addrs()
        .first()
        .ok_or_else(|| Error::InvalidArgument(format!("http listener {listen} bound no address")))?;
    let server = server.run();
    let handle = server.handle();
    actix::spawn(async move {
        let _ = server.await;
    });
    Ok(Http { local_addr, handle })
}

impl Http {
    /// Stops serving.
    pub async fn stop(self) {
        self.handle.stop(true).await;
    }
}

async fn metrics(state: web::Data<State>) -> HttpResponse {
    match exposition::render(&state.core, state.backend).await {
        Ok(page) => {
            HttpResponse::Ok().content_type("application/openmetrics-text; version=1.0.0; charset=utf-8").body(page)
        }
        Err(_) => HttpResponse::InternalServerError().body("could not encode the metrics\n"),
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().body("ok\n")
}

async fn readyz(state: web::Data<State>) -> HttpResponse {
    let core = &state.core;
    let stats = &core.writer_stats;
    let why = if core.stopping.is_cancelled() {
        Some("stopping".to_string())
    } else if let Some(poisoned) = stats.poisoned() {
        Some(format!("writes refused until restart: {poisoned}"))
    } else {
        stats.disk_full_since().map(|_| "disk full: writes refused".to_string())
    };
    match why {
        None => HttpResponse::Ok().body("ready\n"),
        Some(why) => HttpResponse::ServiceUnavailable().body(format!("{why}\n")),
    }
}
