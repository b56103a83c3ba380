//! Events about grants: the one recorder of the process, shared by the controller and the
//! callback server, and the one function that publishes. Event reasons are the `Ready` reasons
//! (`api::reasons`); notes never carry a secret value.

use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use k8s_openapi::{
    api::{core::v1::ObjectReference, events::v1::Event},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api, Client, Resource,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;
use tracing::warn;

use crate::api::SlackOAuthGrant;

/// The name Events are reported under.
pub const REPORTER: &str = "slack-oauth-operator";
/// Deadline of publishing one Event.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);
/// An Event repeated within this long of the last time it was seen counts in that Event's
/// series instead of being created again (kube's `Recorder`, and client-go's, use 6 minutes).
const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);
/// How often Events seen longer ago than [`SERIES_WINDOW`] are forgotten.
const FORGET_EVERY: SignedDuration = SignedDuration::from_secs(30);
/// Events remembered at most. Beyond it, Events are still published, only not gathered into
/// series until older ones are forgotten.
const REMEMBERED_AT_MOST: usize = 100_000;

/// The one Event recorder of the process (events.k8s.io/v1), shared by the controller and the
/// callback server.
///
/// Like kube's `Recorder`, it gathers an Event repeated within [`SERIES_WINDOW`] into the
/// first one's `series`. Unlike it, it remembers only each recent Event's name and count, under
/// a hash of what makes it the same Event, instead of the whole Event: kube's kept about 10 KB
/// per grant for those 6 minutes, which at 10,000 new grants was most of the operator's memory.
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    instance: String,
    recent: Arc<Mutex<Recent>>,
}

/// Recently published Events, by a hash of their type, reason, note and object.
#[derive(Default)]
struct Recent {
    events: HashMap<u64, Seen>,
    forgotten_at: Option<Timestamp>,
}

struct Seen {
    name: String,
    count: i32,
    last: Timestamp,
}

/// What to do about an Event.
enum Publish {
    Create,
    /// Count it in the series of the Event named so (in the object's namespace: the key holds
    /// it).
    Repeat {
        name: String,
        count: i32,
    },
}

impl Recent {
    fn plan(&mut self, key: u64, now: Timestamp) -> Publish {
        if self
            .forgotten_at
            .is_none_or(|at| now.duration_since(at) >= FORGET_EVERY)
        {
            self.events
                .retain(|_, seen| now.duration_since(seen.last) < SERIES_WINDOW);
            self.forgotten_at = Some(now);
        }
        match self.events.get_mut(&key) {
            Some(seen) if now.duration_since(seen.last) < SERIES_WINDOW => {
                seen.count = seen.count.saturating_add(1);
                seen.last = now;
                Publish::Repeat {
                    name: seen.name.clone(),
                    count: seen.count,
                }
            }
            _ => Publish::Create,
        }
    }

    fn created(&mut self, key: u64, name: String, now: Timestamp) {
        if self.events.len() < REMEMBERED_AT_MOST || self.events.contains_key(&key) {
            self.events.insert(
                key,
                Seen {
                    name,
                    count: 1,
                    last: now,
                },
            );
        }
    }

    /// The Event named so is gone (expired in the API server): create it again next time.
    fn forget(&mut self, key: u64) {
        self.events.remove(&key);
    }
}

/// The one Event recorder of the process.
pub fn recorder(client: Client) -> Recorder {
    Recorder {
        client,
        instance: std::env::var("POD_NAME").unwrap_or_else(|_| REPORTER.to_owned()),
        recent: Arc::default(),
    }
}

impl Recorder {
    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn publish(
        &self,
        event: &PlannedEvent,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let key = key(event, regarding);
        let events = Api::<Event>::namespaced(
            self.client.clone(),
            regarding.namespace.as_deref().unwrap_or_default(),
        );
        let plan = self.recent().plan(key, now);
        if let Publish::Repeat { name, count } = plan {
            let series = json!({
                "series": { "count": count, "lastObservedTime": MicroTime(now) }
            });
            match events
                .patch(&name, &PatchParams::default(), &Patch::Merge(&series))
                .await
            {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(status)) if status.code == 404 => self.recent().forget(key),
                Err(error) => return Err(error),
            }
        }
        let created = self.event(event, regarding, now);
        let name = created.metadata.name.clone().unwrap_or_default();
        events.create(&PostParams::default(), &created).await?;
        self.recent().created(key, name, now);
        Ok(())
    }

    /// The Event as kube's `Recorder` writes it.
    fn event(&self, event: &PlannedEvent, regarding: &ObjectReference, now: Timestamp) -> Event {
        Event {
            action: Some("Reconcile".to_owned()),
            reason: Some(event.reason.to_owned()),
            note: Some(event.note.clone()),
            type_: Some(if event.warning { "Warning" } else { "Normal" }.to_owned()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(REPORTER.to_owned()),
            reporting_instance: Some(self.instance.clone()),
            metadata: ObjectMeta {
                namespace: regarding.namespace.clone(),
                name: Some(format!(
                    "{}.{:x}",
                    regarding.name.as_deref().unwrap_or(REPORTER),
                    now.as_nanosecond()
                )),
                ..ObjectMeta::default()
            },
            ..Event::default()
        }
    }
}

/// What makes two Events the same: their type, reason and note, and the object they are about
/// (its UID too, so that a grant created again under the same name starts its own).
fn key(event: &PlannedEvent, regarding: &ObjectReference) -> u64 {
    let mut hasher = DefaultHasher::new();
    (
        event.warning,
        event.reason,
        &event.note,
        &regarding.namespace,
        &regarding.name,
        &regarding.uid,
    )
        .hash(&mut hasher);
    hasher.finish()
}

/// An Event to publish about a grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedEvent {
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
}

/// Publishes an Event about the grant. Failing to publish one is logged, never fatal.
pub async fn publish(recorder: &Recorder, grant: &SlackOAuthGrant, event: &PlannedEvent) {
    let published = tokio::time::timeout(
        PUBLISH_TIMEOUT,
        recorder.publish(event, &grant.object_ref(&())),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).expect("time")
    }

    fn repeat_count(plan: Publish) -> Option<i32> {
        match plan {
            Publish::Create => None,
            Publish::Repeat { count, .. } => Some(count),
        }
    }

    #[test]
    fn an_event_repeated_within_the_window_counts_in_its_series() {
        let mut recent = Recent::default();
        assert!(repeat_count(recent.plan(1, at(0))).is_none());
        recent.created(1, "grant.1".into(), at(0));
        assert_eq!(repeat_count(recent.plan(1, at(60))), Some(2));
        // The window runs from the last time it was seen.
        assert_eq!(repeat_count(recent.plan(1, at(60 + 300))), Some(3));
        assert!(
            repeat_count(recent.plan(2, at(60 + 300))).is_none(),
            "another Event"
        );
    }

    #[test]
    fn an_event_seen_longer_ago_than_the_window_is_created_again_and_forgotten() {
        let mut recent = Recent::default();
        recent.plan(1, at(0));
        recent.created(1, "grant.1".into(), at(0));
        assert!(repeat_count(recent.plan(1, at(6 * 60))).is_none());
        assert!(recent.events.is_empty(), "forgotten");
    }

    #[test]
    fn an_event_gone_from_the_api_server_is_created_again() {
        let mut recent = Recent::default();
        recent.created(1, "grant.1".into(), at(0));
        recent.forget(1);
        assert!(repeat_count(recent.plan(1, at(1))).is_none());
    }

    #[test]
    fn what_is_remembered_is_bounded() {
        let mut recent = Recent::default();
        for key in 0..=u64::try_from(REMEMBERED_AT_MOST).expect("fits") {
            recent.created(key, "e".into(), at(0));
        }
        assert_eq!(recent.events.len(), REMEMBERED_AT_MOST);
    }

    #[test]
    fn the_same_event_about_another_grant_or_with_another_note_is_another() {
        let event = PlannedEvent {
            warning: false,
            reason: "Authorized",
            note: "approved".into(),
        };
        let grant = ObjectReference {
            namespace: Some("ns".into()),
            name: Some("scim".into()),
            uid: Some("uid-1".into()),
            ..ObjectReference::default()
        };
        let again = ObjectReference {
            uid: Some("uid-2".into()),
            ..grant.clone()
        };
        let noted = PlannedEvent {
            note: "approved again".into(),
            ..event.clone()
        };
        assert_eq!(key(&event, &grant), key(&event.clone(), &grant.clone()));
        assert_ne!(key(&event, &grant), key(&event, &again));
        assert_ne!(key(&event, &grant), key(&noted, &grant));
    }
}
