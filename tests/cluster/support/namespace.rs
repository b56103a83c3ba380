//! A namespace of one test's own, so tests can run side by side.

use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, Client, api::PostParams};

/// A namespace that belongs to one test, so tests can run in parallel. The control plane of
/// `make test` is thrown away afterwards, so namespaces are not deleted one by one.
#[derive(Clone, Debug)]
pub struct TestNamespace {
    pub name: String,
}

impl TestNamespace {
    pub async fn create(client: &Client, test: &str) -> Self {
        let suffix: String = {
            use rand::RngExt;
            let mut rng = rand::rng();
            (0..6)
                .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
                .collect()
        };
        let prefix: String = test
            .chars()
            .map(|c| {
                if c == '_' {
                    '-'
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .take(40)
            .collect();
        let name = format!("{}-{suffix}", prefix.trim_end_matches('-'));
        let namespace: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name,
                "labels": { "slack-oauth-operator.io/test": test.chars().take(63).collect::<String>() }
            }
        }))
        .expect("namespace");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .expect("create the test namespace");
        Self { name }
    }
}
