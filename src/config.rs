//! Command-line flags, each with an environment-variable twin, turned into a validated [`Config`].

use std::{net::SocketAddr, time::Duration};

use clap::{Parser, ValueEnum};
use url::Url;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, for a terminal.
    Text,
    /// One JSON object per line, for a log pipeline.
    Json,
}

/// The flags as typed; [`Flags::validate`] turns them into a [`Config`].
#[derive(Clone, Debug, Parser)]
#[command(
    name = "slack-oauth-operator",
    version,
    about = "Obtains Slack OAuth tokens and keeps them in Kubernetes Secrets"
)]
pub struct Flags {
    /// The operator's external base URL, as a browser reaches it (for example through an
    /// Ingress). The OAuth redirect URI is always `<public-url>/oauth/callback`; register that
    /// URL in the Slack app. Approval links are `<public-url>/oauth/start/<token>`.
    #[arg(long, env = "PUBLIC_URL")]
    pub public_url: String,

    /// Address of the public callback server.
    #[arg(long, env = "CALLBACK_ADDR", default_value = "0.0.0.0:8080")]
    pub callback_addr: SocketAddr,

    /// Address of the internal admin server (`/healthz`, `/readyz`).
    #[arg(long, env = "ADMIN_ADDR", default_value = "0.0.0.0:8081")]
    pub admin_addr: SocketAddr,

    /// Base URL of Slack's web pages; the authorize page is `<slack-url>/oauth/v2/authorize`.
    /// `https://slack-gov.com` for GovSlack.
    #[arg(long, env = "SLACK_URL", default_value = "https://slack.com")]
    pub slack_url: String,

    /// Base URL of Slack's Web API; methods are `<slack-api-url>/<method>`.
    /// `https://slack-gov.com/api` for GovSlack.
    #[arg(long, env = "SLACK_API_URL", default_value = "https://slack.com/api")]
    pub slack_api_url: String,

    /// Base URL of Slack's SCIM API (v2), which the operator asks whether a grant's `admin`
    /// token can really drive provisioning (`GET <slack-scim-url>/Users?count=1`).
    #[arg(
        long,
        env = "SLACK_SCIM_URL",
        default_value = "https://api.slack.com/scim/v2"
    )]
    pub slack_scim_url: String,

    /// How long a published authorization link (`<public-url>/oauth/start/<token>`) stays valid
    /// (for example `7d` or `12h`); the operator then publishes a new one. Each visit sends the
    /// browser to Slack with a fresh `state` of its own, valid for 30 minutes.
    #[arg(long, env = "AUTHORIZATION_TTL", default_value = "7d", value_parser = humantime::parse_duration)]
    pub authorization_ttl: Duration,

    /// Namespaces whose grants the operator reconciles, comma-separated. Empty (the default)
    /// means every namespace.
    #[arg(long, env = "WATCH_NAMESPACES", value_delimiter = ',')]
    pub watch_namespaces: Vec<String>,

    /// Elect one leader among the replicas with a Lease, so that exactly one reconciles; every
    /// replica serves callbacks.
    #[arg(long, env = "LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,

    /// Namespace of the leader-election Lease: the operator's own namespace. Defaults to
    /// `POD_NAMESPACE`, then the service account's namespace, then `default`.
    #[arg(long, env = "LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,

    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "LEADER_ELECTION_LEASE",
        default_value = "slack-oauth-operator"
    )]
    pub leader_election_lease: String,

    /// How long a leader holds the Lease without renewing it; a stopped leader that could not
    /// release it is replaced after this long.
    #[arg(long, env = "LEADER_ELECTION_LEASE_DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub leader_election_lease_duration: Duration,

    /// Name of the Secret, in the operator's own namespace (the leader-election namespace), that
    /// holds the key the OAuth `state` is signed with. The first replica to start creates it;
    /// every replica reads it. Deleting it (and restarting) rotates the key: links published
    /// before then stop working and are replaced.
    #[arg(
        long,
        env = "STATE_KEY_SECRET",
        default_value = "slack-oauth-operator-state-key"
    )]
    pub state_key_secret: String,

    /// How often each Ready grant's token is checked with Slack's `auth.test` (for example `1h`
    /// or `15m`). Checks are spread with jitter; after a restart every token is checked again,
    /// at most 20 a second and all within one interval. A token Slack refuses turns the grant
    /// `TokenRevoked` or `TokenInvalid`.
    #[arg(long, env = "TOKEN_CHECK_INTERVAL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub token_check_interval: Duration,

    /// How many grants are reconciled at once; the others wait their turn, in order. A
    /// reconcile mostly waits on the API server and Slack, so this bounds what a restart or a
    /// burst of grants asks of both at a time (the API requests themselves are bounded as well,
    /// to 16 in flight).
    #[arg(long, env = "MAX_CONCURRENT_RECONCILES", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub max_concurrent_reconciles: u16,

    /// How long a token that a new approval replaced (a scope change, a re-authorization) stays
    /// live after the new one is in the Secret, so that its consumers can switch, before the
    /// operator revokes it with `auth.revoke`.
    #[arg(long, env = "REVOKE_GRACE", default_value = "10m", value_parser = humantime::parse_duration)]
    pub revoke_grace: Duration,

    /// Refuse grants without `spec.teamID`. Without it, whoever opens a link may approve it from
    /// any workspace they own, and that workspace's token is stored.
    #[arg(long, env = "REQUIRE_TEAM_ID", default_value_t = false, action = clap::ArgAction::Set)]
    pub require_team_id: bool,

    /// Log filter, in `RUST_LOG` syntax (for example `info` or `slack_oauth_operator=debug`).
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The operator's validated settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// `<public-url>/oauth/callback`, sent to Slack as `redirect_uri`.
    pub redirect_uri: Url,
    /// `<public-url>/oauth/start/`: a grant's approval link is this with its token appended.
    pub start_url: Url,
    pub callback_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// `<slack-url>/oauth/v2/authorize`.
    pub authorize_url: Url,
    /// Base of Slack's Web API, always ending in `/`.
    pub slack_api_url: Url,
    pub slack_scim_url: Url,
    pub authorization_ttl: Duration,
    /// Empty means every namespace.
    pub watch_namespaces: Vec<String>,
    pub leader_election: Option<LeaderElection>,
    /// The operator's own namespace: where its Lease and state key live.
    pub namespace: String,
    /// The Secret holding the state key, in `namespace`.
    pub state_key_secret: String,
    pub require_team_id: bool,
    /// Grants reconciled at once, across every watched namespace.
    pub max_concurrent_reconciles: usize,
    pub token_check_interval: Duration,
    pub revoke_grace: Duration,
}

/// Where and how replicas elect the one that reconciles.
#[derive(Clone, Debug)]
pub struct LeaderElection {
    pub namespace: String,
    pub lease: String,
    pub duration: Duration,
}

/// A flag that does not make sense.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to parse --{flag} {value:?} as an absolute http(s) URL")]
    InvalidUrl {
        flag: &'static str,
        value: String,
        #[source]
        source: Option<url::ParseError>,
    },
    #[error(
        "failed to accept --{flag} {value:?}: Slack is reached over https only (http only for a loopback address, such as a local emulator)"
    )]
    InsecureSlackUrl { flag: &'static str, value: String },
    #[error("failed to accept --state-key-secret {0:?}: it must be a valid Secret name")]
    InvalidStateKeySecret(String),
    #[error("failed to accept --public-url {0:?}: it must not carry a query or fragment")]
    PublicUrlWithQuery(String),
    #[error(
        "failed to accept --public-url {0:?}: give the URL the callback path is under, without /oauth/callback (the operator adds it)"
    )]
    PublicUrlWithCallbackPath(String),
    #[error("failed to accept --authorization-ttl: it must be between 5 seconds and 30 days")]
    AuthorizationTtlOutOfRange,
    #[error("failed to accept --token-check-interval: it must be between 1 second and 7 days")]
    TokenCheckIntervalOutOfRange,
    #[error("failed to accept --revoke-grace: it must be at most 7 days")]
    RevokeGraceOutOfRange,
    #[error(
        "failed to accept --leader-election-lease-duration: it must be between 2 seconds and 5 minutes"
    )]
    LeaseDurationOutOfRange,
}

/// The callback path under `--public-url`.
pub const CALLBACK_PATH: &str = "oauth/callback";
/// The approval links' path under `--public-url`, with a trailing slash: the token follows.
pub const START_PATH: &str = "oauth/start/";
/// The longest `--authorization-ttl`.
const MAX_AUTHORIZATION_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

impl Flags {
    pub fn validate(self) -> Result<Config, Error> {
        let public = parse_base_url("public-url", &self.public_url)?;
        if public.query().is_some() || public.fragment().is_some() {
            return Err(Error::PublicUrlWithQuery(self.public_url));
        }
        if public
            .path()
            .trim_end_matches('/')
            .ends_with(&format!("/{CALLBACK_PATH}"))
        {
            return Err(Error::PublicUrlWithCallbackPath(self.public_url));
        }
        let redirect_uri = join(&public, CALLBACK_PATH, "public-url", &self.public_url)?;
        let start_url = join(&public, START_PATH, "public-url", &self.public_url)?;
        let slack = parse_base_url("slack-url", &self.slack_url)?;
        require_https("slack-url", &slack, &self.slack_url)?;
        let authorize_url = join(&slack, "oauth/v2/authorize", "slack-url", &self.slack_url)?;
        let slack_api_url = parse_base_url("slack-api-url", &self.slack_api_url)?;
        require_https("slack-api-url", &slack_api_url, &self.slack_api_url)?;
        let slack_scim_url = parse_base_url("slack-scim-url", &self.slack_scim_url)?;
        require_https("slack-scim-url", &slack_scim_url, &self.slack_scim_url)?;
        if !crate::callback::state::is_dns_subdomain(&self.state_key_secret) {
            return Err(Error::InvalidStateKeySecret(self.state_key_secret));
        }
        let namespace = self
            .leader_election_namespace
            .clone()
            .unwrap_or_else(own_namespace);
        if self.authorization_ttl < Duration::from_secs(5)
            || self.authorization_ttl > MAX_AUTHORIZATION_TTL
        {
            return Err(Error::AuthorizationTtlOutOfRange);
        }
        if self.token_check_interval < Duration::from_secs(1)
            || self.token_check_interval > Duration::from_secs(7 * 24 * 3600)
        {
            return Err(Error::TokenCheckIntervalOutOfRange);
        }
        if self.revoke_grace > Duration::from_secs(7 * 24 * 3600) {
            return Err(Error::RevokeGraceOutOfRange);
        }
        let leader_election = if self.leader_election {
            let duration = self.leader_election_lease_duration;
            if duration < Duration::from_secs(2) || duration > Duration::from_secs(300) {
                return Err(Error::LeaseDurationOutOfRange);
            }
            Some(LeaderElection {
                namespace: namespace.clone(),
                lease: self.leader_election_lease,
                duration,
            })
        } else {
            None
        };
        let mut watch_namespaces: Vec<String> = self
            .watch_namespaces
            .into_iter()
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .collect();
        watch_namespaces.sort();
        watch_namespaces.dedup();
        Ok(Config {
            max_concurrent_reconciles: usize::from(self.max_concurrent_reconciles),
            watch_namespaces,
            namespace,
            state_key_secret: self.state_key_secret,
            require_team_id: self.require_team_id,
            token_check_interval: self.token_check_interval,
            revoke_grace: self.revoke_grace,
            leader_election,
            redirect_uri,
            start_url,
            callback_addr: self.callback_addr,
            admin_addr: self.admin_addr,
            authorize_url,
            slack_api_url,
            slack_scim_url,
            authorization_ttl: self.authorization_ttl,
        })
    }
}

/// The namespace the operator runs in: `POD_NAMESPACE` (set by the Helm chart), else the
/// service account's, else `default`.
fn own_namespace() -> String {
    std::env::var("POD_NAMESPACE")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace").ok()
        })
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".to_owned())
}

/// Parses an http(s) URL and makes its path end in `/`, so that joining a relative path appends
/// to it instead of replacing its last segment.
fn parse_base_url(flag: &'static str, value: &str) -> Result<Url, Error> {
    let invalid = |source| Error::InvalidUrl {
        flag,
        value: value.to_owned(),
        source,
    };
    let mut url = Url::parse(value).map_err(|e| invalid(Some(e)))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(invalid(None));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// Slack is reached over https; plain http only on this host, for a local emulator.
fn require_https(flag: &'static str, url: &Url, value: &str) -> Result<(), Error> {
    let loopback = match url.host() {
        Some(url::Host::Domain(domain)) => domain == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    if url.scheme() == "https" || loopback {
        Ok(())
    } else {
        Err(Error::InsecureSlackUrl {
            flag,
            value: value.to_owned(),
        })
    }
}

fn join(base: &Url, path: &str, flag: &'static str, value: &str) -> Result<Url, Error> {
    base.join(path).map_err(|e| Error::InvalidUrl {
        flag,
        value: value.to_owned(),
        source: Some(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Flags {
        let mut all = vec!["slack-oauth-operator"];
        all.extend_from_slice(args);
        Flags::try_parse_from(all).expect("flags parse")
    }

    #[test]
    fn redirect_uri_is_the_callback_path_under_the_public_url() {
        let config = flags(&["--public-url", "https://slack-oauth.example.com"])
            .validate()
            .expect("valid");
        assert_eq!(
            config.redirect_uri.as_str(),
            "https://slack-oauth.example.com/oauth/callback"
        );
        let config = flags(&["--public-url", "https://example.com/operator/"])
            .validate()
            .expect("valid");
        assert_eq!(
            config.redirect_uri.as_str(),
            "https://example.com/operator/oauth/callback"
        );
        let config = flags(&["--public-url", "https://example.com/operator"])
            .validate()
            .expect("valid");
        assert_eq!(
            config.redirect_uri.as_str(),
            "https://example.com/operator/oauth/callback"
        );
    }

    #[test]
    fn defaults_point_at_slack_and_cover_govslack_by_flags() {
        let config = flags(&["--public-url", "https://x.example"])
            .validate()
            .expect("valid");
        assert_eq!(
            config.authorize_url.as_str(),
            "https://slack.com/oauth/v2/authorize"
        );
        assert_eq!(config.slack_api_url.as_str(), "https://slack.com/api/");
        assert_eq!(config.callback_addr.to_string(), "0.0.0.0:8080");
        assert_eq!(config.admin_addr.to_string(), "0.0.0.0:8081");
        let gov = flags(&[
            "--public-url",
            "https://x.example",
            "--slack-url",
            "https://slack-gov.com",
            "--slack-api-url",
            "https://slack-gov.com/api",
        ])
        .validate()
        .expect("valid");
        assert_eq!(
            gov.authorize_url.as_str(),
            "https://slack-gov.com/oauth/v2/authorize"
        );
        assert_eq!(gov.slack_api_url.as_str(), "https://slack-gov.com/api/");
    }

    #[test]
    fn authorization_ttl_takes_human_durations() {
        let config = flags(&[
            "--public-url",
            "https://x.example",
            "--authorization-ttl",
            "30m",
        ])
        .validate()
        .expect("valid");
        assert_eq!(config.authorization_ttl, Duration::from_secs(1800));
        assert_eq!(
            config.start_url.as_str(),
            "https://x.example/oauth/start/",
            "approval links sit beside the callback"
        );
        let too_short = flags(&[
            "--public-url",
            "https://x.example",
            "--authorization-ttl",
            "4s",
        ])
        .validate();
        assert!(matches!(too_short, Err(Error::AuthorizationTtlOutOfRange)));
    }

    #[test]
    fn watch_namespaces_and_leader_election_have_safe_defaults() {
        let config = flags(&["--public-url", "https://x.example"])
            .validate()
            .expect("valid");
        assert!(
            config.watch_namespaces.is_empty(),
            "every namespace by default"
        );
        let election = config.leader_election.expect("on by default");
        assert_eq!(election.lease, "slack-oauth-operator");
        assert_eq!(election.duration, Duration::from_secs(10));
        let config = flags(&[
            "--public-url",
            "https://x.example",
            "--watch-namespaces",
            "b,a,,a",
            "--leader-election",
            "false",
        ])
        .validate()
        .expect("valid");
        assert_eq!(config.watch_namespaces, vec!["a", "b"]);
        assert!(config.leader_election.is_none());
    }

    #[test]
    fn slack_is_reached_over_https_except_on_loopback() {
        for (flag, value) in [
            ("--slack-api-url", "http://slack.example.com/api"),
            ("--slack-url", "http://10.0.0.1:8080"),
        ] {
            let refused = flags(&["--public-url", "https://x.example", flag, value]).validate();
            assert!(
                matches!(refused, Err(Error::InsecureSlackUrl { .. })),
                "{value}"
            );
        }
        let local = flags(&[
            "--public-url",
            "https://x.example",
            "--slack-url",
            "http://127.0.0.1:9000",
            "--slack-api-url",
            "http://localhost:9000/api",
        ])
        .validate();
        assert!(local.is_ok());
    }

    #[test]
    fn public_url_must_be_an_absolute_http_url() {
        for bad in [
            "slack-oauth.example.com",
            "ftp://example.com",
            "https://example.com/?a=b",
            "https://example.com/oauth/callback",
            "https://example.com/slack/oauth/callback/",
        ] {
            assert!(
                flags(&["--public-url", bad]).validate().is_err(),
                "{bad} should be refused"
            );
        }
    }
}
