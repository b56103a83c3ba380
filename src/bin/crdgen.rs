//! Prints the SlackOAuthGrant CustomResourceDefinition as YAML.

use std::process::ExitCode;

fn main() -> ExitCode {
    match slack_oauth_operator::crdgen::crd_yaml() {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("crdgen: {error}");
            ExitCode::FAILURE
        }
    }
}
