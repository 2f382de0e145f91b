//! Tells the binary which commit it was built from (`popgate --version`):
//! `git rev-parse --short HEAD` when the source is a git checkout and git is
//! there, else the `POPGATE_COMMIT` environment variable (a container build
//! has no `.git`: pass it as a build argument), else "unknown". Never fails.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// A commit as it may be shown: short, of hex digits (and a `-dirty` or the
/// like from the environment), nothing that could break the version line.
fn clean(commit: &str) -> Option<String> {
    let c: String = commit.trim().chars().take(40).collect();
    let ok = !c.is_empty()
        && c.chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '.' || ch == '_');
    ok.then_some(c)
}

fn main() {
    println!("cargo:rerun-if-env-changed=POPGATE_COMMIT");
    println!("cargo:rerun-if-changed=build.rs");
    let commit = git(&["rev-parse", "--short", "HEAD"])
        .and_then(|c| clean(&c))
        .inspect(|_| {
            // Rebuild when HEAD moves: HEAD itself, the branch it names,
            // and packed refs. Only files that exist (a missing one would
            // make cargo rerun this script on every build).
            let mut watched = vec![git(&["rev-parse", "--git-path", "HEAD"])];
            if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
                watched.push(git(&["rev-parse", "--git-path", &branch]));
            }
            watched.push(git(&["rev-parse", "--git-path", "packed-refs"]));
            for path in watched.into_iter().flatten() {
                let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
                if path.exists() {
                    println!("cargo:rerun-if-changed={}", path.display());
                }
            }
        })
        .or_else(|| {
            // git failed in a checkout (a lock held by a running git, say):
            // run again when HEAD moves, or "unknown" would stay for good.
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.git/HEAD");
            if root.exists() {
                println!("cargo:rerun-if-changed={}", root.display());
            }
            None
        })
        .or_else(|| std::env::var("POPGATE_COMMIT").ok().and_then(|c| clean(&c)))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=POPGATE_COMMIT={commit}");
}
