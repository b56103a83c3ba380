//! The operator's Kubernetes clients. Watches are few and long-lived, so they share one plain
//! client. Every other request goes through a client that lets at most
//! [`MAX_REQUESTS_IN_FLIGHT`] run at once and queues the rest: kube's HTTP/1.1 connection pool
//! opens a connection per request in flight, so this bounds the connections (and their
//! buffers) a restart or a burst of grants can open, instead of one per grant.

use kube::{Client, client::ClientBuilder};
use tower::limit::ConcurrencyLimitLayer;

/// Requests at once on one bounded client. The API server's fairness limits answer 429 well
/// before a single client needs more.
pub const MAX_REQUESTS_IN_FLIGHT: usize = 16;

/// A client for requests (not watches): at most [`MAX_REQUESTS_IN_FLIGHT`] in flight.
pub fn bounded(config: kube::Config) -> Result<Client, kube::Error> {
    let builder = ClientBuilder::try_from(config)?;
    Ok(builder
        .with_layer(&ConcurrencyLimitLayer::new(MAX_REQUESTS_IN_FLIGHT))
        .build())
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        time::Duration,
    };

    use k8s_openapi::api::core::v1::Secret;
    use kube::Api;
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;

    /// An API server stand-in that answers every GET with a 404 Status after a pause, and
    /// counts the connections it accepts.
    async fn slow_server(connections: Arc<AtomicUsize>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 8192];
                    loop {
                        match socket.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        let body = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#;
                        let answer = format!(
                            "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if socket.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        format!("http://{address}")
    }

    #[tokio::test]
    async fn two_hundred_requests_at_once_open_no_more_connections_than_the_bound() {
        // As main does: the process's TLS provider, which building any kube client needs.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let connections = Arc::new(AtomicUsize::new(0));
        let url = slow_server(connections.clone()).await;
        let config = kube::Config::new(url.parse().expect("url"));
        let client = bounded(config).expect("client");
        let secrets: Api<Secret> = Api::namespaced(client, "pf");
        let requests = (0..200).map(|i| {
            let secrets = secrets.clone();
            async move { secrets.get_opt(&format!("s-{i}")).await }
        });
        let answers = futures::future::join_all(requests).await;
        assert!(answers.iter().all(|a| matches!(a, Ok(None))), "{answers:?}");
        let opened = connections.load(Ordering::SeqCst);
        assert!(
            opened <= MAX_REQUESTS_IN_FLIGHT,
            "{opened} connections for 200 requests"
        );
    }
}
