//! The machine the tests run on: the repository, temporary directories, free ports, the tools
//! `make test` installs, and the one way every test runs a program to completion.

use std::{
    ffi::{OsStr, OsString},
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

/// The repository root, for files such as `crds/` and `examples/`.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A directory removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let unique: u64 = {
            use rand::RngExt;
            rand::rng().random()
        };
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{prefix}-{unique:x}"));
        std::fs::create_dir_all(&path).expect("temp dir");
        Self { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A free loopback port. Another process could take it before it is used, which on a test
/// machine is rare enough; the ports are below the ephemeral range only by chance.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The path of a tool (`KUBECTL`, `HELM`, `CHROMEDRIVER`) that `make test` installs and names in
/// the environment. Panics with instructions when it is not named, so a test that needs the tool
/// can never pass without it.
pub fn tool(variable: &str) -> PathBuf {
    tool_from(variable, std::env::var_os(variable)).unwrap_or_else(|message| panic!("{message}"))
}

/// The tool named by `value`, the value of the environment variable `variable`.
pub fn tool_from(variable: &str, value: Option<OsString>) -> Result<PathBuf, String> {
    match value {
        Some(path) if !path.is_empty() => Ok(PathBuf::from(path)),
        _ => {
            let install = match variable {
                "CHROMEDRIVER" => "export CHROMEDRIVER=\"$(hack/browser.sh)\"".to_owned(),
                _ => format!(
                    "export {variable}=\"$(hack/tools.sh)/{}\"",
                    variable.to_ascii_lowercase()
                ),
            };
            Err(format!(
                "{variable} is not set: `make test` installs it and exports {variable}; to run \
                 tests by hand, `{install}`"
            ))
        }
    }
}

/// What a finished program printed.
pub struct Ran {
    /// The command line, for messages.
    pub line: String,
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `program` with `args` to completion, feeding it `stdin`, and returns what it printed.
/// Panics only if it cannot be started; whether it succeeded is the caller's to judge.
pub fn run<S: AsRef<OsStr>>(program: impl AsRef<Path>, args: &[S], stdin: Option<&str>) -> Ran {
    let program = program.as_ref();
    let line = std::iter::once(program.display().to_string())
        .chain(
            args.iter()
                .map(|a| a.as_ref().to_string_lossy().into_owned()),
        )
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{line}`: {e}"));
    // Written from a thread, so a program that prints before it has read all its input cannot
    // deadlock on full pipes; dropping stdin then closes it, which ends a `-f -` input.
    let mut input = child.stdin.take().expect("stdin is piped");
    let text = stdin.unwrap_or_default().to_owned();
    let writer = std::thread::spawn(move || input.write_all(text.as_bytes()));
    let output = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("`{line}` did not finish: {e}"));
    let written = writer.join().expect("the stdin writer did not panic");
    // A program that exits without reading its input closes the pipe; that is its answer, not
    // a failure to run it.
    if let Err(e) = written
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        panic!("cannot write to `{line}`: {e}");
    }
    Ran {
        line,
        success: output.status.success(),
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs a program that must succeed, and returns its standard output.
pub fn must<S: AsRef<OsStr>>(program: impl AsRef<Path>, args: &[S], stdin: Option<&str>) -> String {
    let ran = run(program, args, stdin);
    assert!(
        ran.success,
        "`{}` failed ({:?})\n--- stdout\n{}\n--- stderr\n{}",
        ran.line, ran.code, ran.stdout, ran.stderr
    );
    ran.stdout
}

/// Runs a program that must fail, and returns everything it printed (helm lint reports on
/// stdout, helm template on stderr).
pub fn must_fail<S: AsRef<OsStr>>(program: impl AsRef<Path>, args: &[S]) -> String {
    let ran = run(program, args, None);
    assert!(
        !ran.success,
        "`{}` should have failed, but succeeded\n--- stdout\n{}\n--- stderr\n{}",
        ran.line, ran.stdout, ran.stderr
    );
    format!("{}{}", ran.stdout, ran.stderr)
}

/// `helm <args>`, which must succeed; its standard output.
pub fn helm<S: AsRef<OsStr>>(args: &[S]) -> String {
    must(tool("HELM"), args, None)
}

/// `kubectl <args>` fed `stdin`, which must succeed; its standard output.
pub fn kubectl<S: AsRef<OsStr>>(args: &[S], stdin: Option<&str>) -> String {
    must(tool("KUBECTL"), args, stdin)
}
