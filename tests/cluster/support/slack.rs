//! A Slack emulator with one app registered, whose secrets are recorded for the log scan.

use std::path::PathBuf;

/// A Slack emulator with one app registered for an operator on `callback_port`. On drop it
/// records every secret value it saw or issued for the final log scan (`hack/scan-logs.py`).
pub struct TestSlack {
    pub emulator: slack_emulator::SlackEmulator,
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uri: String,
    name: String,
}

impl TestSlack {
    pub async fn start(name: &str, callback_port: u16) -> Self {
        let emulator = slack_emulator::SlackEmulator::start()
            .await
            .expect("start the Slack emulator");
        let (client_id, client_secret) = {
            use rand::RngExt;
            let mut rng = rand::rng();
            (
                format!(
                    "{}.{}",
                    rng.random_range(1_000_000_000u64..9_999_999_999),
                    rng.random_range(1_000_000_000u64..9_999_999_999)
                ),
                (0..32)
                    .map(|_| format!("{:x}", rng.random_range(0..16u8)))
                    .collect::<String>(),
            )
        };
        let redirect_uri = format!("http://127.0.0.1:{callback_port}/oauth/callback");
        emulator.register_app(slack_emulator::App::new(
            &client_id,
            &client_secret,
            &redirect_uri,
        ));
        emulator.set_approver(slack_emulator::Approver::workspace_owner("T0ACME", "Acme"));
        Self {
            emulator,
            client_id,
            client_secret,
            redirect_uri,
            name: name.to_owned(),
        }
    }

    pub fn url(&self) -> String {
        self.emulator.url()
    }

    pub fn api_url(&self) -> String {
        self.emulator.api_url()
    }

    /// Every token Slack issued.
    pub fn tokens(&self) -> Vec<slack_emulator::IssuedToken> {
        self.emulator.issued_tokens()
    }

    /// Every secret value this Slack saw or issued: the client secret, codes, tokens.
    pub fn secret_values(&self) -> Vec<String> {
        let mut values = vec![self.client_secret.clone()];
        for token in self.emulator.issued_tokens() {
            values.push(token.token.clone());
            values.extend(token.refresh_token.clone());
        }
        for call in self.emulator.calls() {
            values.extend(call.params.get("code").cloned());
        }
        values
    }
}

impl Drop for TestSlack {
    fn drop(&mut self) {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("secrets");
        let _ = std::fs::create_dir_all(&dir);
        let unique: u64 = {
            use rand::RngExt;
            rand::rng().random()
        };
        let _ = std::fs::write(
            dir.join(format!("{}-{unique:x}.txt", self.name)),
            self.secret_values().join("\n"),
        );
    }
}
