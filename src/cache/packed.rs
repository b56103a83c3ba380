//! [`Packed`]: an object as a cache keeps it when the cache holds many and each is read seldom.
//!
//! A typed `Secret` holds a B-tree node of about 540 bytes for each of its labels, annotations
//! and data, whatever their size: a grant's token Secret takes 3.3 KB typed and 1.1 KB packed
//! (`tests/cache_memory.rs`). A reconcile reads two or three cached Secrets, and unpacking one takes microseconds,
//! so the operator keeps the Secrets it caches (one token Secret and one record per grant)
//! packed. The grants stay typed: the controller and the approval links read them all the time.

use std::{borrow::Cow, fmt, marker::PhantomData};

use kube::{Resource, api::ObjectMeta};
use serde::{Deserialize, Deserializer, Serialize, de::DeserializeOwned};

/// The annotation `kubectl apply` writes: a second copy of what it applied, never read here.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// What a cache drops from every object it keeps: what the operator never reads, and is most
/// of many objects (their managed fields, `kubectl apply`'s copy of them).
pub fn trim<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
        // An emptied map still holds its node (about 540 B).
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// `K` as its JSON, without what [`trim`] drops, beside the only metadata a watch follows it
/// by (name, namespace, resource version). Deserialized from the API server's JSON as `K` is;
/// [`Packed::unpack`] gives the object back.
pub struct Packed<K> {
    metadata: ObjectMeta,
    json: Box<[u8]>,
    kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Packed<K> {
    fn clone(&self) -> Self {
        Self {
            metadata: self.metadata.clone(),
            json: self.json.clone(),
            kind: PhantomData,
        }
    }
}

/// Names the object only: a packed Secret's data never reaches a log line or a panic.
impl<K: Resource<DynamicType = ()>> fmt::Debug for Packed<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Packed")
            .field("kind", &K::kind(&()))
            .field("namespace", &self.metadata.namespace)
            .field("name", &self.metadata.name)
            .field("resource_version", &self.metadata.resource_version)
            .finish_non_exhaustive()
    }
}

impl<K: Resource + Serialize> Packed<K> {
    /// Packs `object`, without what [`trim`] drops.
    pub fn pack(mut object: K) -> Result<Self, serde_json::Error> {
        trim(&mut object);
        let json = serde_json::to_vec(&object)?.into_boxed_slice();
        Ok(Self {
            metadata: ObjectMeta {
                name: object.meta().name.clone(),
                namespace: object.meta().namespace.clone(),
                resource_version: object.meta().resource_version.clone(),
                ..ObjectMeta::default()
            },
            json,
            kind: PhantomData,
        })
    }
}

impl<K: DeserializeOwned> Packed<K> {
    /// The object, as the API server sent it (without what [`trim`] drops).
    pub fn unpack(&self) -> K {
        // Only `pack` makes the JSON, from a `K`: reading it back cannot fail.
        serde_json::from_slice(&self.json).expect("a packed object reads back as itself")
    }
}

impl<'de, K: Resource + Serialize + DeserializeOwned> Deserialize<'de> for Packed<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::pack(K::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

impl<K: Resource<DynamicType = ()>> Resource for Packed<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind((): &()) -> Cow<'_, str> {
        K::kind(&())
    }

    fn group((): &()) -> Cow<'_, str> {
        K::group(&())
    }

    fn version((): &()) -> Cow<'_, str> {
        K::version(&())
    }

    fn plural((): &()) -> Cow<'_, str> {
        K::plural(&())
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{ByteString, api::core::v1::Secret};
    use kube::{ResourceExt, api::ObjectList};
    use serde_json::json;

    use super::*;

    fn token_secret() -> serde_json::Value {
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "slack-token",
                "namespace": "pf",
                "uid": "0b5f7a5e-1c39-4d84-9d2b-7e2f4c1d9a10",
                "resourceVersion": "41",
                "labels": { "app.kubernetes.io/managed-by": "slack-oauth-operator" },
                "annotations": {
                    "slack-oauth-operator.io/token-revision": "1",
                    LAST_APPLIED: "{\"kind\":\"Secret\"}"
                },
                "ownerReferences": [{
                    "apiVersion": "slack-oauth-operator.io/v1alpha1", "kind": "SlackOAuthGrant",
                    "name": "scim", "uid": "0b5f7a5e-1c39-4d84-9d2b-7e2f4c1d9a11",
                    "controller": true, "blockOwnerDeletion": true
                }],
                "managedFields": [{ "manager": "slack-oauth-operator", "operation": "Apply",
                                    "apiVersion": "v1", "fieldsType": "FieldsV1",
                                    "fieldsV1": { "f:data": {} } }]
            },
            "type": "Opaque",
            "data": { "SLACK_TOKEN": "eG94cC0x" }
        })
    }

    #[test]
    fn a_packed_object_unpacks_to_what_the_api_server_sent_but_what_is_never_read() {
        let packed: Packed<Secret> = serde_json::from_value(token_secret()).expect("packs");
        assert_eq!(packed.name_any(), "slack-token");
        assert_eq!(packed.namespace().as_deref(), Some("pf"));
        assert_eq!(packed.resource_version().as_deref(), Some("41"));
        assert!(packed.labels().is_empty(), "only what the watch follows");

        let secret = packed.unpack();
        let mut expected: Secret = serde_json::from_value(token_secret()).expect("typed");
        expected.metadata.managed_fields = None;
        expected.annotations_mut().remove(LAST_APPLIED);
        assert_eq!(secret, expected);
        assert_eq!(
            secret.data.expect("data")["SLACK_TOKEN"],
            ByteString(b"xoxp-1".to_vec())
        );
    }

    #[test]
    fn a_list_of_packed_objects_reads_as_the_api_server_sends_it() {
        let mut item = token_secret();
        // List items carry no apiVersion or kind.
        item.as_object_mut().expect("object").remove("apiVersion");
        item.as_object_mut().expect("object").remove("kind");
        let list: ObjectList<Packed<Secret>> = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "SecretList",
            "metadata": { "resourceVersion": "42" },
            "items": [item]
        }))
        .expect("a list");
        assert_eq!(
            list.items[0].unpack().metadata.uid.as_deref(),
            token_secret()["metadata"]["uid"].as_str()
        );
    }

    #[test]
    fn a_packed_secret_prints_no_data() {
        let packed: Packed<Secret> = serde_json::from_value(token_secret()).expect("packs");
        let printed = format!("{packed:?}");
        assert!(printed.contains("slack-token"), "{printed}");
        assert!(
            !printed.contains("eG94cC0x") && !printed.contains("xoxp"),
            "{printed}"
        );
    }
}
