//! A PingFederate emulator for tests of slack-oauth-operator: the parts of PingFederate's admin
//! API (`/pf-admin-api/v1`) the operator uses to push a new Slack token into an SP connection's
//! outbound provisioning target settings, served over plain HTTP on a local port.
//!
//! It follows the team's research notes (`reference/pingfederate.md`); section numbers (§3.1,
//! …) in doc comments point into them. Where the notes say nothing, the emulator picks the
//! stricter reading and says so where it does.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use pingfederate_emulator::PingFederateEmulator;
//! use serde_json::json;
//!
//! let pf = PingFederateEmulator::start().await?;
//! pf.seed_connection(
//!     json!({
//!         "id": "slack", "name": "Slack", "entityId": "https://slack.com",
//!         "outboundProvision": {
//!             "type": "SlackProvisioner",
//!             "targetSettings": [
//!                 {"name": "ACCESS_TOKEN", "value": "xoxp-old"},
//!                 {"name": "UNIQUE_USER_IDENTIFIER", "value": "primaryEmail"},
//!             ],
//!         },
//!     }),
//!     &["ACCESS_TOKEN"],
//! );
//! // Operator configuration: base URL <pf.admin_api_url()>, Basic auth
//! // <pf.admin_username()>:<pf.admin_password()>.
//! // … the operator GETs the connection, puts `value` in the token field and PUTs it back …
//! assert_eq!(pf.secret_value("slack", "ACCESS_TOKEN").as_deref(), Some("xoxp-old"));
//! # Ok(()) }
//! ```
//!
//! What the emulator does, in short:
//! - **Every request** needs the header `X-XSRF-Header` (any value; PingFederate documents
//!   `PingFederate`, §3.3), else 403, and HTTP Basic auth with the admin credentials (§3.3),
//!   else 401 with `WWW-Authenticate: Basic`. The XSRF check comes first.
//! - **`GET /idp/spConnections/{id}`** answers the stored connection; **`PUT`** replaces it
//!   whole (§3.2): what the body omits is gone. A PUT needs `Content-Type: application/json`
//!   (§3.3, else 415), a JSON object (else 400), an existing connection (else 404), and passes
//!   validation (else 422): `entityId` and `name` present, a body `id` (if any) equal to the
//!   path's, and the ConfigField rules below. **`GET /idp/spConnections`** lists connections as
//!   `{"items": [...]}`, with `entityId` (exact), `filter` (case-insensitive partial match on
//!   name or entity ID), `page` and `numberPerPage` (§3.2).
//! - **Connections are JSON** ([`serde_json::Value`]) that tests seed
//!   ([`PingFederateEmulator::seed_connection`]); the emulator looks only at `id`, `name`,
//!   `entityId` and `outboundProvision.targetSettings`, and keeps everything else as sent.
//! - **ConfigFields** in `outboundProvision.targetSettings` (§3.1): fields a test marks secret
//!   are answered with an opaque `encryptedValue`, never `value`. A PUT with `value` sets a new
//!   secret (readable with [`PingFederateEmulator::secret_value`]); one with an
//!   `encryptedValue` this server issued stores the secret it stands for (the same one, when
//!   sent back unchanged); any other `encryptedValue`, or one on a plain field, is a 422.
//! - **`POST /cluster/replicate`** answers 200 with an `ApiResult` and is counted
//!   ([`PingFederateEmulator::replications`]), §3.2, §3.4.
//! - **Faults** ([`Fault`]) per [`Route`]: counted or until cleared; **outages** ([`Outage`]):
//!   503 for everything, or connections cut as if the server went away.
//! - **A record of every call** ([`Call`]): method, path, XSRF header, credentials judged,
//!   body, status. Its `Debug` output redacts secret values, every `encryptedValue`, and never
//!   had the admin password.
//!
//! Errors come in PingFederate's `ApiResult` shape (`resultId`, `message`, and for 422
//! `validationErrors` of `{errorId, fieldPath, message}`), the model of `pingfederate-go-client`,
//! which §3 cites. Readings of what the notes leave open (each also documented where it is
//! implemented):
//! - The status for a missing XSRF header is not documented: 403, `resultId`
//!   `missing_xsrf_header`, a message naming the header. It is checked before credentials.
//! - The `resultId`/`errorId` strings and the messages are the emulator's own: the notes and
//!   the go-client document only the field names.
//! - The form of `encryptedValue` is not documented: the emulator issues random strings shaped
//!   like a compact JWE (`eyJ…..…`), a new one for every new `value`, even an unchanged one.
//! - PingFederate can decrypt any `encryptedValue` it made, so sending back a stale one
//!   restores the older secret (Inference from §3.1): a lost update is visible, not refused.
//! - A secret field sent with neither `value` nor `encryptedValue` has no value afterwards.
//! - `X-BypassExternalValidation` (§3.2) is recorded; the emulator does no external
//!   validation (it never calls Slack), so it changes nothing.
//! - The replicate answer's `resultId`/`message` are not documented; replication is counted,
//!   not modelled (the emulator has no engine nodes).
//! - Bad `page`/`numberPerPage` values are a 400; listed connections come in ID order.
//! - Key order inside JSON objects is not kept (objects are sorted by key); values, arrays and
//!   their order are.
//! - Only the four routes are served: another method on a served path is 405 with `Allow`,
//!   another path 404, both after the XSRF and credential checks.

mod admin;
mod ids;
mod listener;
mod model;
mod server;
mod target_settings;

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use serde_json::Value;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

pub use admin::{BASE_PATH, DEFAULT_USERNAME};
pub use model::{BasicAuth, Call, Fault, Outage, Route};

use crate::server::Shared;

/// A running emulator. Clones share it; it stops when the last clone is dropped or on
/// [`shutdown`](Self::shutdown).
#[derive(Clone)]
pub struct PingFederateEmulator {
    inner: Arc<Inner>,
}

struct Inner {
    addr: SocketAddr,
    pf: Shared,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(stop) = self
            .stop
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = stop.send(());
        }
    }
}

impl std::fmt::Debug for PingFederateEmulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PingFederateEmulator")
            .field("url", &self.url())
            .field("admin_username", &self.admin_username())
            .finish_non_exhaustive()
    }
}

impl PingFederateEmulator {
    /// Starts an emulator on `127.0.0.1` with a free port, served by a task on the current
    /// tokio runtime. The admin account is [`DEFAULT_USERNAME`] with a random password
    /// ([`admin_password`](Self::admin_password)).
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await
    }

    /// Starts an emulator on `addr` (port 0 picks a free one).
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let pf: Shared = Arc::default();
        let listener = listener::OutageListener::new(listener, pf.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let router = server::router(pf.clone());
        let task = tokio::spawn(async move {
            let serving = axum::serve(listener, router).with_graceful_shutdown(async move {
                // A dropped sender also means stop.
                let _ = stopped.await;
            });
            if let Err(error) = serving.await {
                tracing::warn!(
                    error = &error as &dyn std::error::Error,
                    "PingFederate emulator stopped"
                );
            }
        });
        tracing::debug!(%addr, "PingFederate emulator listening");
        Ok(Self {
            inner: Arc::new(Inner {
                addr,
                pf,
                stop: Mutex::new(Some(stop)),
                task: Mutex::new(Some(task)),
            }),
        })
    }

    /// The server's base URL, e.g. `http://127.0.0.1:40123`, as `https://<host>:9999` would be.
    pub fn url(&self) -> String {
        let mut addr = self.inner.addr;
        // A wildcard listen address is not something to connect to.
        if addr.ip().is_unspecified() {
            addr.set_ip(Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{addr}")
    }

    /// The admin API base URL, `<url>/pf-admin-api/v1`; paths such as `/idp/spConnections/{id}`
    /// are relative to it.
    pub fn admin_api_url(&self) -> String {
        format!("{}{BASE_PATH}", self.url())
    }

    /// The address the emulator listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.addr
    }

    fn pf(&self) -> std::sync::MutexGuard<'_, admin::PingFederate> {
        server::lock(&self.inner.pf)
    }

    /// The admin username Basic auth must send.
    pub fn admin_username(&self) -> String {
        self.pf().username().to_owned()
    }

    /// The admin password Basic auth must send, raw.
    pub fn admin_password(&self) -> String {
        self.pf().password().to_owned()
    }

    /// Changes the admin credentials from now on, as an administrator rotating the password
    /// would: requests with the old ones get 401.
    pub fn set_admin_credentials(&self, username: &str, password: &str) {
        self.pf().set_credentials(username, password);
    }

    /// Stores an SP connection as an administrator would have configured it, replacing one
    /// with the same `id`; returns the `id`. The connection is any JSON object with a string
    /// `id`; all of it is kept as given, except that in `outboundProvision.targetSettings` the
    /// fields named in `secret_fields` are encrypted: a `value` is replaced by a new
    /// `encryptedValue` (and remembered for [`secret_value`](Self::secret_value)), and an
    /// `encryptedValue` given instead is taken as a secret whose plaintext is unknown.
    ///
    /// `secret_fields` stay secret for this connection across PUTs, whether or not they are
    /// present, as PingFederate's plugin descriptor decides which fields are encrypted.
    ///
    /// # Panics
    /// If the connection has no string `id` (or one with `/`), or its target settings break
    /// the ConfigField rules (not a list, a field without a name, a duplicate name, an
    /// `encryptedValue` on a plain field). That is a mistake in the test.
    pub fn seed_connection(&self, connection: Value, secret_fields: &[&str]) -> String {
        match self.pf().seed(connection, secret_fields) {
            Ok(id) => id,
            Err(problem) => panic!("PingFederate emulator: cannot seed the connection: {problem}"),
        }
    }

    /// The connection `id` as a GET answers it (secret fields with `encryptedValue` only).
    pub fn connection(&self, id: &str) -> Option<Value> {
        self.pf().connection(id)
    }

    /// Deletes connection `id`, as an administrator would in the console; whether it existed.
    pub fn remove_connection(&self, id: &str) -> bool {
        self.pf().remove_connection(id)
    }

    /// The plaintext stored in secret target setting `field` of connection `id`: what
    /// PingFederate would hand the provisioner. `None` if there is no such connection, the
    /// field is not secret, it has no value, or it was seeded as an `encryptedValue` only.
    pub fn secret_value(&self, id: &str, field: &str) -> Option<String> {
        self.pf().secret_value(id, field)
    }

    /// Queues `fault` for the next call of `route`. Queued faults of one route apply in the
    /// order they were queued, one per call, before a fault set with
    /// [`inject_until_cleared`](Self::inject_until_cleared); faulted calls are recorded like
    /// any other.
    pub fn inject(&self, route: Route, fault: Fault) {
        self.inject_times(route, fault, 1);
    }

    /// Queues `fault` for the next `times` calls of `route`.
    pub fn inject_times(&self, route: Route, fault: Fault, times: usize) {
        self.pf().inject(route, fault, times);
    }

    /// Applies `fault` to every call of `route` (once the queued ones are used up) until
    /// [`clear_faults`](Self::clear_faults); replaces an earlier such fault of the route.
    pub fn inject_until_cleared(&self, route: Route, fault: Fault) {
        self.pf().inject_until_cleared(route, fault);
    }

    /// Drops every fault of `route`, queued or until cleared: it answers normally again.
    pub fn clear_faults(&self, route: Route) {
        self.pf().clear_faults(route);
    }

    /// Takes the whole server down (`Some`) or brings it back (`None`). Faults are not used up
    /// while it is down.
    pub fn set_outage(&self, outage: Option<Outage>) {
        self.pf().set_outage(outage);
    }

    /// Takes the whole server down for `duration` (real time), then brings it back, unless the
    /// outage was changed in the meantime. Needs a tokio runtime.
    pub fn set_outage_for(&self, outage: Outage, duration: Duration) {
        let generation = self.pf().set_outage(Some(outage));
        let pf = Arc::downgrade(&self.inner.pf);
        tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            if let Some(pf) = pf.upgrade() {
                server::lock(&pf).end_outage(generation);
            }
        });
    }

    /// The current outage, if the server is down.
    pub fn outage(&self) -> Option<Outage> {
        self.pf().outage()
    }

    /// How many connections were closed unanswered because of [`Outage::Unreachable`].
    pub fn cut_connections(&self) -> usize {
        self.pf().cut_connections()
    }

    /// How many `POST /cluster/replicate` calls succeeded.
    pub fn replications(&self) -> usize {
        self.pf().replications()
    }

    /// Every call so far, in the order answered (a delayed call is recorded when its answer is
    /// ready).
    pub fn calls(&self) -> Vec<Call> {
        self.pf().calls()
    }

    /// Stops serving, for every clone of this handle, and waits up to 5 seconds for calls in
    /// flight to finish.
    pub async fn shutdown(self) {
        let stop = self
            .inner
            .stop
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
        let task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(mut task) = task
            && tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}
