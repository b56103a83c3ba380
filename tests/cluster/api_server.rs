//! The SlackOAuthGrant API as the real API server serves it: the committed CRD is accepted, the
//! examples apply, invalid grants are refused with messages naming the field, status is a
//! subresource, and the field docs are published.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use slack_oauth_operator::api::{GROUP, SlackOAuthGrant};

use crate::support::{self, TestNamespace};

fn grants(client: &Client, namespace: &str) -> Api<DynamicObject> {
    let resource = ApiResource::erase::<SlackOAuthGrant>(&());
    Api::namespaced_with(client.clone(), namespace, &resource)
}

fn valid_grant(name: &str) -> Value {
    json!({
        "apiVersion": SlackOAuthGrant::api_version(&()),
        "kind": SlackOAuthGrant::kind(&()),
        "metadata": { "name": name },
        "spec": {
            "clientID": "1234567890.1234567890",
            "clientSecretRef": { "name": "slack-app" },
            "secret": { "name": "slack-token" }
        }
    })
}

async fn create(api: &Api<DynamicObject>, object: Value) -> Result<DynamicObject, kube::Error> {
    let object: DynamicObject = serde_json::from_value(object).expect("a grant object");
    api.create(&PostParams::default(), &object).await
}

/// Creates `grant` and expects the API server to refuse it with a 422 whose message names `field`
/// and contains `says`; then checks nothing was stored.
async fn assert_refused(api: &Api<DynamicObject>, grant: Value, field: &str, says: &str) {
    let name = grant["metadata"]["name"].as_str().expect("name").to_owned();
    match create(api, grant).await {
        Err(kube::Error::Api(status)) => {
            let (code, message) = (status.code, status.message);
            assert_eq!(
                code, 422,
                "{name}: expected 422 Unprocessable Entity, got {code}: {message}"
            );
            assert!(
                message.contains(field),
                "{name}: message should name {field}: {message}"
            );
            assert!(
                message.contains(says),
                "{name}: message should say {says:?}: {message}"
            );
        }
        Err(other) => panic!("{name}: expected a validation error, got {other}"),
        Ok(_) => panic!("{name}: the API server accepted an invalid grant"),
    }
    let stored = api.get_opt(&name).await.expect("read back");
    assert!(
        stored.is_none(),
        "{name}: a refused grant must not be stored"
    );
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn committed_crd_is_accepted_and_served() {
    let client = support::client().await;
    let crd = support::install_crd(&client).await;
    assert_eq!(crd.spec.group, GROUP);
    assert_eq!(crd.spec.names.plural, "slackoauthgrants");
    assert!(
        crd.spec
            .names
            .short_names
            .as_ref()
            .is_some_and(|s| s.contains(&"slackgrant".to_owned()))
    );
    let served = &crd.spec.versions[0];
    assert_eq!(served.name, "v1alpha1");
    assert!(
        served
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some(),
        "status is a subresource"
    );

    let ns = TestNamespace::create(&client, "crd-served").await;
    let grants = Api::<SlackOAuthGrant>::namespaced(client.clone(), &ns.name);
    assert!(
        grants
            .list(&Default::default())
            .await
            .expect("list grants")
            .items
            .is_empty()
    );
    // Every short name works with kubectl, as the README uses them.
    for name in ["slackgrants", "slackgrant", "sog", "slackoauthgrants"] {
        support::kubectl(&["get", name, "-n", &ns.name], None);
    }
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn defaults_are_applied_by_the_api_server() {
    let client = support::client().await;
    support::install_crd(&client).await;
    let ns = TestNamespace::create(&client, "defaults").await;
    let api = grants(&client, &ns.name);
    create(&api, valid_grant("defaults"))
        .await
        .expect("a minimal grant is accepted");

    let grant = Api::<SlackOAuthGrant>::namespaced(client.clone(), &ns.name)
        .get("defaults")
        .await
        .expect("read the grant");
    assert_eq!(grant.spec.user_scopes, vec!["admin".to_owned()]);
    assert!(grant.spec.bot_scopes.is_empty());
    assert_eq!(
        grant.spec.installation,
        slack_oauth_operator::api::Installation::Workspace
    );
    assert_eq!(grant.spec.client_secret_ref.key, "clientSecret");
    assert_eq!(grant.spec.secret.key, "SLACK_ACCESS_TOKEN");
    assert_eq!(grant.spec.token, None);
    assert_eq!(
        grant.spec.effective_token(),
        slack_oauth_operator::api::TokenKind::User
    );
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn example_grants_apply() {
    let client = support::client().await;
    support::install_crd(&client).await;
    let ns = TestNamespace::create(&client, "examples").await;

    let mut examples: Vec<_> = std::fs::read_dir(support::repo_root().join("examples"))
        .expect("examples/")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    examples.sort();
    assert!(
        examples.len() >= 3,
        "expected the example grants, found {examples:?}"
    );

    let mut applied_grants = 0;
    for path in &examples {
        let text = std::fs::read_to_string(path).expect("read example");
        let documents: Vec<Value> = serde_saphyr::from_multiple(&text).expect("parse example");
        for document in documents {
            let object: DynamicObject =
                serde_json::from_value(document).expect("a Kubernetes object");
            let types = object.types.clone().expect("apiVersion and kind");
            let gvk = GroupVersionKind::try_from(&types).expect("group/version/kind");
            assert_eq!(
                gvk.kind,
                "SlackOAuthGrant",
                "{} holds grants only (a Secret with a placeholder would overwrite a real one)",
                path.display()
            );
            let (resource, _) = kube::discovery::pinned_kind(&client, &gvk)
                .await
                .expect("discover the kind");
            let api = Api::<DynamicObject>::namespaced_with(client.clone(), &ns.name, &resource);
            api.patch(
                &object.name_any(),
                &PatchParams::apply("examples-test"),
                &Patch::Apply(&object),
            )
            .await
            .unwrap_or_else(|e| panic!("{} ({}) applies: {e}", path.display(), object.name_any()));
            if gvk.kind == "SlackOAuthGrant" {
                applied_grants += 1;
            }
        }
    }
    assert_eq!(
        applied_grants,
        examples.len(),
        "every example file holds one grant, and nothing else"
    );
    // No example carries a Secret: one with a placeholder would overwrite the real client Secret
    // a user stored first (the README's order).
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns.name);
    assert!(
        secrets
            .get_opt("slack-scim-app")
            .await
            .expect("read")
            .is_none()
    );
}

/// One invalid grant: a change to a valid grant's spec, the field the API server's message must
/// name, and words it must contain.
struct Refusal {
    name: &'static str,
    change: fn(&mut Value),
    field: &'static str,
    says: &'static str,
}

fn remove(spec: &mut Value, field: &str) {
    spec.as_object_mut()
        .expect("spec is an object")
        .remove(field);
}

fn refusals() -> Vec<Refusal> {
    vec![
        Refusal {
            name: "no-client-id",
            change: |s| remove(s, "clientID"),
            field: "spec.clientID",
            says: "Required value",
        },
        Refusal {
            name: "no-client-secret-ref",
            change: |s| remove(s, "clientSecretRef"),
            field: "spec.clientSecretRef",
            says: "Required value",
        },
        Refusal {
            name: "bad-client-id",
            change: |s| s["clientID"] = json!("xoxb-not-a-client-id"),
            field: "spec.clientID",
            says: "Client ID",
        },
        Refusal {
            name: "user-only-bot-scope",
            change: |s| s["botScopes"] = json!(["chat:write", "admin"]),
            field: "spec.botScopes",
            says: "admin can be granted to a user token only: move it from botScopes to userScopes",
        },
        Refusal {
            name: "sign-in-scopes-as-bot-scopes",
            change: |s| s["botScopes"] = json!(["openid", "email"]),
            field: "spec.botScopes",
            says: "openid, email, profile and identity.* are Sign in with Slack scopes, granted to user tokens only",
        },
        Refusal {
            name: "no-scopes",
            change: |s| {
                s["userScopes"] = json!([]);
                s["botScopes"] = json!([]);
            },
            field: "spec.userScopes",
            says: "at least one scope",
        },
        Refusal {
            name: "malformed-user-scope",
            change: |s| s["userScopes"] = json!(["admin,chat:write"]),
            field: "spec.userScopes",
            says: "Slack scope name",
        },
        Refusal {
            name: "malformed-bot-scope",
            change: |s| s["botScopes"] = json!(["Chat Write"]),
            field: "spec.botScopes",
            says: "Slack scope name",
        },
        Refusal {
            name: "empty-scope",
            change: |s| s["userScopes"] = json!([""]),
            field: "spec.userScopes",
            says: "at least 1 chars long",
        },
        Refusal {
            name: "bot-token-without-bot-scopes",
            change: |s| s["token"] = json!("Bot"),
            field: "spec.token",
            says: "botScopes",
        },
        Refusal {
            name: "user-token-without-user-scopes",
            change: |s| {
                s["token"] = json!("User");
                s["userScopes"] = json!([]);
                s["botScopes"] = json!(["chat:write"]);
            },
            field: "spec.token",
            says: "userScopes",
        },
        Refusal {
            name: "unknown-token",
            change: |s| s["token"] = json!("Workspace"),
            field: "spec.token",
            says: "Unsupported value",
        },
        Refusal {
            name: "bad-secret-name",
            change: |s| s["secret"]["name"] = json!("Slack_Token"),
            field: "spec.secret.name",
            says: "valid Secret name",
        },
        Refusal {
            name: "bad-secret-key",
            change: |s| s["secret"]["key"] = json!("slack token"),
            field: "spec.secret.key",
            says: "valid Secret key",
        },
        Refusal {
            name: "no-secret-name",
            change: |s| s["secret"] = json!({"key": "TOKEN"}),
            field: "spec.secret.name",
            says: "Required value",
        },
        Refusal {
            name: "bad-client-secret-name",
            change: |s| s["clientSecretRef"]["name"] = json!("-slack-app"),
            field: "spec.clientSecretRef.name",
            says: "valid Secret name",
        },
        Refusal {
            name: "bad-client-secret-key",
            change: |s| s["clientSecretRef"]["key"] = json!("client/secret"),
            field: "spec.clientSecretRef.key",
            says: "valid Secret key",
        },
        Refusal {
            name: "bad-team-id",
            change: |s| s["teamID"] = json!("W0123ABCD"),
            field: "spec.teamID",
            says: "workspace ID (T...)",
        },
        Refusal {
            name: "organization-with-workspace-team",
            change: |s| {
                s["installation"] = json!("Organization");
                s["teamID"] = json!("T0123ABCD");
            },
            field: "spec.teamID",
            says: "installation: Organization",
        },
        Refusal {
            name: "label-value-too-long",
            change: |s| s["secret"]["labels"] = json!({ "team": "x".repeat(64) }),
            field: "spec.secret.labels",
            says: "63",
        },
        Refusal {
            name: "label-value-with-spaces",
            change: |s| s["secret"]["labels"] = json!({ "team": "identity team" }),
            field: "spec.secret.labels",
            says: "Kubernetes label value",
        },
        Refusal {
            name: "bad-label-key",
            change: |s| s["secret"]["labels"] = json!({ "team name": "identity" }),
            field: "spec.secret.labels",
            says: "Kubernetes label key",
        },
        Refusal {
            name: "reserved-label-key",
            change: |s| {
                s["secret"]["labels"] = json!({ "app.kubernetes.io/managed-by": "someone-else" })
            },
            field: "spec.secret.labels",
            says: "set by the operator",
        },
        Refusal {
            name: "bad-annotation-key",
            change: |s| s["secret"]["annotations"] = json!({ "example.com/a/b": "x" }),
            field: "spec.secret.annotations",
            says: "Kubernetes annotation key",
        },
        Refusal {
            name: "reserved-annotation-key",
            change: |s| {
                s["secret"]["annotations"] = json!({ "slack-oauth-operator.io/grant": "other" })
            },
            field: "spec.secret.annotations",
            says: "set by the operator",
        },
        Refusal {
            name: "annotation-value-too-long",
            change: |s| s["secret"]["annotations"] = json!({ "note": "x".repeat(4097) }),
            field: "spec.secret.annotations",
            says: "4096",
        },
        Refusal {
            name: "unknown-installation",
            change: |s| s["installation"] = json!("Enterprise"),
            field: "spec.installation",
            says: "Unsupported value",
        },
        Refusal {
            name: "pingfederate-over-http",
            change: |s| {
                s["pingFederate"] = ping_federate(
                    "http://pingfederate-admin:9999/pf-admin-api/v1",
                    json!({ "id": "slack" }),
                )
            },
            field: "spec.pingFederate.adminAPIURL",
            says: "must be an https:// URL",
        },
        Refusal {
            name: "pingfederate-two-connections",
            change: |s| {
                s["pingFederate"] = ping_federate(
                    "https://pingfederate-admin:9999/pf-admin-api/v1",
                    json!({ "id": "slack", "name": "Slack" }),
                )
            },
            field: "spec.pingFederate.connection",
            says: "exactly one of id, name and entityID",
        },
        Refusal {
            name: "pingfederate-no-token-field",
            change: |s| {
                let mut pf = ping_federate(
                    "https://pingfederate-admin:9999/pf-admin-api/v1",
                    json!({ "id": "slack" }),
                );
                pf.as_object_mut().expect("object").remove("tokenField");
                s["pingFederate"] = pf;
            },
            field: "spec.pingFederate.tokenField",
            says: "Required value",
        },
        Refusal {
            name: "rollout-unknown-kind",
            change: |s| {
                s["secret"]["rolloutRestart"] = json!([{ "kind": "DaemonSet", "name": "pf" }])
            },
            field: "spec.secret.rolloutRestart[0].kind",
            says: "Unsupported value",
        },
    ]
}

fn ping_federate(url: &str, connection: Value) -> Value {
    json!({
        "adminAPIURL": url,
        "credentialsSecretRef": { "name": "pingfederate-admin" },
        "connection": connection,
        "tokenField": "ACCESS_TOKEN"
    })
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn invalid_grants_are_refused_with_the_field_named() {
    let client = support::client().await;
    support::install_crd(&client).await;
    let ns = TestNamespace::create(&client, "invalid").await;
    let api = grants(&client, &ns.name);

    for case in refusals() {
        let mut grant = valid_grant(case.name);
        (case.change)(&mut grant["spec"]);
        assert_refused(&api, grant, case.field, case.says).await;
    }

    // The valid shapes next to the refused ones are accepted.
    let mut org = valid_grant("organization-with-org-team");
    org["spec"]["installation"] = json!("Organization");
    org["spec"]["teamID"] = json!("E0123ABCD");
    create(&api, org)
        .await
        .expect("an org-wide grant with an E... team is accepted");
    let mut bot = valid_grant("bot-only");
    bot["spec"]["userScopes"] = json!([]);
    bot["spec"]["botScopes"] = json!(["chat:write", "users:read.email", "incoming-webhook"]);
    create(&api, bot)
        .await
        .expect("a bot-only grant is accepted");
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn status_patch_keeps_generation_and_spec_change_bumps_it() {
    let client = support::client().await;
    support::install_crd(&client).await;
    let ns = TestNamespace::create(&client, "generation").await;
    create(&grants(&client, &ns.name), valid_grant("generation"))
        .await
        .expect("create");
    let api = Api::<SlackOAuthGrant>::namespaced(client.clone(), &ns.name);
    let created = api.get("generation").await.expect("get");
    assert_eq!(created.metadata.generation, Some(1));

    let status = json!({ "status": {
        "phase": "AwaitingAuthorization",
        "observedGeneration": 1,
        "conditions": [{
            "type": "Ready", "status": "False", "reason": "AwaitingAuthorization",
            "message": "waiting for a Slack owner to approve", "lastTransitionTime": "2026-01-01T00:00:00Z",
            "observedGeneration": 1
        }]
    }});
    let patched = api
        .patch_status(
            "generation",
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
        .expect("patch status");
    assert_eq!(
        patched.metadata.generation,
        Some(1),
        "a status patch must not bump generation"
    );
    assert_eq!(
        patched.status.as_ref().and_then(|s| s.phase),
        Some(slack_oauth_operator::api::Phase::AwaitingAuthorization)
    );

    // Status sent through the main resource is ignored: status is a subresource.
    let ignored = json!({ "status": { "phase": "Ready" } });
    let after = api
        .patch(
            "generation",
            &PatchParams::default(),
            &Patch::Merge(&ignored),
        )
        .await
        .expect("patch");
    assert_eq!(after.metadata.generation, Some(1));
    assert_eq!(
        after.status.as_ref().and_then(|s| s.phase),
        Some(slack_oauth_operator::api::Phase::AwaitingAuthorization)
    );

    let spec = json!({ "spec": { "userScopes": ["admin", "users:read"] } });
    let changed = api
        .patch("generation", &PatchParams::default(), &Patch::Merge(&spec))
        .await
        .expect("patch spec");
    assert_eq!(
        changed.metadata.generation,
        Some(2),
        "a spec change bumps generation"
    );
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn field_docs_are_published_in_openapi_v3() {
    let client = support::client().await;
    support::install_crd(&client).await;
    let path = format!("/openapi/v3/apis/{GROUP}/v1alpha1");
    let schema_name = "io.slack-oauth-operator.v1alpha1.SlackOAuthGrant";

    // The API server publishes a new CRD's OpenAPI a moment after it is established.
    let mut document = Value::Null;
    for _ in 0..60 {
        let request = http::Request::get(&path).body(Vec::new()).expect("request");
        if let Ok(text) = client.request_text(request).await {
            document = serde_json::from_str(&text).expect("OpenAPI v3 JSON");
            if !document["components"]["schemas"][schema_name].is_null() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let grant = &document["components"]["schemas"][schema_name];
    assert!(
        !grant.is_null(),
        "OpenAPI v3 at {path} has no {schema_name}"
    );
    let spec = &grant["properties"]["spec"]["properties"];
    let doc = |field: &str| {
        spec[field]["description"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        doc("clientID").contains("Client ID"),
        "clientID: {}",
        doc("clientID")
    );
    assert!(
        doc("userScopes").contains("SCIM"),
        "userScopes: {}",
        doc("userScopes")
    );
    assert!(
        doc("installation").contains("Enterprise Grid"),
        "installation: {}",
        doc("installation")
    );
    assert!(
        doc("token").contains("Defaults to `User`"),
        "token: {}",
        doc("token")
    );
    let secret_key = spec["secret"]["properties"]["key"]["description"]
        .as_str()
        .unwrap_or_default();
    assert!(
        secret_key.contains("SLACK_ACCESS_TOKEN"),
        "secret.key: {secret_key}"
    );
    let status = &grant["properties"]["status"]["properties"];
    assert!(
        status["authorizationURL"]["description"]
            .as_str()
            .unwrap_or_default()
            .contains("Slack")
    );
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn kubectl_explain_shows_the_field_docs() {
    let client = support::client().await;
    support::install_crd(&client).await;
    let kubectl = support::tool("KUBECTL");
    // `kubectl explain` reads the OpenAPI the API server publishes a moment after the CRD is
    // established, so retry briefly.
    let mut last = String::new();
    for _ in 0..60 {
        let ran = support::run(
            &kubectl,
            &["explain", "slackoauthgrants.spec.secret.key"],
            None,
        );
        last = format!("{}{}", ran.stdout, ran.stderr);
        if ran.success {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        last.contains("SLACK_ACCESS_TOKEN") && last.contains("envFrom"),
        "kubectl explain printed: {last}"
    );
}
