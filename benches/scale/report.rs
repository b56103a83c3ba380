//! The results: one Markdown table (figure, measured, bare client, ratio, goal, met?) and the raw
//! JSON beside it, under `<target>/bench/`.

use std::{path::PathBuf, time::Duration};

use serde_json::Value;

/// One line of the table.
pub struct Row {
    pub figure: String,
    pub measured: String,
    /// What the bare client took for the same API work in this run; empty when nothing compares.
    pub bare: String,
    pub ratio: Option<f64>,
    pub goal: String,
    /// `None` when the goal is to report, or does not apply to this run's sizes.
    pub met: Option<bool>,
}

impl Row {
    pub fn new(figure: impl Into<String>, measured: impl Into<String>) -> Self {
        Self {
            figure: figure.into(),
            measured: measured.into(),
            bare: String::new(),
            ratio: None,
            goal: "report".to_owned(),
            met: None,
        }
    }

    pub fn bare(mut self, bare: impl Into<String>, ratio: f64) -> Self {
        self.bare = bare.into();
        self.ratio = Some(ratio);
        self
    }

    pub fn goal(mut self, goal: impl Into<String>, met: Option<bool>) -> Self {
        self.goal = goal.into();
        self.met = met;
        self
    }
}

pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| figure | measured | bare client (same run) | ratio | goal | met? |\n\
         | --- | --- | --- | ---: | --- | --- |\n",
    );
    for row in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            row.figure,
            row.measured,
            if row.bare.is_empty() {
                "—"
            } else {
                &row.bare
            },
            row.ratio
                .map_or_else(|| "—".to_owned(), |r| format!("{r:.2} ×")),
            row.goal,
            match row.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "—",
            }
        ));
    }
    out
}

/// `<target>/bench/`, beside cargo's `tmp/`.
pub fn out_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map_or_else(|| PathBuf::from("target"), PathBuf::from)
        .join("bench");
    std::fs::create_dir_all(&dir).expect("create <target>/bench");
    dir
}

/// Writes `scale.md` (the heading, the table, then the notes as a list) and `scale.json`;
/// returns their paths.
pub fn write(heading: &str, rows: &[Row], notes: &[String], raw: &Value) -> (PathBuf, PathBuf) {
    let dir = out_dir();
    let markdown = dir.join("scale.md");
    let json = dir.join("scale.json");
    std::fs::write(
        &markdown,
        format!("{heading}\n{}\n{}", table(rows), notes_list(notes)),
    )
    .expect("write scale.md");
    std::fs::write(
        &json,
        serde_json::to_string_pretty(raw).expect("serialise the results"),
    )
    .expect("write scale.json");
    (markdown, json)
}

pub fn notes_list(notes: &[String]) -> String {
    notes.iter().map(|note| format!("- {note}\n")).collect()
}

pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// `p50 12 ms / p99 40 ms`.
pub fn p50_p99(p50: Duration, p99: Duration) -> String {
    format!("p50 {:.0} ms / p99 {:.0} ms", ms(p50), ms(p99))
}
