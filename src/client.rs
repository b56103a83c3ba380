//! The operator's Kubernetes clients. Each negotiates HTTP/2 with the API server (ALPN; every
//! kube-apiserver offers it), so one connection carries many requests and watches at once,
//! instead of one HTTP/1.1 connection each.
//!
//! - Watches are long-lived, so they have clients of their own ([`Watchers`]), which never wait
//!   behind requests: one per [`NAMESPACES_PER_WATCH_CLIENT`] watched namespaces, so that no
//!   connection nears the API server's limit of streams at once.
//! - Every other request goes through a client that lets at most [`MAX_REQUESTS_IN_FLIGHT`] run
//!   at once and queues the rest ([`bounded`]): a restart or a burst of grants asks the API
//!   server for a bounded amount of work at a time.

use std::time::Duration;

use hyper_util::{
    client::legacy::connect::HttpConnector,
    rt::{TokioExecutor, TokioTimer},
};
use k8s_openapi::NamespaceResourceScope;
use kube::{
    Api, Client, Resource,
    client::{ConfigExt, retry::RetryPolicy},
};
use tower::{ServiceBuilder, limit::ConcurrencyLimitLayer, retry::RetryLayer};

/// Requests at once on one bounded client. The API server's fairness limits answer 429 well
/// before a single client needs more.
pub const MAX_REQUESTS_IN_FLIGHT: usize = 16;

/// Watched namespaces per watch client (connection). Each namespace costs three watches (the
/// grants, the shared Secrets and the token Secrets), each an HTTP/2 stream, and the API server
/// allows 100 streams at once on a connection (Go's default) before new ones wait: a group
/// stays far below that, so a relist of one group's namespaces never waits behind another's.
pub const NAMESPACES_PER_WATCH_CLIENT: usize = 8;

/// How often a connection is pinged while it carries nothing, so that an API server gone away,
/// or a middlebox that dropped the connection, is noticed and the connection replaced.
const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// A client could not be built from the kubeconfig.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to build a Kubernetes client from the kubeconfig")]
    Kube(#[source] kube::Error),
    #[error(
        "failed to build a Kubernetes client: the kubeconfig's tls-server-name is not a DNS name"
    )]
    InvalidServerName(#[source] rustls::pki_types::InvalidDnsNameError),
}

/// A client for requests (not watches): at most [`MAX_REQUESTS_IN_FLIGHT`] in flight.
pub fn bounded(config: &kube::Config) -> Result<Client, Error> {
    multiplexed(config, Some(MAX_REQUESTS_IN_FLIGHT))
}

/// The clients that carry the operator's watches.
#[derive(Clone)]
pub struct Watchers {
    /// For every namespace, the operator's own, and the first group of watched namespaces.
    first: Client,
    /// For the other groups of [`NAMESPACES_PER_WATCH_CLIENT`] watched namespaces, in order.
    others: Vec<Client>,
    /// The watched namespaces, in the order they are grouped; empty means every namespace.
    namespaces: Vec<String>,
}

impl Watchers {
    pub fn new(config: &kube::Config, namespaces: &[String]) -> Result<Self, Error> {
        let groups = namespaces
            .len()
            .div_ceil(NAMESPACES_PER_WATCH_CLIENT)
            .max(1);
        Ok(Self {
            first: multiplexed(config, None)?,
            others: (1..groups)
                .map(|_| multiplexed(config, None))
                .collect::<Result<_, _>>()?,
            namespaces: namespaces.to_vec(),
        })
    }

    /// One `Api` of `K` per watched namespace, each on its namespace's client, or one of every
    /// namespace when every namespace is watched.
    pub fn apis<K>(&self) -> Vec<Api<K>>
    where
        K: Resource<Scope = NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        if self.namespaces.is_empty() {
            return vec![Api::all(self.first.clone())];
        }
        self.namespaces
            .iter()
            .map(|namespace| Api::namespaced(self.of(Some(namespace)).clone(), namespace))
            .collect()
    }

    /// The client for watches in `namespace`, or in every namespace (`None`).
    pub fn of(&self, namespace: Option<&str>) -> &Client {
        let group = namespace
            .and_then(|namespace| self.namespaces.iter().position(|n| n == namespace))
            .map_or(0, |index| index / NAMESPACES_PER_WATCH_CLIENT);
        group
            .checked_sub(1)
            .and_then(|other| self.others.get(other))
            .unwrap_or(&self.first)
    }
}

/// The stack kube builds (base URI, kube's retry of 429 and 503 answers, authentication,
/// headers) over a connection pool that negotiates HTTP/2, with the kubeconfig's timeouts and
/// TLS, and at most `limit` requests in flight if given.
fn multiplexed(config: &kube::Config, limit: Option<usize>) -> Result<Client, Error> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let tls = config.rustls_client_config().map_err(Error::Kube)?;
    let mut https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    if let Some(name) = &config.tls_server_name {
        let name = rustls::pki_types::ServerName::try_from(name.clone())
            .map_err(Error::InvalidServerName)?;
        https = https.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name));
    }
    let mut connector =
        hyper_timeout::TimeoutConnector::new(https.enable_all_versions().wrap_connector(http));
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let pool = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .http2_keep_alive_interval(KEEP_ALIVE)
        .http2_keep_alive_while_idle(true)
        .build(connector);
    let service = ServiceBuilder::new()
        .option_layer(limit.map(ConcurrencyLimitLayer::new))
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then(|| RetryLayer::new(RetryPolicy::server_retry())),
        )
        .option_layer(config.auth_layer().map_err(Error::Kube)?)
        .layer(config.extra_headers_layer().map_err(Error::Kube)?)
        .map_err(tower::BoxError::from)
        .service(pool);
    Ok(Client::new(service, config.default_namespace.clone()))
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
    async fn watched_namespaces_share_a_watch_client_in_groups_of_eight() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = kube::Config::new("https://127.0.0.1:6443".parse().expect("url"));
        let namespaces: Vec<String> = (0..20).map(|i| format!("ns-{i}")).collect();
        let watchers = Watchers::new(&config, &namespaces).expect("watchers");
        assert_eq!(watchers.others.len(), 2, "20 namespaces: three clients");
        let same = |a: &Client, b: &Client| std::ptr::eq(a, b);
        let first = watchers.of(None);
        assert!(same(watchers.of(Some("ns-0")), first));
        assert!(same(watchers.of(Some("ns-7")), first));
        assert!(same(watchers.of(Some("ns-8")), &watchers.others[0]));
        assert!(same(watchers.of(Some("ns-19")), &watchers.others[1]));
        assert!(
            same(watchers.of(Some("operator-namespace")), first),
            "a namespace not watched (the operator's own) is the first client's"
        );
        let all = Watchers::new(&config, &[]).expect("watchers");
        assert!(all.others.is_empty(), "every namespace: one client");
    }

    #[tokio::test]
    async fn two_hundred_requests_at_once_open_no_more_connections_than_the_bound() {
        // As main does: the process's TLS provider, which building any kube client needs.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let connections = Arc::new(AtomicUsize::new(0));
        let url = slow_server(connections.clone()).await;
        let config = kube::Config::new(url.parse().expect("url"));
        let client = bounded(&config).expect("client");
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
