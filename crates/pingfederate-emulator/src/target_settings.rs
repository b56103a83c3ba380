//! The ConfigField rules of `outboundProvision.targetSettings` (reference §3.1), as a pure
//! function of (the connection sent, which fields are secret, which `encryptedValue`s this
//! server issued).
//!
//! - A secret field sent with `value` gets a new secret: the plaintext is remembered under a
//!   fresh `encryptedValue`, and the stored field keeps only that `encryptedValue`.
//! - A secret field sent with an `encryptedValue` this server issued is stored as sent. Since
//!   PingFederate encrypts with its own key, any `encryptedValue` it made decrypts, including
//!   an older one: sending back a stale `encryptedValue` restores the older secret, as it would
//!   on PingFederate (Inference; the reference only says "send it back as it came").
//! - Any other `encryptedValue` is a validation error, as is one on a plain field.
//! - A secret field with neither has no value defined ("if a value is defined", ConfigField).
//! - Plain fields are stored as sent. Every member of a field other than `value` and
//!   `encryptedValue` (`name`, `inherited`, anything else) is kept untouched.

use std::collections::{BTreeSet, HashMap};

use serde_json::{Map, Value};

use crate::ids;

/// One problem found in a connection, in the shape of PingFederate's `ValidationError`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ValidationError {
    pub error_id: &'static str,
    pub field_path: String,
    pub message: String,
}

impl ValidationError {
    pub(crate) fn new(
        error_id: &'static str,
        field_path: impl Into<String>,
        message: &str,
    ) -> Self {
        Self {
            error_id,
            field_path: field_path.into(),
            message: message.to_owned(),
        }
    }

    pub(crate) fn to_json(&self) -> Value {
        serde_json::json!({
            "errorId": self.error_id,
            "fieldPath": self.field_path,
            "message": self.message,
        })
    }
}

/// What to do with an `encryptedValue` this server never issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Foreign {
    /// Refuse it (a PUT).
    Refuse,
    /// Take it as a secret whose plaintext is unknown (a connection a test seeds, perhaps
    /// copied from a real PingFederate's export).
    Accept,
}

/// A connection ready to store, and the `encryptedValue`s to register for it.
#[derive(Debug)]
pub(crate) struct Sealed {
    pub connection: Value,
    /// New `encryptedValue` → the plaintext it stands for (`None`: unknown).
    pub issued: Vec<(String, Option<String>)>,
}

/// Applies the ConfigField rules to `connection.outboundProvision.targetSettings`. On error
/// nothing is issued; every problem found is reported.
pub(crate) fn seal(
    mut connection: Value,
    secret_fields: &BTreeSet<String>,
    known: &HashMap<String, Option<String>>,
    foreign: Foreign,
) -> Result<Sealed, Vec<ValidationError>> {
    let mut issued = Vec::new();
    let mut errors = Vec::new();
    let Some(settings) = connection
        .pointer_mut("/outboundProvision/targetSettings")
        .filter(|settings| !settings.is_null())
    else {
        return Ok(Sealed { connection, issued });
    };
    let Some(fields) = settings.as_array_mut() else {
        return Err(vec![ValidationError::new(
            "invalid_target_settings",
            "outboundProvision.targetSettings",
            "targetSettings must be a list of configuration fields.",
        )]);
    };
    let mut seen = BTreeSet::new();
    for (index, field) in fields.iter_mut().enumerate() {
        let path = format!("outboundProvision.targetSettings[{index}]");
        let Some(field) = field.as_object_mut() else {
            errors.push(ValidationError::new(
                "invalid_field",
                path,
                "A configuration field must be an object.",
            ));
            continue;
        };
        let Some(name) = field.get("name").and_then(Value::as_str).map(str::to_owned) else {
            errors.push(ValidationError::new(
                "missing_field_name",
                format!("{path}.name"),
                "A configuration field needs a name.",
            ));
            continue;
        };
        if !seen.insert(name.clone()) {
            errors.push(ValidationError::new(
                "duplicate_field",
                format!("{path}.name"),
                &format!("The configuration field '{name}' appears more than once."),
            ));
            continue;
        }
        let value = match string_member(field, "value", &path) {
            Ok(value) => value,
            Err(error) => {
                errors.push(error);
                continue;
            }
        };
        let encrypted = match string_member(field, "encryptedValue", &path) {
            Ok(encrypted) => encrypted,
            Err(error) => {
                errors.push(error);
                continue;
            }
        };
        if secret_fields.contains(&name) {
            match (value, encrypted) {
                // `value` wins: it is how a new secret is set.
                (Some(plaintext), _) => {
                    let encrypted = ids::encrypted_value();
                    field.remove("value");
                    field.insert("encryptedValue".into(), Value::String(encrypted.clone()));
                    issued.push((encrypted, Some(plaintext)));
                }
                (None, Some(encrypted)) if known.contains_key(&encrypted) => {}
                (None, Some(encrypted)) if foreign == Foreign::Accept => {
                    issued.push((encrypted, None));
                }
                (None, Some(_)) => errors.push(ValidationError::new(
                    "invalid_encrypted_value",
                    format!("{path}.encryptedValue"),
                    &format!(
                        "The encrypted value of '{name}' could not be decrypted. Send the \
                         encryptedValue exactly as it was read, or a new value."
                    ),
                )),
                (None, None) => {
                    // Neither: the field has no value. A JSON null counts as absent.
                    field.remove("value");
                    field.remove("encryptedValue");
                }
            }
        } else if encrypted.is_some() {
            errors.push(ValidationError::new(
                "unexpected_encrypted_value",
                format!("{path}.encryptedValue"),
                &format!("'{name}' is not an encrypted field; send its value instead."),
            ));
        }
    }
    if errors.is_empty() {
        Ok(Sealed { connection, issued })
    } else {
        Err(errors)
    }
}

/// A member that must be a string when present; JSON `null` counts as absent.
fn string_member(
    field: &Map<String, Value>,
    member: &str,
    path: &str,
) -> Result<Option<String>, ValidationError> {
    match field.get(member) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(ValidationError::new(
            "invalid_field_value",
            format!("{path}.{member}"),
            &format!("{member} must be a string."),
        )),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn secrets(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn a_new_secret_is_stored_encrypted_and_other_members_stay() {
        let sent = json!({"outboundProvision": {"targetSettings": [
            {"name": "TOKEN", "value": "xoxp-1", "inherited": false},
            {"name": "MODE", "value": "create"},
        ]}});
        let sealed =
            seal(sent, &secrets(&["TOKEN"]), &HashMap::new(), Foreign::Refuse).expect("valid");
        let fields = &sealed.connection["outboundProvision"]["targetSettings"];
        assert_eq!(fields[0]["inherited"], false);
        assert!(fields[0].get("value").is_none());
        let encrypted = fields[0]["encryptedValue"].as_str().expect("encrypted");
        assert_eq!(
            sealed.issued,
            vec![(encrypted.to_owned(), Some("xoxp-1".to_owned()))]
        );
        assert_eq!(fields[1], json!({"name": "MODE", "value": "create"}));
    }

    #[test]
    fn every_problem_is_reported_and_nothing_is_issued() {
        let sent = json!({"outboundProvision": {"targetSettings": [
            {"name": "TOKEN", "encryptedValue": "never-issued"},
            {"name": "MODE", "encryptedValue": "x"},
            {"name": "MODE", "value": "again"},
            {"value": "nameless"},
            {"name": "PASSWORD", "value": "new"},
        ]}});
        let errors = seal(
            sent,
            &secrets(&["TOKEN", "PASSWORD"]),
            &HashMap::new(),
            Foreign::Refuse,
        )
        .expect_err("invalid");
        let ids: Vec<_> = errors.iter().map(|e| e.error_id).collect();
        assert_eq!(
            ids,
            vec![
                "invalid_encrypted_value",
                "unexpected_encrypted_value",
                "duplicate_field",
                "missing_field_name"
            ]
        );
        assert_eq!(
            errors[0].field_path,
            "outboundProvision.targetSettings[0].encryptedValue"
        );
    }

    #[test]
    fn without_target_settings_there_is_nothing_to_seal() {
        let sent = json!({"id": "c", "name": "n"});
        let sealed = seal(
            sent.clone(),
            &secrets(&["TOKEN"]),
            &HashMap::new(),
            Foreign::Refuse,
        )
        .expect("valid");
        assert_eq!(sealed.connection, sent);
        assert!(sealed.issued.is_empty());
    }
}
