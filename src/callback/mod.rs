//! The public server: approval links (`GET /oauth/start/<token>`, `start.rs`) and Slack's OAuth
//! callback (`GET /oauth/callback`), and nothing else.
//!
//! [`router`] builds the service so tests can drive it without a socket; [`serve`] puts it on a
//! listener with header-read timeouts, bounded request sizes and a bounded number of connections.
//! Each accepted callback runs as a custody task of its own (see `flow.rs`), at most
//! [`MAX_CUSTODIES`] at once; beyond that callbacks are shed with a 503 at once, never queued.

mod attempt;
pub mod cluster;
mod flow;
pub mod link;
pub mod links;
pub mod outcome;
pub mod pages;
pub mod query;
mod start;
pub mod state;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use axum::{
    Router,
    extract::{Path, RawQuery, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower_http::limit::RequestBodyLimitLayer;
use tracing::info;

use self::{cluster::Cluster, pages::Page};
use crate::{
    config::Config,
    metrics::Metrics,
    server::{self, Limits},
    slack::SlackApi,
};

/// Callbacks in custody at once (each holds at most one code or token).
pub const MAX_CUSTODIES: usize = 64;

/// What the callback handler needs.
pub struct Callback<S, C = cluster::KubeCluster> {
    /// Kubernetes, as the callback sees it.
    pub cluster: C,
    pub state_key: state::StateKey,
    /// Who this process is, in the exchange records it leaves on grants.
    pub instance: String,
    /// Bounds the custody tasks.
    pub slots: Arc<tokio::sync::Semaphore>,
    /// Every custody task, so that shutdown waits for them.
    pub custody: TaskTracker,
    pub slack: Arc<S>,
    pub config: Arc<Config>,
    /// Cancelled when the process is stopping: a token that cannot be stored then is revoked.
    pub shutdown: CancellationToken,
    pub metrics: Metrics,
}

/// The callback service, without a socket.
pub fn router<S: SlackApi, C: Cluster>(callback: Arc<Callback<S, C>>) -> Router {
    Router::new()
        .route("/oauth/callback", get(handle::<S, C>))
        .route("/oauth/start/{token}", get(visit::<S, C>))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(RequestBodyLimitLayer::new(1024))
        .with_state(callback)
}

async fn handle<S: SlackApi, C: Cluster>(
    State(callback): State<Arc<Callback<S, C>>>,
    RawQuery(query): RawQuery,
) -> Response {
    flow::handle(&callback, query.as_deref().unwrap_or_default())
        .await
        .into_response()
}

/// A visit to an approval link. The token is checked byte by byte before anything else; a path
/// segment that is not one (too long, another alphabet) never reaches a lookup or a log line.
async fn visit<S: SlackApi, C: Cluster>(
    State(callback): State<Arc<Callback<S, C>>>,
    Path(token): Path<String>,
) -> Response {
    start::visit(&callback, &token).await
}

async fn not_found() -> Page {
    Page::failure(
        StatusCode::NOT_FOUND,
        "Not found",
        "This server only answers approval links and Slack's OAuth callback.",
        "Copy the whole approval link again from the message you received.",
    )
}

async fn method_not_allowed() -> Page {
    Page::failure(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method not allowed",
        "Approval links and the OAuth callback only accept GET requests.",
        "Open the approval link in a browser.",
    )
}

/// Serves `router` on `listener` until `shutdown`, then lets requests in flight finish.
pub async fn serve(listener: TcpListener, router: Router, shutdown: CancellationToken) {
    let limits = Limits::CALLBACK.within_open_file_limit(server::open_file_limit());
    info!(
        max_connections = limits.max_connections,
        "callback server connection limit"
    );
    server::serve(
        listener,
        router,
        limits,
        crate::metrics::connections("callback"),
        shutdown,
    )
    .await;
    info!("callback server stopped");
}
