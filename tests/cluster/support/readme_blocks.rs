//! The README's commands as the tests run them: the `console` blocks of one `## ` section (each
//! `$ ` command with the output printed under it), its other code blocks (files a reader writes,
//! such as a values file), one bash that runs the commands as printed, and how real output is
//! matched against printed output.
//!
//! A block whose fence follows a `<!-- not run by tests: why -->` line is set apart: no test runs
//! it, and the reason says why (a registry a test cannot reach, `make test` itself).

use std::{
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines},
    process::{Child, ChildStdin, ChildStdout, Command},
};

use super::tools::tool;

const SKIP_MARKER: &str = "<!-- not run by tests";
const DONE: &str = "__readme_command_done__";

/// One command of a `console` block, with the output the README prints under it.
#[derive(Debug)]
pub struct Printed {
    pub command: String,
    pub output: Vec<String>,
}

/// A `console` block, in the README's order.
#[derive(Debug)]
pub struct ConsoleBlock {
    pub commands: Vec<Printed>,
    /// Why no test runs it, from the `<!-- not run by tests: why -->` line before its fence.
    pub not_run: Option<String>,
}

/// The lines of the README section headed `heading` (a `## ` heading, matched by its start),
/// from the heading to the next `## ` heading.
fn section<'a>(readme: &'a str, heading: &str) -> Vec<&'a str> {
    let mut lines = Vec::new();
    let mut in_section = false;
    for line in readme.lines() {
        if let Some(title) = line.strip_prefix("## ") {
            in_section = title.starts_with(heading);
        }
        if in_section {
            lines.push(line);
        }
    }
    lines
}

/// The `console` blocks of the README section headed `heading`, in order, with those set apart
/// by the marker.
pub fn console_blocks(readme: &str, heading: &str) -> Vec<ConsoleBlock> {
    let mut blocks = Vec::new();
    let mut previous = "";
    let mut block: Option<(usize, ConsoleBlock)> = None;
    for line in section(readme, heading) {
        if let Some((indent, current)) = &mut block {
            let text = line.get(*indent..).unwrap_or(line.trim_start());
            let commands = &mut current.commands;
            if text.trim_start().starts_with("```") {
                blocks.push(block.take().expect("in a block").1);
            } else if let Some(command) = text.strip_prefix("$ ") {
                commands.push(Printed {
                    command: command.to_owned(),
                    output: Vec::new(),
                });
            } else if let Some(last) = commands.last_mut() {
                if last.command.ends_with('\\') && last.output.is_empty() {
                    last.command.push('\n');
                    last.command.push_str(text);
                } else {
                    last.output.push(text.to_owned());
                }
            }
            continue;
        }
        if line.trim_start() == "```console" {
            let not_run = previous.trim_start().strip_prefix(SKIP_MARKER).map(|rest| {
                rest.trim_start_matches(':')
                    .trim_end()
                    .trim_end_matches("-->")
                    .trim()
                    .to_owned()
            });
            block = Some((
                line.len() - line.trim_start().len(),
                ConsoleBlock {
                    commands: Vec::new(),
                    not_run,
                },
            ));
        }
        if !line.trim().is_empty() {
            previous = line;
        }
    }
    blocks
}

/// The text of the first code block in the section headed `heading` whose first line is
/// `first_line` (such as `# values-pingfederate.yaml`), that line included, unindented as far as
/// its fence is.
pub fn code_block(readme: &str, heading: &str, first_line: &str) -> Option<String> {
    let lines = section(readme, heading);
    let mut i = 0;
    while i < lines.len() {
        let fence = lines[i];
        i += 1;
        if !fence.trim_start().starts_with("```") {
            continue;
        }
        let indent = fence.len() - fence.trim_start().len();
        let start = i;
        while i < lines.len() && !lines[i].trim_start().starts_with("```") {
            i += 1;
        }
        let body: Vec<&str> = lines[start..i]
            .iter()
            .map(|l| l.get(indent..).unwrap_or(l.trim_start()))
            .collect();
        i += 1;
        if body.first().map(|l| l.trim_end()) == Some(first_line) {
            return Some(body.join("\n") + "\n");
        }
    }
    None
}

/// One bash, fed the commands on its standard input, its standard error merged into its output.
pub struct Shell {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    /// How long one command may take.
    pub timeout: Duration,
}

impl Shell {
    /// Starts bash in `dir`, with kubectl and helm first on its `PATH` and `env` set (`None`
    /// removes a variable).
    pub fn start(dir: &Path, env: &[(&str, Option<&str>)]) -> Self {
        // kubectl always (every section runs it); helm where the tests name it.
        let mut tools = vec![tool("KUBECTL")];
        tools.extend(std::env::var_os("HELM").map(std::path::PathBuf::from));
        let mut path = Vec::new();
        for tool in tools {
            let dir = tool.parent().expect("the tool's directory").to_path_buf();
            if !path.contains(&dir) {
                path.push(dir);
            }
        }
        path.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        let mut command = Command::new("bash");
        command
            .args(["--noprofile", "--norc"])
            .current_dir(dir)
            .env("PATH", std::env::join_paths(path).expect("a PATH"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        // A person types these at a shell of their own, not inside `make test`: a `make` they run
        // is a top-level one (no "make[1]: Entering directory" lines, no jobserver).
        for name in ["MAKELEVEL", "MAKEFLAGS", "MFLAGS"] {
            command.env_remove(name);
        }
        for (name, value) in env {
            match value {
                Some(value) => command.env(name, value),
                None => command.env_remove(name),
            };
        }
        let mut child = command.spawn().expect("start bash");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Self {
            child,
            stdin,
            stdout,
            timeout: Duration::from_secs(120),
        }
    }

    /// Runs `command`, typing `typed` on the next line (for `read`); its output and exit status.
    pub async fn run(&mut self, command: &str, typed: Option<&str>) -> (String, i32) {
        let mut script = format!("{{ {command}\n}} 2>&1\n");
        if let Some(typed) = typed {
            script.push_str(typed);
            script.push('\n');
        }
        script.push_str(&format!("printf '\\n{DONE} %s\\n' \"$?\"\n"));
        self.stdin
            .write_all(script.as_bytes())
            .await
            .expect("feed bash");
        let mut output = Vec::new();
        let read = async {
            while let Some(line) = self.stdout.next_line().await.expect("read bash") {
                if let Some(status) = line.strip_prefix(&format!("{DONE} ")) {
                    return status.trim().parse().unwrap_or(-1);
                }
                output.push(line);
            }
            panic!("bash exited while running {command:?}: {output:?}");
        };
        let status = tokio::time::timeout(self.timeout, read)
            .await
            .unwrap_or_else(|_| panic!("{command:?} did not finish within {:?}", self.timeout));
        if output.last().is_some_and(String::is_empty) {
            output.pop();
        }
        (output.join("\n"), status)
    }

    /// Runs `printed` until it succeeds with the output the README prints under it, or, for a
    /// command that only reads (`retried`), until 30 s have passed; its output. Panics with the
    /// reason otherwise. `replace` turns the README's addresses into the test's.
    pub async fn run_as_printed(
        &mut self,
        printed: &Printed,
        typed: Option<&str>,
        retried: bool,
        replace: &[(&str, &str)],
    ) -> String {
        let started = Instant::now();
        loop {
            let (output, status) = self.run(&printed.command, typed).await;
            let why = if status == 0 {
                mismatch(&printed.output, &output, replace)
            } else {
                Some(format!("it exited with {status}"))
            };
            match why {
                None => return output,
                Some(why) if !retried || started.elapsed() > Duration::from_secs(30) => panic!(
                    "the README's `{}` does not run as printed: {why}\n--- its output\n{output}",
                    printed.command
                ),
                Some(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The cells of a `kubectl get` row, by the columns of its header (kubectl aligns them).
fn cells(header: &str, row: &str) -> Vec<(String, String)> {
    let mut starts = Vec::new();
    let mut previous = ' ';
    for (i, c) in header.char_indices() {
        if c != ' ' && previous == ' ' {
            starts.push(i);
        }
        previous = c;
    }
    starts
        .iter()
        .enumerate()
        .map(|(n, &start)| {
            let end = starts.get(n + 1).copied().unwrap_or(usize::MAX);
            let name = header[start..end.min(header.len())].trim().to_owned();
            let value = row
                .get(start..end.min(row.len()))
                .unwrap_or_default()
                .trim()
                .to_owned();
            (name, value)
        })
        .collect()
}

/// Whether `line` matches the printed `pattern`, where `...` stands for any text.
pub fn matches(pattern: &str, line: &str) -> bool {
    let mut parts = pattern.split("...");
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = line.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    for (i, part) in parts.iter().enumerate() {
        if i == parts.len() - 1 {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

/// Whether the `actual` lines start with the `printed` ones, where a printed line `...` stands
/// for any number of lines (output the README leaves out, such as a build's progress).
fn lines_match(printed: &[String], actual: &[&str]) -> bool {
    match printed.split_first() {
        None => true,
        Some((first, rest)) if first == "..." => {
            (0..=actual.len()).any(|skipped| lines_match(rest, &actual[skipped..]))
        }
        Some((first, rest)) => actual
            .split_first()
            .is_some_and(|(line, more)| matches(first, line) && lines_match(rest, more)),
    }
}

/// Why `actual` does not match what the README prints, if it does not. `replace` turns the
/// README's addresses into the test's (`https://slack.com` into the emulator's).
pub fn mismatch(printed: &[String], actual: &str, replace: &[(&str, &str)]) -> Option<String> {
    let actual: Vec<&str> = actual.lines().collect();
    let first = printed.first()?;
    if first.starts_with("NAME ") {
        let header = actual.first().copied().unwrap_or_default();
        let printed_columns: Vec<&str> = first.split_whitespace().collect();
        let columns: Vec<&str> = header.split_whitespace().collect();
        if printed_columns != columns {
            return Some(format!(
                "columns {columns:?}, the README prints {printed_columns:?}"
            ));
        }
        for (n, row) in printed.iter().enumerate().skip(1) {
            let expected = cells(first, row);
            let got = cells(header, actual.get(n).copied().unwrap_or_default());
            for (column, value) in &expected {
                if column == "AGE" {
                    continue;
                }
                let real = got
                    .iter()
                    .find(|(c, _)| c == column)
                    .map(|(_, v)| v.as_str());
                if real != Some(value.as_str()) {
                    return Some(format!("{column} is {real:?}, the README prints {value:?}"));
                }
            }
        }
        return None;
    }
    let patterns: Vec<String> = printed
        .iter()
        .map(|line| {
            replace
                .iter()
                .fold(line.clone(), |line, (from, to)| line.replace(from, to))
        })
        .collect();
    if lines_match(&patterns, &actual) {
        return None;
    }
    if !patterns.iter().any(|p| p == "...") {
        for (n, pattern) in patterns.iter().enumerate() {
            let real = actual.get(n).copied().unwrap_or_default();
            if !matches(pattern, real) {
                return Some(format!(
                    "line {} is {real:?}, the README prints {:?}",
                    n + 1,
                    printed[n]
                ));
            }
        }
    }
    Some(format!("its lines do not match the README's {printed:#?}"))
}
