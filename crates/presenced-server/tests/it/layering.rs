//! The server crate's layers: imports point down, never up or sideways.
//!
//! Reads every file under `src/`, finds each `crate::…` path (and each
//! `super::` that climbs out of its folder) outside comments, and checks it
//! against the table below. The table is the one in ARCHITECTURE.md; a new
//! top-level module must be added to both.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Top-level modules by rank: a module may import one of a lower rank,
/// never one of the same rank (siblings stay independent) or a higher one.
const LAYERS: &[(&str, u8)] = &[
    ("process", 8),
    ("api", 7),
    ("sync", 6),
    ("homeserver", 5),
    ("federation", 5),
    // Companion mode: Synapse as the source of accounts, tokens and
    // memberships (homeserver's counterpart), and the forwarding proxy.
    ("companion", 4),
    ("presence", 3),
    // The `presenced-store` crate, re-exported as `crate::store`.
    ("store", 2),
    ("net", 1),
    ("config", 0),
    ("util", 0),
];

/// The crate root (`lib.rs`) and the binary sit above everything.
const ROOT_RANK: u8 = 9;

/// Items the crate root re-exports, and the module each comes from, so a
/// `crate::AppState` counts as an import of `api`.
const ROOT_REEXPORTS: &[(&str, &str)] = &[
    ("AppState", "api"),
    ("StateReceivers", "api"),
    ("Config", "config"),
    ("ActivityEvent", "homeserver"),
    ("Membership", "store"),
    ("MembershipChange", "store"),
    ("app", "root"),
    ("run", "root"),
    ("run_listener", "root"),
];

/// Crates whose use is confined to some top-level modules.
const CONFINED_CRATES: &[(&str, &[&str])] = &[
    // SQL lives in the `presenced-store` crate: no server module may use a
    // database driver.
    ("rusqlite", &[]),
    ("tokio_postgres", &[]),
    ("deadpool_postgres", &[]),
];

/// Top-level names that are other workspace crates re-exported by the
/// root, with the file that carries their module docs.
const CRATE_MODULES: &[(&str, &str)] = &[("store", "../../presenced-store/src/lib.rs")];

fn rank(module: &str) -> Option<u8> {
    if module == "root" {
        return Some(ROOT_RANK);
    }
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, r)| *r)
}

/// The module path of a file under `src/` (`api/client/sync.rs` →
/// `[api, client, sync]`; `lib.rs` and `main.rs` → `[]`).
fn module_path(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.last_mut() {
        *last = last.trim_end_matches(".rs").to_owned();
    }
    if matches!(parts.as_slice(), [only] if only == "lib" || only == "main") {
        parts.clear();
    }
    parts
}

/// Code without comments: `//` to the end of the line (doc comments and
/// intra-doc links are not imports).
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().map(|(i, line)| {
        let code = match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        };
        (i + 1, code)
    })
}

fn identifier_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The top-level modules one file refers to, with the line of each.
fn references(path: &[String], text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (line_no, code) in code_lines(text) {
        for (at, _) in code.match_indices("crate::") {
            // `presenced_server::…` or `foo_crate::…` are other crates.
            let before = code[..at].chars().last();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let name = identifier_at(&code[at + "crate::".len()..]);
            if !name.is_empty() {
                found.push((line_no, name.to_owned()));
            }
        }
        // `super::super::x` climbing to the root names top-level module x.
        for (at, _) in code.match_indices("super::") {
            let before = code[..at].chars().last();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let mut rest = &code[at..];
            let mut climbs = 0;
            while let Some(r) = rest.strip_prefix("super::") {
                climbs += 1;
                rest = r;
            }
            if climbs >= path.len() {
                let name = identifier_at(rest);
                if !name.is_empty() {
                    found.push((line_no, name.to_owned()));
                }
            }
        }
    }
    found
}

fn top_level_of(name: &str) -> Option<&'static str> {
    if let Some((m, _)) = LAYERS.iter().find(|(m, _)| *m == name) {
        return Some(m);
    }
    ROOT_REEXPORTS
        .iter()
        .find(|(item, _)| *item == name)
        .map(|(_, m)| *m)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every layering problem in a tree of `(relative path, text)` files.
fn violations(files: &[(PathBuf, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    for (relative, text) in files {
        let path = module_path(relative);
        let own = path.first().map_or("root", String::as_str);
        let Some(own_rank) = rank(own) else {
            problems.push(format!(
                "{}: top-level module `{own}` is not in the layer table",
                relative.display()
            ));
            continue;
        };
        let mut seen = BTreeSet::new();
        for (line, name) in references(&path, text) {
            let Some(target) = top_level_of(&name) else {
                problems.push(format!(
                    "{}:{line}: `crate::{name}` is not in the layer table",
                    relative.display()
                ));
                continue;
            };
            if target == own || !seen.insert((target, line)) {
                continue;
            }
            let target_rank = rank(target).expect("table entries have ranks");
            if target_rank >= own_rank {
                problems.push(format!(
                    "{}:{line}: `{own}` (rank {own_rank}) imports `{target}` (rank {target_rank})",
                    relative.display()
                ));
            }
        }
        for (krate, allowed) in CONFINED_CRATES {
            let uses = code_lines(text).any(|(_, code)| code.contains(&format!("{krate}::")));
            if uses && !allowed.contains(&own) {
                problems.push(format!(
                    "{}: uses `{krate}`, which only {allowed:?} may use",
                    relative.display()
                ));
            }
        }
    }
    problems
}

/// Every file under the server crate's `src/`, relative to it, with its text.
fn server_sources() -> Vec<(PathBuf, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    paths
        .iter()
        .map(|p| {
            let relative = p.strip_prefix(&src).unwrap().to_owned();
            (relative, std::fs::read_to_string(p).unwrap())
        })
        .collect()
}

#[test]
fn server_modules_import_only_lower_layers() {
    let files = server_sources();
    assert!(
        files.len() > 50,
        "read the whole tree ({} files)",
        files.len()
    );
    let problems = violations(&files);
    assert!(
        problems.is_empty(),
        "layering violations:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_top_level_module_says_what_it_owns() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for (module, _) in LAYERS {
        let file = CRATE_MODULES
            .iter()
            .find(|(name, _)| name == module)
            .map_or_else(|| format!("{module}.rs"), |(_, file)| (*file).to_owned());
        let text = std::fs::read_to_string(src.join(&file)).unwrap();
        let header = text.lines().take_while(|l| l.starts_with("//!")).count();
        assert!(
            header >= 3,
            "src/{file} starts with {header} lines of module docs; say what lives there, what it owns and what it must not do"
        );
    }
}

#[test]
fn the_check_catches_upward_sideways_and_climbing_imports() {
    let file = |path: &str, text: &str| (PathBuf::from(path), text.to_owned());
    let files = [
        // Allowed: down, within a folder, comments, other crates.
        file(
            "api/client/sync.rs",
            "use crate::presence::PresenceService;\n",
        ),
        file(
            "store/sqlite.rs",
            "use super::Store;\n// crate::api::state\n",
        ),
        file("presence.rs", "use presenced_server::api::x;\n"),
        // Up, sideways, through a root re-export, climbing with super.
        file("store/presence.rs", "use crate::presence::now;\n"),
        file(
            "homeserver/rooms.rs",
            "let x = crate::federation::keys::f();\n",
        ),
        file("homeserver/uia.rs", "use crate::AppState;\n"),
        file("sync/token.rs", "use crate::api::error::ApiError;\n"),
        file(
            "presence/wire.rs",
            "use super::super::api::error::ApiError;\n",
        ),
        file("api/error.rs", "fn f(c: &rusqlite::Connection) {}\n"),
    ];
    let problems = violations(&files);
    let expected = [
        "store/presence.rs:1: `store` (rank 2) imports `presence` (rank 3)",
        "homeserver/rooms.rs:1: `homeserver` (rank 5) imports `federation` (rank 5)",
        "homeserver/uia.rs:1: `homeserver` (rank 5) imports `api` (rank 7)",
        "sync/token.rs:1: `sync` (rank 6) imports `api` (rank 7)",
        "presence/wire.rs:1: `presence` (rank 3) imports `api` (rank 7)",
        "api/error.rs: uses `rusqlite`, which only [] may use",
    ];
    assert_eq!(problems, expected);
}

/// Files that may read which mode the server runs in (`config.cluster`,
/// and `config.synapse` for companion mode):
/// the config itself and start-up, where each mode's parts are chosen
/// once. At run time nothing asks; the presence back end
/// (`presence/backend.rs`) answers for its mode.
const MODE_CHOSEN_IN: &[&str] = &[
    "config.rs",
    "config/",
    "process/startup.rs",
    "presence/startup.rs",
    // AppState::new: signed UIA sessions and nonces for several processes.
    "api/state.rs",
];

/// Cluster mode's parts stay in `presence/`; outside it, no file names
/// them or asks whether the server is clustered.
fn mode_tests(files: &[(PathBuf, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    for (path, text) in files {
        let shown = path.to_string_lossy().replace('\\', "/");
        let in_presence = shown.starts_with("presence/") || shown == "presence.rs";
        let may_read_mode = MODE_CHOSEN_IN.iter().any(|allowed| {
            shown == *allowed || (allowed.ends_with('/') && shown.starts_with(allowed))
        });
        for (line_no, code) in code_lines(text) {
            if !in_presence && (code.contains("presence::cluster") || code.contains("ClusterLink"))
            {
                problems.push(format!(
                    "{shown}:{line_no}: names cluster mode's parts outside presence/"
                ));
            }
            if code.contains(".cluster()") {
                problems.push(format!(
                    "{shown}:{line_no}: asks the presence service whether it is clustered"
                ));
            }
            // `config.synapse`, not any `.synapse.`: other values have a
            // field of that name (a spliced sync token's Synapse half).
            let reads_mode = code.contains(".cluster.")
                || code.contains("&config.cluster")
                || code.contains("config.synapse");
            if !may_read_mode && reads_mode {
                problems.push(format!(
                    "{shown}:{line_no}: reads the mode outside start-up"
                ));
            }
        }
    }
    problems
}

#[test]
fn no_mode_test_outside_the_presence_back_end() {
    let files = server_sources();
    let problems = mode_tests(&files);
    assert!(
        problems.is_empty(),
        "cluster mode outside its seam:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_mode_check_catches_each_kind_of_mode_test() {
    let file = |path: &str, text: &str| (PathBuf::from(path), text.to_owned());
    let files = [
        // Allowed: inside presence/, start-up, comments.
        file(
            "presence/backend.rs",
            "use super::cluster::link::ClusterLink;\n",
        ),
        file("process/startup.rs", "if config.cluster.is_some() {}\n"),
        file("api/health.rs", "// state.presence.cluster()\n"),
        // Caught: the three ways the mode leaked before.
        file(
            "federation/sender.rs",
            "use crate::presence::cluster::link::ShardNews;\n",
        ),
        file(
            "api/health.rs",
            "if let Some(link) = state.presence.cluster() {}\n",
        ),
        file(
            "process/feeds.rs",
            "let clustered = config.cluster.is_some();\n",
        ),
        // Companion mode: allowed at start-up, caught anywhere else.
        file("process/startup.rs", "match &config.synapse {}\n"),
        file(
            "api/client/sync.rs",
            "if state.config.synapse.is_some() {}\n",
        ),
        file("companion/forward.rs", "let url = &self.config.synapse;\n"),
        // Not a mode read: a value with a field named `synapse`.
        file(
            "companion/splice.rs",
            "let half = since.synapse.as_str();\n",
        ),
    ];
    assert_eq!(
        mode_tests(&files),
        [
            "federation/sender.rs:1: names cluster mode's parts outside presence/",
            "api/health.rs:1: asks the presence service whether it is clustered",
            "process/feeds.rs:1: reads the mode outside start-up",
            "api/client/sync.rs:1: reads the mode outside start-up",
            "companion/forward.rs:1: reads the mode outside start-up",
        ]
    );
}

/// The wall clock is read in one place, `util/clock.rs`, and handed on as
/// `presenced_engine::Timestamp`; the engine, store and cluster crates
/// take the time they are given.
#[test]
fn the_wall_clock_is_read_in_one_place() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut paths = Vec::new();
    for krate in [
        "presenced-server",
        "presenced-engine",
        "presenced-store",
        "presenced-cluster",
    ] {
        rust_files(&crates.join(krate).join("src"), &mut paths);
    }
    assert!(
        paths.len() > 100,
        "read the sources ({} files)",
        paths.len()
    );
    let readers: Vec<String> = paths
        .iter()
        .filter(|p| !p.ends_with("presenced-server/src/util/clock.rs"))
        .filter(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            let reads = code_lines(&text).any(|(_, code)| code.contains("SystemTime::now"));
            reads
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        readers.is_empty(),
        "the wall clock is read outside util/clock.rs: {readers:?}"
    );
}
