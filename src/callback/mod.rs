//! The public callback server: `GET /oauth/callback` and nothing else.
//!
//! [`router`] builds the service so tests can drive it without a socket; [`serve`] puts it on a
//! listener with header-read timeouts, bounded request sizes and a bounded number of concurrent
//! requests.

mod flow;
pub mod pages;
pub mod state;

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{RawQuery, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use kube::{Client, runtime::events::Recorder};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower_http::limit::RequestBodyLimitLayer;
use tracing::{debug, info, warn};

use self::pages::Page;
use crate::{config::Config, metrics::Metrics, slack::SlackApi};

/// The longest request line plus headers accepted, in bytes.
const MAX_HEADER_BYTES: usize = 16 * 1024;
/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests served at once; more wait for a slot.
const MAX_CONCURRENT_REQUESTS: usize = 64;

/// What the callback handler needs.
pub struct Callback<S> {
    pub client: Client,
    pub slack: Arc<S>,
    pub config: Arc<Config>,
    pub recorder: Recorder,
    /// Cancelled when the process is stopping: a token that cannot be stored then is revoked.
    pub shutdown: CancellationToken,
    pub metrics: Metrics,
}

/// The callback service, without a socket.
pub fn router<S: SlackApi>(callback: Arc<Callback<S>>) -> Router {
    Router::new()
        .route("/oauth/callback", get(handle::<S>))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(RequestBodyLimitLayer::new(1024))
        .layer(tower::limit::ConcurrencyLimitLayer::new(
            MAX_CONCURRENT_REQUESTS,
        ))
        .with_state(callback)
}

async fn handle<S: SlackApi>(
    State(callback): State<Arc<Callback<S>>>,
    RawQuery(query): RawQuery,
) -> Response {
    flow::handle(&callback, query.as_deref().unwrap_or_default())
        .await
        .into_response()
}

async fn not_found() -> Page {
    Page::failure(
        StatusCode::NOT_FOUND,
        "Not found",
        "This server only answers Slack's OAuth callback.",
        "Open the authorization link from the grant's status.authorizationURL instead.",
    )
}

async fn method_not_allowed() -> Page {
    Page::failure(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method not allowed",
        "The OAuth callback only accepts GET requests.",
        "Open the authorization link from the grant's status.authorizationURL instead.",
    )
}

/// Serves `router` on `listener` until `shutdown`, then lets requests in flight finish.
pub async fn serve(listener: TcpListener, router: Router, shutdown: CancellationToken) {
    let connections = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(error = &error as &dyn std::error::Error, "failed to accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(MAX_HEADER_BYTES);
            builder
                .http2()
                .max_header_list_size(MAX_HEADER_BYTES as u32);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        debug!(%peer, error = %error, "connection ended with an error");
                    }
                }
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    connections.close();
    connections.wait().await;
    info!("callback server stopped");
}
