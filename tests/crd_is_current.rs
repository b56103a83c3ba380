//! The committed CRD under `crds/` is exactly what `crdgen` prints for the current `src/api.rs`.

use slack_oauth_operator::crdgen::{CRD_PATH, REGENERATE_COMMAND, crd_yaml};

#[test]
fn committed_crd_matches_the_generated_one() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(CRD_PATH);
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = crd_yaml().expect("render the CRD");
    assert!(
        committed == generated,
        "{CRD_PATH} is stale (or missing): it differs from what src/api.rs generates. Regenerate it with `{REGENERATE_COMMAND}` and commit the result."
    );
}

#[test]
fn chart_crd_template_matches_the_generated_one() {
    use slack_oauth_operator::crdgen::{CHART_CRD_PATH, chart_crd_template};
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(CHART_CRD_PATH);
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = chart_crd_template().expect("render the chart CRD");
    assert!(
        committed == generated,
        "{CHART_CRD_PATH} is stale (or missing): regenerate it with `{REGENERATE_COMMAND}` and commit the result."
    );
}
