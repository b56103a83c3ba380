//! Consumers follow the token: the Deployments and StatefulSets a grant lists in
//! `spec.secret.rolloutRestart`, if they opt in, get the token's revision on their pod template
//! (a rolling restart) whenever it changes, and the grant's status says when they have rolled
//! out. A workload that does not opt in is never written.

use std::time::Duration;

use k8s_openapi::{
    Resource,
    api::apps::v1::{Deployment, StatefulSet},
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use super::Context;
use crate::{
    api::{
        FIELD_MANAGER, RolloutStatus, RolloutTarget, RolloutTargetStatus, SlackOAuthGrant,
        WorkloadKind, annotations, reasons,
    },
    events::{self, PlannedEvent},
    store::{CallError, call},
};

/// How often an unfinished restart is looked at again.
pub const POLL: Duration = Duration::from_secs(5);

const RESTARTING: &str = "Restarting";
const ROLLED_OUT: &str = "RolledOut";
const NOT_OPTED_IN: &str = "NotOptedIn";
const NOT_FOUND: &str = "NotFound";
const FORBIDDEN: &str = "Forbidden";

/// Whether `workload` lets grant `grant` restart it.
pub fn opted_in(annotations: &std::collections::BTreeMap<String, String>, grant: &str) -> bool {
    annotations
        .get(annotations::RESTART_ON_TOKEN_CHANGE)
        .is_some_and(|names| names.split(',').any(|n| n.trim() == grant))
}

/// What a workload says about its rollout.
struct Observed {
    opted_in: bool,
    /// The token revision on its pod template.
    revision: Option<String>,
    /// Its controller has rolled out its current pod template everywhere.
    rolled_out: bool,
}

fn observe_deployment(deployment: &Deployment, grant: &str) -> Observed {
    let template = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref());
    let wanted = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let rolled_out = deployment.status.as_ref().is_some_and(|s| {
        s.observed_generation >= deployment.metadata.generation
            && s.updated_replicas.unwrap_or_default() >= wanted
            && s.replicas.unwrap_or_default() == s.updated_replicas.unwrap_or_default()
            && s.available_replicas.unwrap_or_default() >= wanted
    });
    Observed {
        opted_in: opted_in(deployment.annotations(), grant),
        revision: template.and_then(|a| a.get(annotations::TOKEN_REVISION).cloned()),
        rolled_out,
    }
}

fn observe_stateful_set(set: &StatefulSet, grant: &str) -> Observed {
    let template = set
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref());
    let wanted = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let rolled_out = set.status.as_ref().is_some_and(|s| {
        s.observed_generation >= set.metadata.generation
            && s.update_revision.is_some()
            && s.current_revision == s.update_revision
            && s.updated_replicas.unwrap_or_default() >= wanted
            && s.ready_replicas.unwrap_or_default() >= wanted
    });
    Observed {
        opted_in: opted_in(set.annotations(), grant),
        revision: template.and_then(|a| a.get(annotations::TOKEN_REVISION).cloned()),
        rolled_out,
    }
}

/// Restarts what needs restarting for the token at `revision`, and says where each listed
/// workload stands. `None` when the grant lists none. Also returns whether to look again soon.
pub async fn follow(
    grant: &SlackOAuthGrant,
    namespace: &str,
    revision: u64,
    context: &Context,
) -> (Option<RolloutStatus>, Option<Duration>) {
    let targets = &grant.spec.secret.rollout_restart;
    if targets.is_empty() {
        return (None, None);
    }
    let previous = grant.status.as_ref().and_then(|s| s.rollout.as_ref());
    let mut states = Vec::with_capacity(targets.len());
    for target in targets {
        let state = restart(grant, namespace, target, revision, context).await;
        let before = previous
            .filter(|p| p.revision == revision)
            .and_then(|p| {
                p.targets
                    .iter()
                    .find(|t| t.kind == target.kind && t.name == target.name)
            })
            .map(|t| t.state.as_str());
        if before != Some(state) {
            announce(grant, target, state, revision, context).await;
        }
        states.push(RolloutTargetStatus {
            kind: target.kind,
            name: target.name.clone(),
            state: state.to_owned(),
        });
    }
    let finished = states.iter().all(|t| t.state == ROLLED_OUT);
    let finished_at = match previous {
        Some(p) if p.revision == revision && p.finished_at.is_some() && finished => {
            p.finished_at.clone()
        }
        _ if finished => Some(Time(Timestamp::now())),
        _ => None,
    };
    let waiting = states.iter().any(|t| t.state == RESTARTING);
    let status = RolloutStatus {
        revision,
        finished_at,
        targets: states,
    };
    (Some(status), waiting.then_some(POLL))
}

/// One workload: its state after restarting it if it opted in and lacks the revision.
async fn restart(
    grant: &SlackOAuthGrant,
    namespace: &str,
    target: &RolloutTarget,
    revision: u64,
    context: &Context,
) -> &'static str {
    let name = grant.name_any();
    let result = match target.kind {
        WorkloadKind::Deployment => {
            let api = Api::<Deployment>::namespaced(context.client.clone(), namespace);
            step(&api, &target.name, revision, |d| {
                observe_deployment(d, &name)
            })
            .await
        }
        WorkloadKind::StatefulSet => {
            let api = Api::<StatefulSet>::namespaced(context.client.clone(), namespace);
            step(&api, &target.name, revision, |s| {
                observe_stateful_set(s, &name)
            })
            .await
        }
    };
    match result {
        Ok(state) => state,
        Err(error) if matches!(error.code(), Some(401 | 403)) => FORBIDDEN,
        Err(error) => {
            warn!(
                error = &error as &dyn std::error::Error,
                workload = %target.name,
                "failed to read or restart a workload; retrying"
            );
            RESTARTING
        }
    }
}

async fn step<K>(
    api: &Api<K>,
    name: &str,
    revision: u64,
    observe: impl Fn(&K) -> Observed,
) -> Result<&'static str, CallError>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + kube::Resource,
{
    let Some(workload) = call(api.get_opt(name)).await? else {
        return Ok(NOT_FOUND);
    };
    let observed = observe(&workload);
    if !observed.opted_in {
        return Ok(NOT_OPTED_IN);
    }
    if observed.revision.as_deref() == Some(revision.to_string().as_str()) {
        return Ok(if observed.rolled_out {
            ROLLED_OUT
        } else {
            RESTARTING
        });
    }
    // A merge patch of one pod-template annotation: the Deployment or StatefulSet controller
    // rolls the pods, as `kubectl rollout restart` does.
    let patch = serde_json::json!({ "spec": { "template": { "metadata": { "annotations": {
        annotations::TOKEN_REVISION: revision.to_string()
    } } } } });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    call(api.patch(name, &params, &Patch::Merge(&patch))).await?;
    info!(workload = %name, revision, "restarting a workload for the new token");
    Ok(RESTARTING)
}

/// An Event when a workload is restarted or skipped.
async fn announce(
    grant: &SlackOAuthGrant,
    target: &RolloutTarget,
    state: &str,
    revision: u64,
    context: &Context,
) {
    let kind = format!("{:?}", target.kind);
    let (warning, reason, note) = match state {
        RESTARTING => (
            false,
            reasons::ROLLOUT_RESTARTED,
            format!(
                "Restarting {kind} {} for token revision {revision}.",
                target.name
            ),
        ),
        NOT_OPTED_IN => (
            true,
            reasons::ROLLOUT_SKIPPED,
            format!(
                "{kind} {} is listed in spec.secret.rolloutRestart but does not opt in, so it is not restarted: annotate it {}={}.",
                target.name,
                annotations::RESTART_ON_TOKEN_CHANGE,
                grant.name_any()
            ),
        ),
        NOT_FOUND => (
            true,
            reasons::ROLLOUT_SKIPPED,
            format!(
                "{kind} {} is listed in spec.secret.rolloutRestart but does not exist.",
                target.name
            ),
        ),
        FORBIDDEN => (
            true,
            reasons::ROLLOUT_SKIPPED,
            format!(
                "The operator may not read or restart {kind} {}: install the chart with rolloutRestart.enabled=true.",
                target.name
            ),
        ),
        _ => return,
    };
    events::publish(
        &context.recorder,
        grant,
        &PlannedEvent {
            warning,
            reason,
            note,
        },
    )
    .await;
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn deployment(
        annotations: serde_json::Value,
        template_revision: Option<&str>,
        status: serde_json::Value,
    ) -> Deployment {
        let template_annotations = match template_revision {
            Some(r) => json!({ "slack-oauth-operator.io/token-revision": r }),
            None => json!({}),
        };
        serde_json::from_value(json!({
            "metadata": { "name": "pingfederate-admin", "generation": 3, "annotations": annotations },
            "spec": {
                "replicas": 2,
                "selector": { "matchLabels": { "app": "pf" } },
                "template": { "metadata": { "annotations": template_annotations }, "spec": { "containers": [] } }
            },
            "status": status
        }))
        .expect("deployment")
    }

    #[test]
    fn only_a_workload_naming_the_grant_is_opted_in() {
        let named = json!({ "slack-oauth-operator.io/restart-on-token-change": "other, scim" });
        assert!(observe_deployment(&deployment(named, None, json!({})), "scim").opted_in);
        let other = json!({ "slack-oauth-operator.io/restart-on-token-change": "other" });
        assert!(!observe_deployment(&deployment(other, None, json!({})), "scim").opted_in);
        assert!(!observe_deployment(&deployment(json!({}), None, json!({})), "scim").opted_in);
    }

    #[test]
    fn a_deployment_has_rolled_out_once_its_controller_caught_up_everywhere() {
        let done = json!({ "observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2 });
        let observed = observe_deployment(&deployment(json!({}), Some("4"), done), "scim");
        assert!(observed.rolled_out);
        assert_eq!(observed.revision.as_deref(), Some("4"));
        let stale = json!({ "observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2 });
        assert!(!observe_deployment(&deployment(json!({}), Some("4"), stale), "scim").rolled_out);
        let old_pods = json!({ "observedGeneration": 3, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2 });
        assert!(
            !observe_deployment(&deployment(json!({}), Some("4"), old_pods), "scim").rolled_out
        );
    }
}
