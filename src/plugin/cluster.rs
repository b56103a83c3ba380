//! The connection to the cluster, chosen as kubectl chooses it, and the API server's refusals
//! turned into messages a user can act on.

use kube::{
    Api, Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};

use super::{Error, Global};
use crate::api::SlackOAuthGrant;

/// A client and the namespace the command works in.
pub struct Cluster {
    pub client: Client,
    pub namespace: String,
}

impl Cluster {
    /// `--kubeconfig`, else `KUBECONFIG` (its files merged), else `~/.kube/config`; `--context`,
    /// else the current context; `-n`, else the context's namespace, else `default`.
    pub async fn connect(global: &Global) -> Result<Self, Error> {
        let kubeconfig = match &global.kubeconfig {
            Some(path) => Kubeconfig::read_from(path),
            None => Kubeconfig::read(),
        }
        .map_err(Error::ReadKubeconfig)?;
        let options = KubeConfigOptions {
            context: global.context.clone(),
            ..KubeConfigOptions::default()
        };
        let config = Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(Error::LoadKubeconfig)?;
        let namespace = global
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).map_err(Error::BuildClient)?;
        Ok(Self { client, namespace })
    }

    pub fn grants(&self) -> Api<SlackOAuthGrant> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The grant `name`, or a message saying why not.
    pub async fn grant(&self, name: &str) -> Result<SlackOAuthGrant, Error> {
        self.grants()
            .get(name)
            .await
            .map_err(|e| self.refusal(e, name, "get slackoauthgrants", "read the grant"))
    }

    /// `error` from a request about grant `name`, as the user should read it: not found (the
    /// grant, or the CRD), forbidden, or what the API server said.
    pub fn refusal(
        &self,
        error: kube::Error,
        name: &str,
        verb: &'static str,
        step: &'static str,
    ) -> Error {
        match &error {
            kube::Error::Api(status) if status.code == 404 => {
                let names_the_object = status.details.as_ref().is_some_and(|d| !d.name.is_empty());
                if names_the_object {
                    Error::NotFound {
                        name: name.to_owned(),
                        namespace: self.namespace.clone(),
                    }
                } else {
                    Error::NoCrd
                }
            }
            kube::Error::Api(status) if status.code == 403 => Error::Forbidden {
                verb,
                namespace: self.namespace.clone(),
                message: status.message.clone(),
            },
            kube::Error::Api(status) => Error::Api {
                step,
                message: if status.message.is_empty() {
                    format!("HTTP {}", status.code)
                } else {
                    status.message.clone()
                },
            },
            _ => Error::Kube {
                step,
                source: Box::new(error),
            },
        }
    }
}
