//! Sets `VERSION_WITH_COMMIT` for `presenced --version` (not `PRESENCED_…`:
//! cargo also sets it when running tests, where that prefix is a config
//! override): the crate version,
//! plus the git commit when built from a git checkout (no build
//! dependencies: the `git` command, if it is there).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}

fn main() {
    let version = env!("CARGO_PKG_VERSION");
    let commit = git(&["rev-parse", "--short=12", "HEAD"]);
    // Rebuild when HEAD moves: HEAD itself (branch switch) and the ref it
    // names (a commit). Paths come from git, which knows worktrees.
    for path in [
        git(&["rev-parse", "--git-path", "HEAD"]),
        git(&["rev-parse", "--symbolic-full-name", "HEAD"])
            .and_then(|r| git(&["rev-parse", "--git-path", &r])),
    ]
    .into_iter()
    .flatten()
    {
        let path = std::fs::canonicalize(&path).unwrap_or_else(|_| path.into());
        println!("cargo:rerun-if-changed={}", path.display());
    }
    println!("cargo:rerun-if-changed=build.rs");
    let full = match commit {
        Some(c) => format!("{version} (git {c})"),
        None => version.to_owned(),
    };
    println!("cargo:rustc-env=VERSION_WITH_COMMIT={full}");
}
