//! The callback's query string, parsed before anything else. No I/O.

use secrecy::SecretString;

/// The longest query accepted.
pub const MAX_QUERY_LEN: usize = 4096;

/// The callback's query parameters. `code` is a secret: it has no `Debug`.
pub struct Params {
    pub state: Option<String>,
    pub code: Option<SecretString>,
    pub error: Option<String>,
}

/// A query Slack would never send.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("failed to parse the callback's query: it is not one Slack sends")]
pub struct MalformedQuery;

/// Parses the callback's query. A repeated `state`, `code` or `error`, or an overlong query, is
/// never something Slack sends.
pub fn parse(query: &str) -> Result<Params, MalformedQuery> {
    if query.len() > MAX_QUERY_LEN {
        return Err(MalformedQuery);
    }
    let mut params = Params {
        state: None,
        code: None,
        error: None,
    };
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let slot_taken = match key.as_ref() {
            "state" => params.state.replace(value.into_owned()).is_some(),
            "code" => params
                .code
                .replace(SecretString::from(value.into_owned()))
                .is_some(),
            "error" => params.error.replace(value.into_owned()).is_some(),
            _ => false,
        };
        if slot_taken {
            return Err(MalformedQuery);
        }
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_parameters_are_malformed() {
        assert!(parse("state=a&state=b").is_err());
        assert!(parse("code=a&code=b&state=s").is_err());
        let params = parse("state=s1.x&code=c&other=1").expect("parse");
        assert_eq!(params.state.as_deref(), Some("s1.x"));
        assert!(params.code.is_some());
        assert!(parse(&"a".repeat(MAX_QUERY_LEN + 1)).is_err());
    }
}
