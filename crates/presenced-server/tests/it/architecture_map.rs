//! ARCHITECTURE.md stays a true, one-screen map: every path it and the
//! `docs/*.md` pages name exists, it fits in 150 lines, and it names every
//! crate, every top-level module of this crate and every page of `docs/`.
//!
//! What counts as a path: an inline code span, a word of a fenced block or
//! a link target that looks like a file or a folder (it contains `/` or
//! ends in `.rs`, `.md`, `.toml`, `.py` or `.sh`) and is not something
//! else that happens to contain a slash: no spaces, no placeholders
//! (`<p>`, `{id}`, `*`), no URL (a leading `/`, `://`, `:`). Code spans and
//! fenced words resolve from the repository root, or from a folder the
//! page declares in a `<!-- paths: a/ b/ -->` comment, so prose can say
//! `owner.rs` instead of the whole path; link targets resolve from the
//! page's own folder, as Markdown renders them.

use std::path::{Component, Path, PathBuf};

/// A map that fits on one screen; the rest belongs in `docs/`.
const MAX_MAP_LINES: usize = 150;

/// Endings that make a token without a slash a file name.
const FILE_ENDINGS: &[&str] = &[".rs", ".md", ".toml", ".py", ".sh"];

/// Paths that refactors running in parallel with this file add (issue 26:
/// the one clock); the map names them already. Each must leave this list
/// once it exists, which `planned_paths_leave_the_list_once_they_exist`
/// asks for, so the list empties itself as those changes land.
const PLANNED: &[&str] = &[];

/// How a mention is resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A code span or a fenced word: from the root or a declared folder.
    Code,
    /// A Markdown link target: from the page's own folder.
    Link,
}

/// One path named by a page.
#[derive(Debug, PartialEq, Eq)]
struct Mention {
    line: usize,
    text: String,
    kind: Kind,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the server crate sits two folders below the root")
        .to_owned()
}

fn looks_like_path(token: &str) -> bool {
    let not_a_path = |c: char| c.is_whitespace() || "<>{}*$|:@?=,\"'`…".contains(c);
    !token.is_empty()
        && !token.starts_with('/')
        && !token.starts_with('-')
        && !token.chars().any(not_a_path)
        && (token.contains('/') || FILE_ENDINGS.iter().any(|e| token.ends_with(e)))
}

/// The folders a page declares for its short paths.
fn declared_folders(text: &str) -> Vec<String> {
    let Some(start) = text.find("<!-- paths:") else {
        return Vec::new();
    };
    let rest = &text[start + "<!-- paths:".len()..];
    let end = rest.find("-->").unwrap_or(rest.len());
    rest[..end].split_whitespace().map(str::to_owned).collect()
}

/// Every path-like mention of a page, in order. Code spans may not cross a
/// fenced block; a span that wraps onto the next line holds a newline and
/// so is never a path.
fn mentions(text: &str) -> Vec<Mention> {
    let mut found = Vec::new();
    // The page with fenced lines blanked (line numbers kept), for spans and
    // links; fenced lines are read word by word.
    let mut prose = String::with_capacity(text.len());
    let mut fenced = false;
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            prose.push('\n');
            continue;
        }
        if fenced {
            for word in line.split_whitespace() {
                let word = word
                    .trim_start_matches(['(', '[', '"', '\''])
                    .trim_end_matches([')', ']', ',', ';', ':', '.', '!', '?', '"', '\'']);
                if looks_like_path(word) {
                    found.push(Mention {
                        line: i + 1,
                        text: word.to_owned(),
                        kind: Kind::Code,
                    });
                }
            }
            prose.push('\n');
        } else {
            prose.push_str(line);
            prose.push('\n');
        }
    }
    let line_at = |offset: usize| prose[..offset].matches('\n').count() + 1;
    let mut rest = 0;
    while let Some(open) = prose[rest..].find('`') {
        let start = rest + open + 1;
        let Some(close) = prose[start..].find('`') else {
            break;
        };
        let span = &prose[start..start + close];
        if looks_like_path(span) {
            found.push(Mention {
                line: line_at(start),
                text: span.to_owned(),
                kind: Kind::Code,
            });
        }
        rest = start + close + 1;
    }
    let mut rest = 0;
    while let Some(at) = prose[rest..].find("](") {
        let start = rest + at + 2;
        let end = prose[start..]
            .find(')')
            .map_or(prose.len(), |close| start + close);
        let target = prose[start..end].split('#').next().unwrap_or_default();
        if !target.is_empty() && !target.contains("://") && !target.starts_with("mailto:") {
            found.push(Mention {
                line: line_at(start),
                text: target.to_owned(),
                kind: Kind::Link,
            });
        }
        rest = end;
    }
    found.sort_by_key(|m| m.line);
    found
}

/// `a/b/../c` → `a/c`, without touching the file system.
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Where a mention may live, relative to the root.
fn candidates(page: &Path, folders: &[String], mention: &Mention) -> Vec<PathBuf> {
    match mention.kind {
        Kind::Link => {
            let folder = page.parent().unwrap_or(Path::new(""));
            vec![normalise(&folder.join(&mention.text))]
        }
        Kind::Code => std::iter::once(PathBuf::from(&mention.text))
            .chain(folders.iter().map(|f| Path::new(f).join(&mention.text)))
            .map(|p| normalise(&p))
            .collect(),
    }
}

fn is_planned(path: &Path) -> bool {
    let path = path.to_string_lossy();
    PLANNED.contains(&path.trim_end_matches('/'))
}

/// The map and every page of `docs/`, relative to the root.
fn pages(root: &Path) -> Vec<PathBuf> {
    let mut pages = vec![PathBuf::from("ARCHITECTURE.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .map(|p| p.strip_prefix(root).unwrap().to_owned())
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// Every mention of `pages` that names nothing, as `page:line: text`.
fn missing(root: &Path, pages: &[(PathBuf, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    for (page, text) in pages {
        let folders = declared_folders(text);
        for folder in &folders {
            if !root.join(folder).is_dir() {
                problems.push(format!(
                    "{}: declared folder `{folder}` does not exist",
                    page.display()
                ));
            }
        }
        for mention in mentions(text) {
            let places = candidates(page, &folders, &mention);
            if places
                .iter()
                .any(|p| root.join(p).exists() || is_planned(p))
            {
                continue;
            }
            problems.push(format!(
                "{}:{}: `{}` (looked for {})",
                page.display(),
                mention.line,
                mention.text,
                places
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    problems
}

fn read_pages(root: &Path) -> Vec<(PathBuf, String)> {
    pages(root)
        .into_iter()
        .map(|page| {
            let text = std::fs::read_to_string(root.join(&page)).unwrap();
            (page, text)
        })
        .collect()
}

#[test]
fn every_path_the_map_and_docs_name_exists() {
    let root = repo_root();
    let pages = read_pages(&root);
    assert!(pages.len() > 1, "the map and at least one page of docs/");
    let problems = missing(&root, &pages);
    assert!(
        problems.is_empty(),
        "paths named in ARCHITECTURE.md or docs/ that do not exist (fix the page, or the path if it moved):\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_map_fits_on_one_screen() {
    let map = std::fs::read_to_string(repo_root().join("ARCHITECTURE.md")).unwrap();
    let lines = map.lines().count();
    assert!(
        lines <= MAX_MAP_LINES,
        "ARCHITECTURE.md has {lines} lines, more than {MAX_MAP_LINES}: move detail to docs/"
    );
}

#[test]
fn the_map_names_every_crate_module_and_page() {
    let root = repo_root();
    let map = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let mut absent = Vec::new();
    let names_in = |dir: &Path, want_dirs: bool| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|p| p.is_dir() == want_dirs)
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    for krate in names_in(&root.join("crates"), true) {
        let named = format!("`crates/{krate}/`");
        if !map.contains(&named) {
            absent.push(format!("the crate {named}"));
        }
    }
    // Top-level modules of this crate: `src/<module>.rs`, plus the store
    // crate re-exported as `crate::store` (the layer table's rows).
    let modules = names_in(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), false)
        .into_iter()
        .filter_map(|file| file.strip_suffix(".rs").map(str::to_owned))
        .filter(|m| m != "lib" && m != "main")
        .chain(std::iter::once("store".to_owned()));
    for module in modules {
        let named = format!("`{module}`");
        if !map.contains(&named) {
            absent.push(format!("the server module {named} (in the layer table)"));
        }
    }
    for page in names_in(&root.join("docs"), false) {
        let link = format!("(docs/{page})");
        if page.ends_with(".md") && !map.contains(&link) {
            absent.push(format!("a link to docs/{page}"));
        }
    }
    assert!(
        absent.is_empty(),
        "ARCHITECTURE.md does not name:\n{}",
        absent.join("\n")
    );
}

#[test]
fn planned_paths_leave_the_list_once_they_exist() {
    let root = repo_root();
    let landed: Vec<&str> = PLANNED
        .iter()
        .copied()
        .filter(|p| root.join(p).exists())
        .collect();
    assert!(
        landed.is_empty(),
        "these planned paths exist now; remove them from PLANNED in tests/it/architecture_map.rs: {landed:?}"
    );
}

#[test]
fn the_check_finds_paths_and_skips_the_rest() {
    let page = "\
<!-- paths: crates/x/src/ -->
See `owner.rs`, `crates/presenced-engine/`, `.ci/run` and [a page](../docs/y.md#part).
Not paths: `PRES_1_<p>`, `pres.own.<p>.cmd`, `presenced_engine::Timestamp`,
`cargo test -p x`, `GET /sync`, `/health`, `s{rooms}_{presence}`, `a/*.rs`, [web](https://example.org/a/b).
```
PUT /_matrix/client/v3/presence/{userId}/status
└► api/client/presence.rs     parse
   ├ (presence/single/):      text.
```
";
    let found: Vec<(usize, String, Kind)> = mentions(page)
        .into_iter()
        .map(|m| (m.line, m.text, m.kind))
        .collect();
    let expected = [
        (2, "owner.rs", Kind::Code),
        (2, "crates/presenced-engine/", Kind::Code),
        (2, ".ci/run", Kind::Code),
        (2, "../docs/y.md", Kind::Link),
        (7, "api/client/presence.rs", Kind::Code),
        (8, "presence/single/", Kind::Code),
    ]
    .map(|(line, text, kind)| (line, text.to_owned(), kind));
    assert_eq!(found, expected);
    assert_eq!(declared_folders(page), ["crates/x/src/"]);
    let short = Mention {
        line: 2,
        text: "owner.rs".to_owned(),
        kind: Kind::Code,
    };
    assert_eq!(
        candidates(Path::new("docs/a.md"), &declared_folders(page), &short),
        [
            PathBuf::from("owner.rs"),
            PathBuf::from("crates/x/src/owner.rs")
        ]
    );
    let link = Mention {
        line: 2,
        text: "../ARCHITECTURE.md".to_owned(),
        kind: Kind::Link,
    };
    assert_eq!(
        candidates(Path::new("docs/a.md"), &[], &link),
        [PathBuf::from("ARCHITECTURE.md")]
    );
}
