//! Synapse's `log_config`: a Python logging dictionary in YAML.
//!
//! presenced logs to standard error through `tracing`, so of that file it
//! takes only the root logger's level; handlers, formatters and per-logger
//! levels (Python module names) have no counterpart. A file that is missing
//! or unreadable is not fatal: logging stays at `info` with a warning, so a
//! Synapse config whose log file was not copied along still starts.

use std::path::Path;

/// What the file gave, and what to warn about once logging is up.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FromLogConfig {
    /// A tracing level (`error`, `warn`, `info`, `debug`, `trace`).
    pub level: Option<String>,
    /// Warnings for the start-up log.
    pub notes: Vec<String>,
}

/// Reads the root level of the Python logging YAML at `path`.
pub fn read(path: &Path) -> FromLogConfig {
    let shown = path.display();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            return FromLogConfig {
                level: None,
                notes: vec![format!(
                    "log_config {shown}: cannot read it ({e}); logging at info to standard error"
                )],
            }
        }
    };
    let doc: serde_yaml::Value = match serde_yaml::from_str(&text) {
        Ok(doc) => doc,
        Err(e) => {
            return FromLogConfig {
                level: None,
                notes: vec![format!(
                    "log_config {shown}: not valid YAML ({e}); logging at info to standard error"
                )],
            }
        }
    };
    let root = &doc["root"]["level"];
    let level = match root {
        serde_yaml::Value::Null => None,
        serde_yaml::Value::String(name) => python_level_name(name),
        serde_yaml::Value::Number(n) => n.as_i64().map(python_level_number),
        _ => None,
    };
    let mut notes = Vec::new();
    match &level {
        Some(l) => notes.push(format!(
            "log_config {shown}: using its root level ({l}); presenced logs to standard error, \
             its handlers, formatters and per-logger levels are not used"
        )),
        None if root.is_null() => notes.push(format!(
            "log_config {shown}: no root level; logging at info to standard error"
        )),
        None => notes.push(format!(
            "log_config {shown}: root level {root:?} is not a Python logging level; logging at info"
        )),
    }
    FromLogConfig { level, notes }
}

/// Python's level names, as tracing levels.
fn python_level_name(name: &str) -> Option<String> {
    let level = match name.to_ascii_uppercase().as_str() {
        "CRITICAL" | "FATAL" | "ERROR" => "error",
        "WARNING" | "WARN" => "warn",
        "INFO" => "info",
        "DEBUG" => "debug",
        // NOTSET on the root logger lets everything through.
        "NOTSET" => "trace",
        _ => return None,
    };
    Some(level.to_owned())
}

/// Python's numeric levels (10 DEBUG, 20 INFO, 30 WARNING, 40 ERROR).
fn python_level_number(n: i64) -> String {
    match n {
        40.. => "error",
        30..=39 => "warn",
        20..=29 => "info",
        10..=19 => "debug",
        _ => "trace",
    }
    .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_text(text: &str) -> FromLogConfig {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.config");
        std::fs::write(&path, text).unwrap();
        read(&path)
    }

    #[test]
    fn takes_the_root_level() {
        let got = read_text("version: 1\nroot:\n  level: WARNING\n  handlers: [buffer]\n");
        assert_eq!(got.level.as_deref(), Some("warn"));
        assert_eq!(
            read_text("root:\n  level: 10\n").level.as_deref(),
            Some("debug")
        );
        assert_eq!(
            read_text("root:\n  level: debug\n").level.as_deref(),
            Some("debug")
        );
    }

    #[test]
    fn missing_or_odd_files_warn_and_keep_the_default() {
        let got = read(Path::new("/nonexistent/presenced-test.log.config"));
        assert_eq!(got.level, None);
        assert!(got.notes[0].contains("cannot read"), "{:?}", got.notes);
        let got = read_text("root:\n  level: LOUD\n");
        assert_eq!(got.level, None);
        assert!(got.notes[0].contains("LOUD"), "{:?}", got.notes);
        assert_eq!(read_text("version: 1\n").level, None);
    }
}
