//! Prints the SlackOAuthGrant CustomResourceDefinition as YAML; with `--helm`, as the Helm
//! chart's template.

use std::process::ExitCode;

use slack_oauth_operator::crdgen::{chart_crd_template, crd_yaml};

fn main() -> ExitCode {
    let helm = std::env::args().skip(1).any(|a| a == "--helm");
    let rendered = if helm {
        chart_crd_template()
    } else {
        crd_yaml()
    };
    match rendered {
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
