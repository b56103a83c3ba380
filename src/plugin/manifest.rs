//! The Slack app manifest a grant needs (docs: "App manifests" in the Slack OAuth reference): its
//! name, the operator's callback URL, the grant's scopes, and the settings an org-wide install
//! and token rotation need. No I/O.

use serde::Serialize;
use url::Url;

use crate::api::{Installation, SlackOAuthGrant};

/// Slack's limit on `display_information.name`.
pub const MAX_NAME: usize = 35;
/// The path of the operator's callback, below its public URL.
pub const CALLBACK_PATH: &str = "/oauth/callback";
/// The path of the operator's start links, below its public URL.
pub const START_PATH: &str = "/oauth/start/";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "grant {name} has no authorization link to take the operator's public URL from; pass --redirect-url https://<operator public URL>{CALLBACK_PATH}"
    )]
    NoPublicUrl { name: String },
    #[error("failed to read the redirect URL {url:?}: {source}")]
    BadRedirectUrl {
        url: String,
        #[source]
        source: url::ParseError,
    },
    #[error("the app name {name:?} is longer than Slack's {MAX_NAME} characters")]
    NameTooLong { name: String },
    #[error("the app name must not be empty")]
    EmptyName,
    #[error("failed to render the manifest")]
    Render(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The fields of a Slack app manifest this operator needs, nested as Slack's schema nests them.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Manifest {
    #[serde(rename = "_metadata")]
    pub metadata: Metadata,
    pub display_information: DisplayInformation,
    pub oauth_config: OauthConfig,
    pub settings: Settings,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Metadata {
    pub major_version: u8,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct DisplayInformation {
    pub name: String,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct OauthConfig {
    pub redirect_urls: Vec<String>,
    pub scopes: Scopes,
}

/// The scopes; an empty list is left out.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Scopes {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub user: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bot: Vec<String>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Settings {
    /// Only for an Organization install; a workspace app leaves it out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org_deploy_enabled: Option<bool>,
    pub token_rotation_enabled: bool,
}

/// What the user asked for beyond the grant.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub app_name: Option<String>,
    pub redirect_url: Option<String>,
    pub token_rotation: bool,
}

/// The manifest for `grant`.
pub fn build(grant: &SlackOAuthGrant, options: &Options) -> Result<Manifest, Error> {
    let name = grant.metadata.name.clone().unwrap_or_default();
    let redirect_url = match &options.redirect_url {
        Some(url) => Url::parse(url)
            .map_err(|source| Error::BadRedirectUrl {
                url: url.clone(),
                source,
            })?
            .to_string(),
        None => grant
            .status
            .as_ref()
            .and_then(|s| s.authorization_url.as_deref())
            .and_then(redirect_url_from_link)
            .ok_or(Error::NoPublicUrl { name: name.clone() })?,
    };
    let app_name = match &options.app_name {
        Some(given) if given.trim().is_empty() => return Err(Error::EmptyName),
        Some(given) if given.chars().count() > MAX_NAME => {
            return Err(Error::NameTooLong {
                name: given.clone(),
            });
        }
        Some(given) => given.clone(),
        None => default_app_name(&name),
    };
    let organization = grant.spec.installation == Installation::Organization;
    Ok(Manifest {
        metadata: Metadata { major_version: 1 },
        display_information: DisplayInformation { name: app_name },
        oauth_config: OauthConfig {
            redirect_urls: vec![redirect_url],
            scopes: Scopes {
                user: grant.spec.user_scopes.clone(),
                bot: grant.spec.bot_scopes.clone(),
            },
        },
        settings: Settings {
            org_deploy_enabled: organization.then_some(true),
            token_rotation_enabled: options.token_rotation,
        },
    })
}

/// The operator's callback URL, from a published link: a Slack authorize URL carries it as its
/// `redirect_uri`; an operator start link (`<public URL>/oauth/start/<token>`) carries the public
/// URL before `/oauth/start/`.
pub fn redirect_url_from_link(link: &str) -> Option<String> {
    let url = Url::parse(link).ok()?;
    if let Some((_, redirect)) = url.query_pairs().find(|(k, _)| k == "redirect_uri") {
        return Url::parse(&redirect).ok().map(String::from);
    }
    let (public, _) = link.split_once(START_PATH)?;
    Url::parse(public).ok()?;
    Some(format!("{}{CALLBACK_PATH}", public.trim_end_matches('/')))
}

/// `<grant> (slack-oauth-operator)` when it fits, else the grant's name cut to fit.
pub fn default_app_name(grant: &str) -> String {
    let long = format!("{grant} (slack-oauth-operator)");
    if long.chars().count() <= MAX_NAME {
        return long;
    }
    let short: String = grant.chars().take(MAX_NAME).collect();
    if short.is_empty() {
        "slack-oauth-operator".to_owned()
    } else {
        short
    }
}

pub fn to_yaml(manifest: &Manifest) -> Result<String, Error> {
    serde_saphyr::to_string(manifest).map_err(|e| Error::Render(Box::new(e)))
}

pub fn to_json(manifest: &Manifest) -> Result<String, Error> {
    serde_json::to_string_pretty(manifest)
        .map(|json| json + "\n")
        .map_err(|e| Error::Render(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn grant(spec: Value, link: Option<&str>) -> SlackOAuthGrant {
        let mut base = json!({ "clientID": "1.2", "clientSecretRef": { "name": "a" }, "secret": { "name": "t" } });
        for (k, v) in spec.as_object().cloned().unwrap_or_default() {
            base[k] = v;
        }
        serde_json::from_value(json!({
            "apiVersion": "slack-oauth-operator.io/v1alpha1", "kind": "SlackOAuthGrant",
            "metadata": { "name": "scim", "namespace": "pf" },
            "spec": base,
            "status": { "authorizationURL": link }
        }))
        .expect("grant")
    }

    const SLACK_LINK: &str = "https://slack.com/oauth/v2/authorize?client_id=1.2&user_scope=admin&redirect_uri=https%3A%2F%2Fop.example.com%2Foauth%2Fcallback&state=s";

    #[test]
    fn the_redirect_url_comes_from_a_slack_links_redirect_uri() {
        assert_eq!(
            redirect_url_from_link(SLACK_LINK).as_deref(),
            Some("https://op.example.com/oauth/callback")
        );
    }

    #[test]
    fn the_redirect_url_comes_from_a_start_links_prefix() {
        assert_eq!(
            redirect_url_from_link("https://op.example.com/slack/oauth/start/tok3n").as_deref(),
            Some("https://op.example.com/slack/oauth/callback")
        );
    }

    #[test]
    fn a_link_of_neither_kind_gives_no_redirect_url() {
        assert_eq!(
            redirect_url_from_link("https://example.com/other?x=1"),
            None
        );
        assert_eq!(redirect_url_from_link("not a url"), None);
    }

    #[test]
    fn without_a_link_or_a_flag_the_manifest_says_what_to_pass() {
        let error = build(&grant(json!({}), None), &Options::default()).expect_err("no URL");
        assert!(error.to_string().contains("--redirect-url"), "{error}");
    }

    #[test]
    fn the_flag_wins_over_the_link() {
        let options = Options {
            redirect_url: Some("https://other.example/oauth/callback".into()),
            ..Options::default()
        };
        let manifest = build(&grant(json!({}), Some(SLACK_LINK)), &options).expect("manifest");
        assert_eq!(
            manifest.oauth_config.redirect_urls,
            ["https://other.example/oauth/callback"]
        );
    }

    #[test]
    fn app_names_fit_slacks_limit() {
        assert_eq!(default_app_name("scim"), "scim (slack-oauth-operator)");
        let long = "a-very-long-grant-name-that-goes-on-and-on";
        assert_eq!(default_app_name(long).chars().count(), MAX_NAME);
        let options = Options {
            app_name: Some("x".repeat(36)),
            ..Options::default()
        };
        assert!(matches!(
            build(&grant(json!({}), Some(SLACK_LINK)), &options),
            Err(Error::NameTooLong { .. })
        ));
    }

    /// The printed YAML, read back, against the fields and nesting of Slack's manifest schema as
    /// the reference lists them.
    #[test]
    fn the_manifest_has_the_schema_fields_slack_documents() {
        let organization = grant(
            json!({ "installation": "Organization", "userScopes": ["admin"], "botScopes": ["chat:write"] }),
            Some(SLACK_LINK),
        );
        let options = Options {
            token_rotation: true,
            ..Options::default()
        };
        let yaml = to_yaml(&build(&organization, &options).expect("manifest")).expect("yaml");
        let read: Value = serde_saphyr::from_str(&yaml).expect("the YAML reads back");
        let top: Vec<&String> = read.as_object().expect("a map").keys().collect();
        assert_eq!(
            top,
            [
                "_metadata",
                "display_information",
                "oauth_config",
                "settings"
            ]
        );
        assert_eq!(read["_metadata"]["major_version"], 1);
        let name = read["display_information"]["name"].as_str().expect("name");
        assert!(!name.is_empty() && name.chars().count() <= MAX_NAME);
        assert_eq!(
            read["oauth_config"]["redirect_urls"],
            json!(["https://op.example.com/oauth/callback"])
        );
        assert_eq!(read["oauth_config"]["scopes"]["user"], json!(["admin"]));
        assert_eq!(read["oauth_config"]["scopes"]["bot"], json!(["chat:write"]));
        assert_eq!(read["settings"]["org_deploy_enabled"], true);
        assert_eq!(read["settings"]["token_rotation_enabled"], true);
        let allowed = [
            "org_deploy_enabled",
            "token_rotation_enabled",
            "socket_mode_enabled",
            "allowed_ip_address_ranges",
            "event_subscriptions",
            "interactivity",
        ];
        for key in read["settings"].as_object().expect("settings").keys() {
            assert!(allowed.contains(&key.as_str()), "unknown setting {key}");
        }
    }

    #[test]
    fn a_workspace_app_has_no_org_deploy_and_no_empty_scope_lists() {
        let workspace = grant(json!({}), Some(SLACK_LINK));
        let manifest = build(&workspace, &Options::default()).expect("manifest");
        let json: Value = serde_json::from_str(&to_json(&manifest).expect("json")).expect("json");
        assert_eq!(json["settings"], json!({ "token_rotation_enabled": false }));
        assert_eq!(json["oauth_config"]["scopes"], json!({ "user": ["admin"] }));
    }
}
