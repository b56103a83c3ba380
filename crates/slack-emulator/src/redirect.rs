//! Slack's Redirect URL rules, as pure functions.
//!
//! A `redirect_uri` must use HTTPS, carry no `#` fragment, and equal or be a sub-path of one of
//! the app's configured Redirect URLs with the same scheme, host and port. Slack documents
//! nothing about plain `http://localhost`; the emulator accepts `http` for loopback hosts only
//! (`127.0.0.1`, `[::1]`, `localhost`), because tests serve the callback there.

use url::Url;

/// Whether `candidate` may be used as a `redirect_uri` for an app configured with `configured`.
pub(crate) fn is_allowed(candidate: &str, configured: &[String]) -> bool {
    let Some(candidate) = parse(candidate) else {
        return false;
    };
    configured
        .iter()
        .filter_map(|c| parse(c))
        .any(|c| covers(&c, &candidate))
}

/// The URL Slack uses when the authorize request sends no `redirect_uri`: the first configured.
pub(crate) fn default_for(configured: &[String]) -> Option<Url> {
    configured.first().and_then(|c| parse(c))
}

/// Parses a redirect URL and checks the rules that do not depend on the configuration.
pub(crate) fn parse(raw: &str) -> Option<Url> {
    // The raw text is checked too: `Url` drops an empty fragment (`…/cb#`).
    if raw.contains('#') {
        return None;
    }
    let url = Url::parse(raw).ok()?;
    let scheme_ok = match url.scheme() {
        "https" => true,
        "http" => is_loopback(&url),
        _ => false,
    };
    let plain = url.username().is_empty() && url.password().is_none() && url.fragment().is_none();
    (scheme_ok && plain && url.host().is_some()).then_some(url)
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Whether `configured` accepts `candidate`: same scheme, host and port, a path equal to or
/// below the configured one (segment-wise: `/cb` covers `/cb/x`, not `/cbx`), and the same
/// query (Slack says nothing about queries; requiring equality is the strict reading).
fn covers(configured: &Url, candidate: &Url) -> bool {
    if configured.scheme() != candidate.scheme()
        || configured.host() != candidate.host()
        || configured.port_or_known_default() != candidate.port_or_known_default()
        || configured.query() != candidate.query()
    {
        return false;
    }
    let base = configured.path().trim_end_matches('/');
    let path = candidate.path();
    path == base
        || path == configured.path()
        || path
            .strip_prefix(base)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(candidate: &str, configured: &str) -> bool {
        is_allowed(candidate, &[configured.to_owned()])
    }

    #[test]
    fn equal_and_sub_paths_are_allowed() {
        let configured = "https://example.com/path";
        assert!(allowed("https://example.com/path", configured));
        assert!(allowed("https://example.com/path/subdir/other", configured));
        assert!(allowed("https://example.com:443/path", configured));
        assert!(allowed(
            "https://example.com/anything",
            "https://example.com"
        ));
        assert!(allowed(
            "https://example.com/path/x",
            "https://example.com/path/"
        ));
    }

    #[test]
    fn other_scheme_host_port_parent_or_sibling_paths_are_refused() {
        let configured = "https://example.com/path";
        assert!(!allowed("http://example.com/path", configured));
        assert!(!allowed("https://example.org/path", configured));
        assert!(!allowed("https://example.com:8443/path", configured));
        assert!(!allowed("https://example.com/", configured));
        assert!(!allowed("https://example.com/pathology", configured));
        assert!(!allowed("https://example.com/path/../other", configured));
        assert!(!allowed("https://evil.example.com/path", configured));
    }

    #[test]
    fn fragments_credentials_and_odd_schemes_are_refused() {
        let configured = "https://example.com/path";
        assert!(!allowed("https://example.com/path#x", configured));
        assert!(!allowed("https://example.com/path#", configured));
        assert!(!allowed("https://user:pw@example.com/path", configured));
        assert!(!allowed("javascript:alert(1)", configured));
        assert!(!allowed("not a url", configured));
    }

    #[test]
    fn plain_http_is_accepted_only_for_loopback_hosts() {
        assert!(allowed(
            "http://127.0.0.1:8080/cb",
            "http://127.0.0.1:8080/cb"
        ));
        assert!(allowed(
            "http://localhost:8080/cb",
            "http://localhost:8080/cb"
        ));
        assert!(allowed("http://[::1]:8080/cb", "http://[::1]:8080/cb"));
        assert!(!allowed("http://example.com/cb", "http://example.com/cb"));
        assert!(!allowed(
            "http://127.0.0.1:8081/cb",
            "http://127.0.0.1:8080/cb"
        ));
    }

    #[test]
    fn queries_must_match_the_configured_url() {
        assert!(!allowed(
            "https://example.com/cb?x=1",
            "https://example.com/cb"
        ));
        assert!(allowed(
            "https://example.com/cb?x=1",
            "https://example.com/cb?x=1"
        ));
    }
}
