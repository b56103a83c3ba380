//! Events about grants: the one recorder of the process, shared by the controller and the
//! callback server, and the one function that publishes. Event reasons are the `Ready` reasons
//! (`api::reasons`); notes never carry a secret value.

use std::time::Duration;

use kube::{
    Client, Resource,
    runtime::events::{Event, EventType, Recorder, Reporter},
};
use tracing::warn;

use crate::api::SlackOAuthGrant;

/// The name Events are reported under.
pub const REPORTER: &str = "slack-oauth-operator";
/// Deadline of publishing one Event.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// An Event to publish about a grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedEvent {
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
}

/// The one Event recorder of the process.
pub fn recorder(client: Client) -> Recorder {
    let reporter = Reporter {
        controller: REPORTER.to_owned(),
        instance: std::env::var("POD_NAME").ok(),
    };
    Recorder::new(client, reporter)
}

/// Publishes an Event about the grant. Failing to publish one is logged, never fatal.
pub async fn publish(recorder: &Recorder, grant: &SlackOAuthGrant, event: &PlannedEvent) {
    let event = Event {
        type_: if event.warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: event.reason.to_owned(),
        note: Some(event.note.clone()),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    let published = tokio::time::timeout(
        PUBLISH_TIMEOUT,
        recorder.publish(&event, &grant.object_ref(&())),
    )
    .await;
    match published {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            warn!(error = &error as &dyn std::error::Error, reason = %event.reason, "failed to publish an Event");
        }
        Err(_) => warn!(reason = %event.reason, "failed to publish an Event within the deadline"),
    }
}
