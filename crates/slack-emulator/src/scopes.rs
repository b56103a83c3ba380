//! Scope lists as Slack writes them: comma-separated, e.g. `chat:write,users:read.email`.

/// Why a scope list is refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct InvalidScope;

/// Parses a comma-separated scope list; absent or empty means none. Each scope is a lowercase
/// word optionally followed by `:word` parts, with `.`, `_` and `-` inside words (`admin`,
/// `chat:write.public`, `incoming-webhook`, `admin.users:read`). Empty items (`a,,b`) and
/// whitespace are refused rather than trimmed, the strict reading of "comma-separated".
/// Duplicates are dropped, keeping the first.
pub(crate) fn parse(raw: Option<&str>) -> Result<Vec<String>, InvalidScope> {
    let raw = raw.unwrap_or("");
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    let mut scopes: Vec<String> = Vec::new();
    for scope in raw.split(',') {
        if !is_well_formed(scope) {
            return Err(InvalidScope);
        }
        if !scopes.iter().any(|s| s == scope) {
            scopes.push(scope.to_owned());
        }
    }
    Ok(scopes)
}

fn is_well_formed(scope: &str) -> bool {
    !scope.is_empty()
        && scope.len() <= 100
        && scope.split(':').all(|part| {
            part.starts_with(|c: char| c.is_ascii_lowercase())
                && part.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
                })
        })
}

/// Scopes that exist only as user scopes; requesting them as bot scopes is `invalid_scope`.
/// `admin` is a user-token scope \[ADMINSCOPE\].
pub(crate) fn is_user_only(scope: &str) -> bool {
    scope == "admin"
}

/// `a` followed by the members of `b` not in `a`.
pub(crate) fn union(a: &[String], b: &[String]) -> Vec<String> {
    let mut all = a.to_vec();
    for scope in b {
        if !all.contains(scope) {
            all.push(scope.clone());
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_scope_lists_parse() {
        assert_eq!(parse(None), Ok(vec![]));
        assert_eq!(parse(Some("")), Ok(vec![]));
        assert_eq!(
            parse(Some(
                "chat:write,users:read.email,incoming-webhook,admin,chat:write"
            )),
            Ok(vec![
                "chat:write".to_owned(),
                "users:read.email".to_owned(),
                "incoming-webhook".to_owned(),
                "admin".to_owned(),
            ])
        );
    }

    #[test]
    fn malformed_scope_lists_are_refused() {
        for bad in [
            "a,,b",
            "chat:write, users:read",
            "Chat:write",
            ":x",
            "a:",
            "a b",
            "a;b",
        ] {
            assert_eq!(parse(Some(bad)), Err(InvalidScope), "{bad}");
        }
    }
}
