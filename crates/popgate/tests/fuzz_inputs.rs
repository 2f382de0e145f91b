//! Every committed fuzz input, the seed corpus and the crashes kept as
//! regressions (`crates/*/fuzz/{corpus,regressions}/<target>/`), replayed
//! through the fuzz targets' own code in a plain `cargo test`, with no
//! fuzzing toolchain. `scripts/fuzz` runs the fuzzer itself.

use std::path::{Path, PathBuf};

type Target = fn(&[u8]);

/// Each fuzz target: its crate, its name, and the code it runs.
const TARGETS: &[(&str, &str, Target)] = &[
    (
        "pop3-proto",
        "command_parser",
        pop3_proto::fuzzing::command_parser,
    ),
    (
        "pop3-proto",
        "session_input",
        pop3_proto::fuzzing::session_input,
    ),
    (
        "pop3-proto",
        "message_encoder",
        pop3_proto::fuzzing::message_encoder,
    ),
    (
        "popgate-server",
        "proxy_header",
        popgate_server::fuzzing::proxy_header,
    ),
    ("store-maildir", "uidlist", store_maildir::fuzzing::uidlist),
    ("store-maildir", "fence", store_maildir::fuzzing::fence),
];

fn crates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut out: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    out.sort();
    out
}

#[test]
fn every_committed_fuzz_input_replays_cleanly() {
    for &(krate, target, run) in TARGETS {
        let fuzz = crates_dir().join(krate).join("fuzz");
        let corpus = files(&fuzz.join("corpus").join(target));
        assert!(!corpus.is_empty(), "{krate}: no seed corpus for {target}");
        for input in corpus
            .iter()
            .chain(&files(&fuzz.join("regressions").join(target)))
        {
            let data = std::fs::read(input).unwrap();
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{} fails {target}", input.display());
        }
    }
}

#[test]
fn every_fuzz_target_is_replayed() {
    // A target added to a fuzz crate without a line above would go unreplayed.
    for krate in ["pop3-proto", "popgate-server", "store-maildir"] {
        let manifest =
            std::fs::read_to_string(crates_dir().join(krate).join("fuzz/Cargo.toml")).unwrap();
        for line in manifest.lines() {
            if let Some(name) = line
                .strip_prefix("name = \"")
                .and_then(|l| l.strip_suffix('"'))
                && !name.ends_with("-fuzz")
            {
                assert!(
                    TARGETS.iter().any(|&(k, t, _)| k == krate && t == name),
                    "{krate}/fuzz has the target {name}, which this test does not replay"
                );
            }
        }
    }
}
