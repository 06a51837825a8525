//! `cargo xtask publish`: the folder to copy to an IIS site (server.exe, site/, web.config, logs/,
//! data/).

use std::path::{Path, PathBuf};

use crate::tools;
use crate::util::{fmt_kb, io_failure, note, run, step, table, Ctx, Failure, Res};

#[derive(clap::Args, Debug)]
pub struct PublishArgs {
    /// Target triple of the server [default: x86_64-pc-windows-gnu, or the host on Windows]
    #[arg(long, value_name = "TRIPLE")]
    pub target: Option<String>,
    /// Output folder, removed first [default: <workspace>/dist/iis]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Whether `publish` builds the release client itself, or takes the one in target/site
/// (the test run has just built it).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Client {
    Build,
    AlreadyBuilt,
}

pub fn publish(ctx: &Ctx, args: &PublishArgs) -> Res<()> {
    publish_with(ctx, args, Client::Build).map(|_| ())
}

/// Builds and lays out the folder; returns its path.
pub fn publish_with(ctx: &Ctx, args: &PublishArgs, client: Client) -> Res<PathBuf> {
    let triple = match &args.target {
        Some(t) => t.clone(),
        None if cfg!(windows) => tools::host_triple(ctx)?,
        None => "x86_64-pc-windows-gnu".to_string(),
    };
    let out = match &args.out {
        Some(dir) if dir.is_absolute() => dir.clone(),
        Some(dir) => std::env::current_dir()
            .map_err(|e| io_failure("cannot read the current directory".into(), e))?
            .join(dir),
        None => ctx.root.join("dist").join("iis"),
    };
    let web_config = ctx.root.join("web.config");
    if !web_config.is_file() {
        return Err(Failure::new(
            format!("{} does not exist", web_config.display()),
            "add the IIS web.config (aspNetCore handler for server.exe) at the workspace root first",
        ));
    }
    check_out_dir(&ctx.root, &out)?;

    tools::setup(ctx)?;
    tools::ensure_rust_target(ctx, &triple)?;
    let host = tools::host_triple(ctx)?;
    if triple == "x86_64-pc-windows-gnu" && !host.contains("windows") {
        tools::ensure_mingw(ctx)?;
    }

    if client == Client::Build {
        step("building the release client (cargo leptos build --release)");
        run(
            ctx.cmd("cargo").args(["leptos", "build", "--release"]),
            "read the output above; `cargo leptos build --release` reproduces it",
        )?;
    }

    // For the host itself, the plain release build (which cargo-leptos has just made) is the
    // one to ship; `--target` would compile everything again into another folder.
    let native = triple == host;
    step(format!("building the release server for {triple}"));
    let mut build = ctx.cmd("cargo");
    build.args(["build", "--release", "-p", "server"]);
    if !native {
        build.args(["--target", &triple]);
    }
    run(
        build.env("LEPTOS_OUTPUT_NAME", crate::test::OUTPUT_NAME),
        &format!(
            "read the compiler output above; for a cross target check its linker in .cargo/config.toml (and `rustup target add {triple}`)"
        ),
    )?;

    let exe_name = if triple.contains("windows") {
        "server.exe"
    } else {
        "server"
    };
    let exe = if native {
        ctx.root.join("target").join("release").join(exe_name)
    } else {
        ctx.root
            .join("target")
            .join(&triple)
            .join("release")
            .join(exe_name)
    };
    let site = ctx.root.join("target").join("site");
    if !exe.is_file() {
        return Err(Failure::new(
            format!("the build succeeded but {} is missing", exe.display()),
            "check that the server crate's binary is named `server`",
        ));
    }

    step(format!("laying out {}", out.display()));
    if out.exists() {
        std::fs::remove_dir_all(&out)
            .map_err(|e| io_failure(format!("cannot remove {}", out.display()), e))?;
    }
    mkdir(&out)?;
    copy_file(&exe, &out.join(exe_name))?;
    copy_dir(&site, &out.join("site"))?;
    copy_file(&web_config, &out.join("web.config"))?;
    mkdir(&out.join("logs"))?;
    // The event log's folder, empty: made here so that the app pool's identity can be given
    // Modify on it (as on logs/) without any right on the site folder itself.
    mkdir(&out.join("data"))?;

    let mut files = Vec::new();
    list_files(&out, &out, &mut files)?;
    files.sort();
    print!("{}", listing(&files));
    note(format!("copy {} to the IIS site folder", out.display()));
    Ok(out)
}

/// Refuses to delete the workspace (or anything above it) as the output folder.
fn check_out_dir(root: &Path, out: &Path) -> Res<()> {
    let out_abs = out.canonicalize().unwrap_or_else(|_| out.to_path_buf());
    let root_abs = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    if root_abs.starts_with(&out_abs) || out_abs == root_abs.join("target") {
        return Err(Failure::new(
            format!(
                "refusing to use {} as the output folder (it is removed first)",
                out.display()
            ),
            "pass a dedicated folder, e.g. --out dist/iis",
        ));
    }
    Ok(())
}

fn mkdir(dir: &Path) -> Res<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| io_failure(format!("cannot create {}", dir.display()), e))
}

fn copy_file(from: &Path, to: &Path) -> Res<()> {
    std::fs::copy(from, to).map(|_| ()).map_err(|e| {
        io_failure(
            format!("cannot copy {} to {}", from.display(), to.display()),
            e,
        )
    })
}

fn copy_dir(from: &Path, to: &Path) -> Res<()> {
    if !from.is_dir() {
        return Err(Failure::new(
            format!("{} is missing", from.display()),
            "run `cargo leptos build --release` and check its output",
        ));
    }
    mkdir(to)?;
    let entries = std::fs::read_dir(from)
        .map_err(|e| io_failure(format!("cannot read {}", from.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_failure(format!("cannot read {}", from.display()), e))?;
        let path = entry.path();
        let dest = to.join(entry.file_name());
        if path.is_dir() {
            copy_dir(&path, &dest)?;
        } else {
            copy_file(&path, &dest)?;
        }
    }
    Ok(())
}

/// Every file under `dir` as (path relative to `base` with `/`, size); empty folders as `name/`.
fn list_files(base: &Path, dir: &Path, out: &mut Vec<(String, u64)>) -> Res<()> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| io_failure(format!("cannot read {}", dir.display()), e))?;
    let mut empty = true;
    for entry in entries {
        let entry = entry.map_err(|e| io_failure(format!("cannot read {}", dir.display()), e))?;
        empty = false;
        let path = entry.path();
        if path.is_dir() {
            list_files(base, &path, out)?;
        } else {
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            out.push((relative(base, &path), size));
        }
    }
    if empty && dir != base {
        out.push((format!("{}/", relative(base, dir)), 0));
    }
    Ok(())
}

fn relative(base: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(base).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// The published files with their sizes and the total.
pub fn listing(files: &[(String, u64)]) -> String {
    let mut rows: Vec<Vec<String>> = files
        .iter()
        .map(|(name, size)| vec![name.clone(), fmt_kb(*size)])
        .collect();
    let total: u64 = files.iter().map(|(_, s)| s).sum();
    let count = files
        .iter()
        .filter(|(name, _)| !name.ends_with('/'))
        .count();
    rows.push(vec![format!("total ({count} files)"), fmt_kb(total)]);
    table(&["file", "size"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_sums_the_sizes() {
        let t = listing(&[
            ("logs/".into(), 0),
            ("server.exe".into(), 10_240),
            ("web.config".into(), 1_024),
        ]);
        assert_eq!(
            t,
            "file                size\n\
             logs/             0.0 KB\n\
             server.exe       10.0 KB\n\
             web.config        1.0 KB\n\
             total (2 files)  11.0 KB\n"
        );
    }

    #[test]
    fn copies_and_lists_a_tree() {
        let base = std::env::temp_dir().join(format!("xtask-publish-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let src = base.join("site");
        mkdir(&src.join("pkg")).unwrap();
        std::fs::write(src.join("pkg").join("sse-live.wasm"), [0u8; 2048]).unwrap();
        std::fs::write(src.join("favicon.ico"), [0u8; 100]).unwrap();
        let out = base.join("out");
        copy_dir(&src, &out.join("site")).unwrap();
        mkdir(&out.join("logs")).unwrap();
        let mut files = Vec::new();
        list_files(&out, &out, &mut files).unwrap();
        files.sort();
        assert_eq!(
            files,
            vec![
                ("logs/".to_string(), 0),
                ("site/favicon.ico".to_string(), 100),
                ("site/pkg/sse-live.wasm".to_string(), 2048),
            ]
        );
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn the_workspace_is_never_the_output() {
        let root = Path::new("/work/main");
        assert!(check_out_dir(root, root).is_err());
        assert!(check_out_dir(root, Path::new("/work")).is_err());
        assert!(check_out_dir(root, Path::new("/work/main/target")).is_err());
        assert!(check_out_dir(root, Path::new("/work/main/dist/iis")).is_ok());
    }
}
