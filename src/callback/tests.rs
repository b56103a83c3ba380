//! The callback in-process: `router()` without a socket, an in-memory Kubernetes and a fake
//! Slack. Every refusal the cluster suite covers end to end is checked here too, in
//! milliseconds, with what it must not do (no read, no write, no Slack call).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{
    body::Body,
    http::{Request, StatusCode},
};
use clap::Parser;
use k8s_openapi::{
    ByteString, api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp,
};
use kube::ResourceExt;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt;

use super::{
    Callback, MAX_CUSTODIES,
    cluster::{CallError, Claim, Cluster, Held, NotSynced, WriteOutcome},
    link::link_id,
    router,
    state::{AuthorizationState, StateKey},
};
use crate::{
    api::{SlackOAuthGrant, UsedState},
    config::Flags,
    events::PlannedEvent,
    metrics::Metrics,
    record::TokenRecord,
    slack::{CodeExchange, OAuthAccess, SlackApi, SlackError},
};

const NS: &str = "pf";
const NAME: &str = "scim";
const UID: &str = "uid-1";

/// Slack, answering every exchange with `answer`, and remembering what was revoked.
struct FakeSlack {
    answer: Mutex<Option<Result<OAuthAccess, SlackError>>>,
    exchanges: Mutex<usize>,
    revoked: Mutex<Vec<String>>,
}

impl FakeSlack {
    fn answering(answer: Result<OAuthAccess, SlackError>) -> Self {
        Self {
            answer: Mutex::new(Some(answer)),
            exchanges: Mutex::new(0),
            revoked: Mutex::default(),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl SlackApi for FakeSlack {
    async fn exchange_code(
        &self,
        _: &CodeExchange,
        _: tokio::time::Instant,
    ) -> Result<OAuthAccess, SlackError> {
        *lock(&self.exchanges) += 1;
        lock(&self.answer).take().unwrap_or(Err(SlackError::Api {
            method: "oauth.v2.access",
            code: "invalid_code".into(),
        }))
    }

    async fn revoke(
        &self,
        token: &SecretString,
        _: tokio::time::Instant,
    ) -> Result<(), SlackError> {
        lock(&self.revoked).push(token.expose_secret().to_owned());
        Ok(())
    }

    async fn refresh(
        &self,
        _: &crate::slack::TokenRefresh,
        _: tokio::time::Instant,
    ) -> Result<crate::slack::Refreshed, SlackError> {
        unreachable!("the callback never refreshes tokens")
    }

    async fn scim_probe(
        &self,
        _: &SecretString,
        _: tokio::time::Instant,
    ) -> Result<crate::slack::Provisioning, SlackError> {
        unreachable!("the callback never probes SCIM")
    }

    async fn check(
        &self,
        _: &SecretString,
        _: tokio::time::Instant,
    ) -> Result<crate::slack::TokenIdentity, SlackError> {
        unreachable!("the callback never checks tokens")
    }
}

/// Kubernetes in memory: one grant, Secrets by name, and a log of every call.
#[derive(Default)]
struct FakeCluster {
    grant: Mutex<Option<SlackOAuthGrant>>,
    /// The grant as the watch of grants has it, when a test gives it one.
    cached: Mutex<Option<SlackOAuthGrant>>,
    secrets: Mutex<HashMap<String, Secret>>,
    record: Mutex<Option<Held>>,
    /// What `write_token_secret` answers; `None` writes the Secret.
    write: Mutex<Option<Result<WriteOutcome, u16>>>,
    calls: Mutex<Vec<String>>,
    failures: Mutex<Vec<&'static str>>,
    events: Mutex<Vec<&'static str>>,
}

impl FakeCluster {
    fn call(&self, what: &str) {
        lock(&self.calls).push(what.to_owned());
    }

    fn calls(&self) -> Vec<String> {
        lock(&self.calls).clone()
    }
}

fn api_error(code: u16) -> CallError {
    CallError::Kube(Box::new(kube::Error::Api(
        kube::core::Status::failure("refused", "Refused")
            .with_code(code)
            .boxed(),
    )))
}

impl Cluster for FakeCluster {
    async fn grant(&self, _: &str, _: &str) -> Result<Option<SlackOAuthGrant>, CallError> {
        self.call("get grant");
        Ok(lock(&self.grant).clone())
    }

    fn cached_grant(&self, _: &str, _: &str) -> Option<Arc<SlackOAuthGrant>> {
        lock(&self.cached).clone().map(Arc::new)
    }

    fn linked(&self, token: &str) -> Result<Option<Arc<SlackOAuthGrant>>, NotSynced> {
        self.call("look up link");
        let grant = lock(&self.grant).clone();
        Ok(grant
            .filter(|g| {
                g.status
                    .as_ref()
                    .and_then(|s| s.authorization_url.as_deref())
                    .is_some_and(|url| url.ends_with(token))
            })
            .map(Arc::new))
    }

    async fn claim(
        &self,
        grant: &SlackOAuthGrant,
        holder: &str,
        used: &UsedState,
        still_valid: impl Fn(&SlackOAuthGrant) -> bool + Send + Sync,
        now: Timestamp,
    ) -> Result<Claim, CallError> {
        self.call("claim");
        let mut stored = lock(&self.grant);
        let Some(current) = stored.as_mut() else {
            return Ok(Claim::Lost);
        };
        if current.metadata.resource_version != grant.metadata.resource_version
            && !still_valid(current)
        {
            return Ok(Claim::Lost);
        }
        let status = current.status.get_or_insert_default();
        status.used_states.push(used.clone());
        status.exchange = Some(crate::api::ExchangeStatus {
            holder: holder.to_owned(),
            started_at: Time(now),
            renewed_at: Time(now),
        });
        let version: u64 = current
            .metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse().ok())
            .unwrap_or_default();
        current.metadata.resource_version = Some((version + 1).to_string());
        Ok(Claim::Claimed(Box::new(current.clone())))
    }

    async fn renew(&self, _: &SlackOAuthGrant, _: &str, _: Timestamp) -> Result<(), CallError> {
        self.call("renew");
        Ok(())
    }

    async fn record_failure(
        &self,
        _: &SlackOAuthGrant,
        reason: &'static str,
        _: &str,
        _: Timestamp,
    ) -> Result<(), CallError> {
        self.call("record failure");
        lock(&self.failures).push(reason);
        if let Some(grant) = lock(&self.grant).as_mut() {
            grant.status.get_or_insert_default().exchange = None;
        }
        Ok(())
    }

    async fn shared_secret(&self, _: &str, name: &str) -> Result<Option<Secret>, CallError> {
        self.call("get secret");
        Ok(lock(&self.secrets).get(name).cloned())
    }

    async fn record(&self, _: &SlackOAuthGrant) -> Result<Option<Held>, CallError> {
        self.call("get record");
        Ok(lock(&self.record).clone())
    }

    async fn write_record(
        &self,
        record: &TokenRecord,
        _: Option<&str>,
    ) -> Result<String, CallError> {
        self.call("write record");
        let mut held = lock(&self.record);
        let version = held
            .as_ref()
            .and_then(|h| h.version.parse::<u64>().ok())
            .unwrap_or_default()
            + 1;
        *held = Some(Held {
            record: record.clone(),
            version: version.to_string(),
        });
        Ok(version.to_string())
    }

    async fn delete_record(&self, _: &str) -> Result<(), CallError> {
        self.call("delete record");
        *lock(&self.record) = None;
        Ok(())
    }

    async fn write_token_secret(
        &self,
        _: &SlackOAuthGrant,
        desired: &Secret,
    ) -> Result<WriteOutcome, CallError> {
        self.call("write secret");
        match lock(&self.write).clone() {
            Some(Ok(outcome)) => Ok(outcome),
            Some(Err(code)) => Err(api_error(code)),
            None => {
                lock(&self.secrets).insert(desired.name_any(), desired.clone());
                Ok(WriteOutcome::Written)
            }
        }
    }

    async fn publish(&self, _: &SlackOAuthGrant, event: &PlannedEvent) {
        lock(&self.events).push(event.reason);
    }
}

/// A test: the key, the fakes, the token of the grant's approval link, and a state minted by a
/// visit to it.
struct Harness {
    key: StateKey,
    callback: Arc<Callback<FakeSlack, FakeCluster>>,
    token: String,
    state: String,
}

fn user_install(team: &str) -> OAuthAccess {
    serde_json::from_value(json!({
        "ok": true, "app_id": "A1",
        "authed_user": { "id": "U1", "scope": "admin", "access_token": "xoxp-issued", "token_type": "user" },
        "team": { "id": team, "name": "Acme" }, "enterprise": null, "is_enterprise_install": false
    }))
    .expect("Slack's answer")
}

fn client_secret(shared: bool) -> Secret {
    let labels = if shared {
        json!({ "slack-oauth-operator.io/shared-with-grants": "true" })
    } else {
        json!({})
    };
    let mut secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "slack-app", "namespace": NS, "labels": labels }
    }))
    .expect("secret");
    secret.data = Some(
        [("clientSecret".to_owned(), ByteString(b"s3cret".to_vec()))]
            .into_iter()
            .collect(),
    );
    secret
}

impl Harness {
    fn new(answer: Result<OAuthAccess, SlackError>) -> Self {
        let key = StateKey::generate();
        let token = key.issue_link();
        let now = Timestamp::now().as_second();
        let state = key.sign(&AuthorizationState::issue(
            NS,
            NAME,
            UID,
            1,
            &link_id(&token),
            now,
        ));
        let expires = Timestamp::from_second(now + 3600).expect("time");
        let grant: SlackOAuthGrant = serde_json::from_value(json!({
            "apiVersion": "slack-oauth-operator.io/v1alpha1", "kind": "SlackOAuthGrant",
            "metadata": { "name": NAME, "namespace": NS, "uid": UID, "generation": 1, "resourceVersion": "1" },
            "spec": { "clientID": "1.2", "clientSecretRef": { "name": "slack-app" }, "teamID": "T1",
                      "description": "SCIM for <Acme>",
                      "secret": { "name": "slack-token" } },
            "status": {
                "authorizationURL": format!("https://op.example.com/oauth/start/{token}"),
                "authorizationExpiresAt": expires.to_string(),
                "conditions": [{ "type": "AuthorizationPending", "status": "True", "reason": "FirstApproval",
                                 "message": "", "lastTransitionTime": expires.to_string() }]
            }
        }))
        .expect("grant");
        let cluster = FakeCluster::default();
        *lock(&cluster.grant) = Some(grant);
        lock(&cluster.secrets).insert("slack-app".into(), client_secret(true));
        let config = Flags::try_parse_from(["op", "--public-url", "https://op.example.com"])
            .expect("flags")
            .validate()
            .expect("config");
        let callback = Arc::new(Callback {
            cluster,
            state_key: key.clone(),
            instance: "test/1".into(),
            slots: Arc::new(tokio::sync::Semaphore::new(MAX_CUSTODIES)),
            custody: TaskTracker::new(),
            slack: Arc::new(FakeSlack::answering(answer)),
            config: Arc::new(config),
            shutdown: CancellationToken::new(),
            metrics: Metrics::default(),
        });
        Self {
            key,
            callback,
            token,
            state,
        }
    }

    /// A browser opening the approval link with `token`: the status and, for a redirect, where.
    async fn visit(&self, token: &str) -> (StatusCode, Option<String>, String) {
        let response = self.send(&format!("/oauth/start/{token}")).await;
        let status = response.status();
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        (
            status,
            location,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    /// The grant, as the controller leaves it once it is Ready with an approval made `at`.
    fn approve_as_controller(&self, at: i64) {
        let mut stored = lock(&self.cluster().grant);
        let grant = stored.as_mut().expect("grant");
        let at = Timestamp::from_second(at).expect("time").to_string();
        grant.status = Some(
            serde_json::from_value(json!({
                "conditions": [
                    { "type": "Ready", "status": "True", "reason": "Authorized", "message": "", "lastTransitionTime": at },
                    { "type": "AuthorizationPending", "status": "False", "reason": "UpToDate", "message": "", "lastTransitionTime": at }
                ],
                "installation": { "teamID": "T1", "teamName": "Acme", "authorizedAt": at }
            }))
            .expect("status"),
        );
    }

    fn approving() -> Self {
        Self::new(Ok(user_install("T1")))
    }

    fn cluster(&self) -> &FakeCluster {
        &self.callback.cluster
    }

    /// `GET path` on the router.
    async fn send(&self, path: &str) -> axum::response::Response {
        let request = Request::get(path).body(Body::empty()).expect("request");
        router(self.callback.clone())
            .oneshot(request)
            .await
            .expect("an answer")
    }

    async fn get(&self, query: &str) -> (StatusCode, String) {
        let response = self.send(&format!("/oauth/callback?{query}")).await;
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn exchanges(&self) -> usize {
        *lock(&self.callback.slack.exchanges)
    }

    fn revoked(&self) -> Vec<String> {
        lock(&self.callback.slack.revoked).clone()
    }

    fn failures(&self) -> Vec<&'static str> {
        lock(&self.cluster().failures).clone()
    }

    fn stored(&self) -> bool {
        lock(&self.cluster().secrets).contains_key("slack-token")
    }
}

fn assert_page(answer: &(StatusCode, String), status: u16, says: &str) {
    assert_eq!(answer.0.as_u16(), status, "{}", answer.1);
    assert!(
        answer.1.contains(says),
        "page should say {says:?}: {}",
        answer.1
    );
}

/// A state for the harness's grant, as a visit at `issued_at` to the link `token` mints it.
fn state_for(h: &Harness, uid: &str, generation: i64, token: &str, issued_at: i64) -> String {
    h.key.sign(&AuthorizationState::issue(
        NS,
        NAME,
        uid,
        generation,
        &link_id(token),
        issued_at,
    ))
}

#[tokio::test]
async fn forged_malformed_and_stateless_callbacks_touch_nothing() {
    let h = Harness::approving();
    let other = StateKey::generate().sign(&AuthorizationState::issue(
        NS,
        NAME,
        UID,
        1,
        &link_id(&h.token),
        Timestamp::now().as_second(),
    ));
    for query in [
        "code=abc".to_owned(),
        "state=a&state=b".to_owned(),
        "code=abc&state=forged-by-someone".to_owned(),
        format!("code=abc&state={other}"),
        format!("code=abc&state={}", "x".repeat(5000)),
    ] {
        assert_page(&h.get(&query).await, 400, "Link not valid");
    }
    assert!(h.cluster().calls().is_empty(), "{:?}", h.cluster().calls());
    assert_eq!(h.exchanges(), 0);
}

#[tokio::test]
async fn a_visit_sends_the_browser_to_slack_with_a_fresh_state_and_writes_nothing() {
    let h = Harness::approving();
    let (status, location, _) = h.visit(&h.token).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let location = url::Url::parse(&location.expect("a Location")).expect("url");
    assert!(
        location
            .as_str()
            .starts_with("https://slack.com/oauth/v2/authorize?")
    );
    let param = |name: &str| {
        location
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    assert_eq!(param("client_id").as_deref(), Some("1.2"));
    assert_eq!(param("team").as_deref(), Some("T1"));
    assert_eq!(
        param("redirect_uri").as_deref(),
        Some("https://op.example.com/oauth/callback")
    );
    let state = h
        .key
        .verify(&param("state").expect("a state"))
        .expect("signed");
    assert_eq!((state.uid.as_str(), state.generation), (UID, 1));
    assert_eq!(state.link, link_id(&h.token));

    let (_, again, _) = h.visit(&h.token).await;
    assert_ne!(
        again.as_deref(),
        Some(location.as_str()),
        "each visit mints its own state"
    );
    assert_eq!(
        h.cluster().calls(),
        ["look up link", "look up link"],
        "no API request"
    );

    // The state of the first visit still works after the second: none replaces another.
    let query = format!("code=c&state={}", param("state").expect("state"));
    assert_page(&h.get(&query).await, 200, "Slack approval complete");
}

#[tokio::test]
async fn forged_unknown_and_unneeded_links_say_so_without_naming_any_grant() {
    let h = Harness::approving();
    for forged in [
        "x".to_owned(),
        "A".repeat(43),
        StateKey::generate().issue_link(),
        "%2e%2e".to_owned(),
    ] {
        let (status, location, body) = h.visit(&forged).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{forged}: {body}");
        assert!(location.is_none());
        assert!(body.contains("Link not valid"), "{body}");
        assert!(!body.contains(NAME), "{body}");
    }
    assert!(
        h.cluster().calls().is_empty(),
        "a forged token is never looked up"
    );

    let (status, _, body) = h.visit(&h.key.issue_link()).await;
    assert_eq!(status, StatusCode::GONE);
    assert!(body.contains("no longer needed"), "{body}");
    assert!(!body.contains(NAME), "{body}");
}

#[tokio::test]
async fn a_visit_to_a_grant_with_no_approval_pending_says_so_and_names_the_grant() {
    let h = Harness::approving();
    {
        let mut stored = lock(&h.cluster().grant);
        let status = stored
            .as_mut()
            .and_then(|g| g.status.as_mut())
            .expect("status");
        status.conditions[0].status = "False".into();
    }
    let (status, location, body) = h.visit(&h.token).await;
    assert_eq!(status, StatusCode::OK);
    assert!(location.is_none());
    assert!(body.contains("No approval is pending"), "{body}");
    assert!(body.contains("pf/scim"), "{body}");
    assert!(
        body.contains("SCIM for &lt;Acme&gt;"),
        "the description, escaped: {body}"
    );
}

#[tokio::test]
async fn an_expired_state_is_refused_and_the_page_says_to_open_the_link_again() {
    let h = Harness::approving();
    let expired = state_for(&h, UID, 1, &h.token, 1);
    let answer = h.get(&format!("code=c&state={expired}")).await;
    assert_page(&answer, 410, "Approval page expired");
    assert!(
        answer
            .1
            .contains("Open the approval link you were given again")
    );
    assert!(answer.1.contains("pf/scim"));
    assert_eq!(h.cluster().calls(), ["get grant"]);
    assert_eq!(h.exchanges(), 0);
}

#[tokio::test]
async fn states_of_a_deleted_or_changed_grant_get_one_answer_and_change_nothing() {
    let h = Harness::approving();
    let now = Timestamp::now().as_second();
    let recreated = state_for(&h, "uid-0", 1, &h.token, now);
    let older = state_for(&h, UID, 0, &h.token, now);
    for state in [recreated, older] {
        assert_page(
            &h.get(&format!("code=c&state={state}")).await,
            410,
            "changed or deleted",
        );
    }
    *lock(&h.cluster().grant) = None;
    assert_page(
        &h.get(&format!("code=c&state={}", h.state)).await,
        410,
        "changed or deleted",
    );
    assert!(!h.cluster().calls().iter().any(|c| c != "get grant"));
    assert_eq!(h.exchanges(), 0);
}

#[tokio::test]
async fn a_state_of_a_replaced_link_is_no_longer_needed() {
    let h = Harness::approving();
    let old = state_for(
        &h,
        UID,
        1,
        &h.key.issue_link(),
        Timestamp::now().as_second(),
    );
    assert_page(
        &h.get(&format!("code=c&state={old}")).await,
        410,
        "no longer needed",
    );
    assert_eq!(h.exchanges(), 0);
}

#[tokio::test]
async fn a_replayed_state_is_refused_before_it_reaches_slack() {
    let h = Harness::new(Err(SlackError::Api {
        method: "oauth.v2.access",
        code: "invalid_code".into(),
    }));
    let query = format!("code=c&state={}", h.state);
    assert_page(&h.get(&query).await, 400, "invalid_code");
    let replay = h.get(&query).await;
    assert_page(&replay, 409, "Already received");
    assert_eq!(h.exchanges(), 1);
    assert_eq!(h.failures(), ["InvalidCode"], "the replay records nothing");
    // The same link, opened again, gives a fresh state that works.
    let (status, _, _) = h.visit(&h.token).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn an_approval_stores_the_token_and_a_refresh_shows_the_success_again() {
    let h = Harness::approving();
    let query = format!("code=c&state={}", h.state);
    let answer = h.get(&query).await;
    assert_page(&answer, 200, "Slack approval complete");
    assert!(answer.1.contains("pf/scim"), "{}", answer.1);
    assert!(h.stored());
    assert!(h.revoked().is_empty());
    assert!(h.failures().is_empty());

    h.approve_as_controller(Timestamp::now().as_second());
    let refresh = h.get(&query).await;
    assert_page(&refresh, 200, "Slack approval complete");
    assert_eq!(h.exchanges(), 1, "a refresh exchanges nothing");
    let (status, _, body) = h.visit(&h.token).await;
    assert_eq!(status, StatusCode::GONE, "the link is no longer published");
    assert!(body.contains("no longer needed"), "{body}");
}

#[tokio::test]
async fn an_approval_reads_the_grant_from_the_watch_and_writes_only_what_custody_needs() {
    let h = Harness::approving();
    *lock(&h.cluster().cached) = lock(&h.cluster().grant).clone();
    let answer = h.get(&format!("code=c&state={}", h.state)).await;
    assert_page(&answer, 200, "Slack approval complete");
    // The client Secret is read from the watch of shared Secrets in the operator; the fake
    // counts it as a call. A first approval's record is created without reading first.
    assert_eq!(
        h.cluster().calls(),
        ["claim", "get secret", "write record", "write secret"]
    );
}

#[tokio::test]
async fn a_stale_copy_of_the_grant_that_refuses_the_state_is_read_again() {
    let h = Harness::approving();
    let mut stale = lock(&h.cluster().grant).clone().expect("grant");
    stale.status.as_mut().expect("status").authorization_url = Some(format!(
        "https://op.example.com/oauth/start/{}",
        h.key.issue_link()
    ));
    stale.metadata.resource_version = Some("0".into());
    *lock(&h.cluster().cached) = Some(stale);
    let answer = h.get(&format!("code=c&state={}", h.state)).await;
    assert_page(&answer, 200, "Slack approval complete");
    assert_eq!(h.cluster().calls()[..2], ["get grant", "claim"]);
}

#[tokio::test]
async fn a_cancel_is_neutral_and_recorded_and_a_codeless_callback_is_a_failure() {
    let h = Harness::approving();
    let answer = h
        .get(&format!("error=access_denied&state={}", h.state))
        .await;
    assert_page(&answer, 200, "Approval cancelled");
    assert!(answer.1.contains(r#"class="neutral""#), "{}", answer.1);
    assert!(answer.1.contains("open the same approval link again"));
    assert_eq!(h.failures(), ["AccessDenied"]);
    assert_eq!(lock(&h.cluster().events).as_slice(), ["AccessDenied"]);

    let h = Harness::approving();
    assert_page(
        &h.get(&format!("state={}", h.state)).await,
        400,
        "without an authorization code",
    );
    assert_eq!(h.failures(), ["AuthorizationFailed"]);
    assert_eq!(h.exchanges(), 0);
}

#[tokio::test]
async fn a_client_secret_not_shared_with_the_grant_is_missing_and_nothing_reaches_slack() {
    let h = Harness::approving();
    lock(&h.cluster().secrets).insert("slack-app".into(), client_secret(false));
    assert_page(
        &h.get(&format!("code=c&state={}", h.state)).await,
        503,
        "not shared with this grant",
    );
    assert_eq!(h.failures(), ["ClientSecretMissing"]);
    assert_eq!(h.exchanges(), 0);
}

#[tokio::test]
async fn slack_refusing_the_code_is_recorded() {
    let h = Harness::new(Err(SlackError::Api {
        method: "oauth.v2.access",
        code: "invalid_code".into(),
    }));
    assert_page(
        &h.get(&format!("code=c&state={}", h.state)).await,
        400,
        "invalid_code",
    );
    assert_eq!(h.failures(), ["InvalidCode"]);
    assert!(!h.stored());
}

#[tokio::test]
async fn an_approval_from_another_team_is_revoked() {
    let h = Harness::new(Ok(user_install("T9")));
    assert_page(
        &h.get(&format!("code=c&state={}", h.state)).await,
        403,
        "T9",
    );
    assert_eq!(h.failures(), ["WrongTeam"]);
    assert_eq!(h.revoked(), ["xoxp-issued"]);
    assert!(!h.stored());
}

#[tokio::test]
async fn a_secret_that_is_not_the_grants_or_is_refused_for_good_means_a_revoke() {
    for (write, status, reason) in [
        (Ok(WriteOutcome::Foreign), 409, "SecretConflict"),
        (Err(422), 502, "ExchangeFailed"),
        (Err(403), 502, "ExchangeFailed"),
    ] {
        let h = Harness::approving();
        *lock(&h.cluster().write) = Some(write);
        let answer = h.get(&format!("code=c&state={}", h.state)).await;
        assert_eq!(answer.0.as_u16(), status, "{}", answer.1);
        assert_eq!(h.failures(), [reason]);
        assert_eq!(h.revoked(), ["xoxp-issued"], "revoked at once, not retried");
        assert_eq!(
            h.cluster()
                .calls()
                .iter()
                .filter(|c| *c == "write secret")
                .count(),
            1
        );
    }
}

#[tokio::test]
async fn a_callback_beyond_the_custody_bound_is_shed_at_once() {
    let h = Harness::approving();
    let _taken = h
        .callback
        .slots
        .clone()
        .acquire_many_owned(MAX_CUSTODIES as u32)
        .await
        .expect("slots");
    let request = Request::get(format!("/oauth/callback?code=c&state={}", h.state))
        .body(Body::empty())
        .expect("request");
    let response = router(h.callback.clone())
        .oneshot(request)
        .await
        .expect("answer");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("5")
    );
    assert!(h.cluster().calls().is_empty());
}
