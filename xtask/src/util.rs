//! Shared plumbing: the failure type, progress lines, running child processes with the
//! project's tool PATH, file sizes and the small tables printed at the end of a run.

use std::ffi::OsString;
use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

/// One failure: what failed and how to fix it, printed as a single line by `main`.
#[derive(Debug)]
pub struct Failure(String);

impl Failure {
    pub fn new(what: impl fmt::Display, fix: impl fmt::Display) -> Self {
        Failure(format!("{what}; fix: {fix}"))
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub type Res<T> = Result<T, Failure>;

/// A progress line: `==> building the release client`.
pub fn step(msg: impl fmt::Display) {
    println!("==> {msg}");
    let _ = io::stdout().flush();
}

/// A detail under the current step.
pub fn note(msg: impl fmt::Display) {
    println!("    {msg}");
    let _ = io::stdout().flush();
}

/// Where the workspace is, and the PATH every child process gets.
pub struct Ctx {
    pub root: PathBuf,
    /// `<workspace>/.tools/node_modules/.bin`, `~/.cargo/bin`, then the inherited PATH.
    pub path: OsString,
}

impl Ctx {
    pub fn new() -> Res<Self> {
        // xtask/Cargo.toml lives one level below the workspace root.
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| {
                Failure::new(
                    "cannot locate the workspace root",
                    "run the xtask through `cargo xtask` from the repository",
                )
            })?;
        let mut dirs = vec![npm_bin_dir(&root), cargo_bin_dir()];
        if let Some(old) = std::env::var_os("PATH") {
            dirs.extend(std::env::split_paths(&old));
        }
        let path = std::env::join_paths(dirs).map_err(|e| {
            Failure::new(
                format!("cannot build PATH for child processes ({e})"),
                "remove entries containing the path separator from PATH",
            )
        })?;
        Ok(Ctx { root, path })
    }

    pub fn tools_dir(&self) -> PathBuf {
        self.root.join(".tools")
    }

    /// A command for `program` found on the tool PATH, run in the workspace root with that PATH.
    pub fn cmd(&self, program: &str) -> Command {
        let resolved = self
            .which(program)
            .unwrap_or_else(|| PathBuf::from(program));
        let mut cmd = Command::new(resolved);
        cmd.env("PATH", &self.path).current_dir(&self.root);
        cmd
    }

    /// Looks `program` up on the tool PATH (with `.exe`/`.cmd`/`.bat` on Windows).
    pub fn which(&self, program: &str) -> Option<PathBuf> {
        let exts: &[&str] = if cfg!(windows) {
            &["exe", "cmd", "bat", ""]
        } else {
            &[""]
        };
        for dir in std::env::split_paths(&self.path) {
            for ext in exts {
                let mut candidate = dir.join(program);
                if !ext.is_empty() {
                    candidate.set_extension(ext);
                }
                if candidate.is_file() {
                    return Some(candidate);
                }
            }
        }
        None
    }
}

pub fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .or_else(|| std::env::var_os("USERPROFILE"))
        .map(PathBuf::from)
}

pub fn cargo_home() -> PathBuf {
    match std::env::var_os("CARGO_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => home_dir().unwrap_or_default().join(".cargo"),
    }
}

pub fn cargo_bin_dir() -> PathBuf {
    cargo_home().join("bin")
}

pub fn npm_bin_dir(root: &Path) -> PathBuf {
    root.join(".tools").join("node_modules").join(".bin")
}

/// `cargo leptos build --release` as a display string.
pub fn display(cmd: &Command) -> String {
    let program = Path::new(cmd.get_program())
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut out = program;
    for arg in cmd.get_args() {
        out.push(' ');
        out.push_str(&arg.to_string_lossy());
    }
    out
}

/// How to get a program that could not be started at all.
fn install_hint(program: &str) -> &'static str {
    match program {
        "cargo" | "rustup" | "rustc" => "install Rust with rustup (https://rustup.rs) and open a new shell",
        "npm" | "npx" | "node" => {
            "install Node.js 20 with npm (Debian: apt-get install -y nodejs npm; Windows: nodejs.org)"
        }
        "gzip" => "install gzip",
        "apt-get" => "install the package by hand",
        _ => "install it and make sure it is on PATH (run `cargo xtask setup`)",
    }
}

fn spawn_failure(cmd: &Command, err: &io::Error) -> Failure {
    let program = Path::new(cmd.get_program())
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if err.kind() == io::ErrorKind::NotFound {
        Failure::new(
            format!("`{program}` was not found on PATH"),
            install_hint(&program),
        )
    } else {
        Failure::new(
            format!("could not start `{}` ({err})", display(cmd)),
            install_hint(&program),
        )
    }
}

fn status_text(status: ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exit code {code}"),
        None => "killed by a signal".to_string(),
    }
}

/// Runs with inherited stdio; a non-zero exit becomes one failure line with `fix`.
pub fn run(cmd: &mut Command, fix: &str) -> Res<()> {
    let status = cmd.status().map_err(|e| spawn_failure(cmd, &e))?;
    if status.success() {
        Ok(())
    } else {
        Err(Failure::new(
            format!("`{}` failed ({})", display(cmd), status_text(status)),
            fix,
        ))
    }
}

/// Runs quietly and returns stdout and stderr together if the command succeeded.
pub fn capture(cmd: &mut Command) -> Option<String> {
    let out = cmd.stdin(Stdio::null()).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Some(text)
}

pub fn read_built(path: &Path) -> Res<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        Failure::new(
            format!("cannot read {} ({e})", path.display()),
            "build it first (`cargo leptos build --release`)",
        )
    })
}

pub fn io_failure(what: String, e: io::Error) -> Failure {
    Failure::new(
        format!("{what} ({e})"),
        "check the path and its permissions",
    )
}

/// `53.6 KB` (1 KB = 1024 bytes).
pub fn fmt_kb(bytes: u64) -> String {
    format!("{:.1} KB", bytes as f64 / 1024.0)
}

/// `12.3s` under a minute, `2m10s` above.
pub fn fmt_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        let whole = d.as_secs();
        format!("{}m{:02}s", whole / 60, whole % 60)
    }
}

/// Left-aligned first column, right-aligned others, two spaces between columns.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let cols = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(cols) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            if i == 0 {
                out.push_str(&format!("{cell:<w$}", w = widths[i]));
            } else {
                out.push_str(&format!("{cell:>w$}", w = widths[i]));
            }
        }
        out.trim_end().to_string()
    };
    let mut out = line(header.to_vec());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kilobytes_have_one_decimal() {
        assert_eq!(fmt_kb(0), "0.0 KB");
        assert_eq!(fmt_kb(1024), "1.0 KB");
        assert_eq!(fmt_kb(54_886), "53.6 KB");
    }

    #[test]
    fn durations_switch_to_minutes() {
        assert_eq!(fmt_duration(Duration::from_millis(1_540)), "1.5s");
        assert_eq!(fmt_duration(Duration::from_secs(59)), "59.0s");
        assert_eq!(fmt_duration(Duration::from_secs(130)), "2m10s");
        assert_eq!(fmt_duration(Duration::from_secs(605)), "10m05s");
    }

    #[test]
    fn table_aligns_columns() {
        let t = table(
            &["step", "time"],
            &[
                vec!["fmt".into(), "1.0s".into()],
                vec!["leptos build".into(), "2m10s".into()],
            ],
        );
        assert_eq!(
            t,
            "step           time\nfmt            1.0s\nleptos build  2m10s\n"
        );
    }
}
