//! `PRESENCED_…` environment overrides, for containers.
//!
//! `PRESENCED_SERVER_NAME=example.org` sets `server_name`; a double
//! underscore descends one level (`PRESENCED_PRESENCE__ENABLED=false` sets
//! `presence.enabled`), and a numeric segment indexes a list
//! (`PRESENCED_LISTENERS__0__PORT=8080`). Values are read as YAML scalars,
//! so `false`, `8080` and `30s` mean what they would in the file. Only
//! scalars can be set this way; lists and maps belong in the file.

use serde_yaml::{Mapping, Value};

/// The prefix every override starts with.
pub const PREFIX: &str = "PRESENCED_";

/// The one short name: `PRESENCED_PYTHON` sets `python_modules.python`
/// (the interpreter of the Python module host), the variable an operator
/// reaches for first.
const PYTHON: &str = "PRESENCED_PYTHON";

/// The other short name: `PRESENCED_DATABASE_URL` sets `database.url`,
/// the whole connection in one variable (`postgres://…` or `sqlite:path`).
const DATABASE_URL: &str = "PRESENCED_DATABASE_URL";

/// Variables with the prefix that are not config keys: the CLI's, and
/// those of the test scripts (which also reach the binaries they start).
const RESERVED: &[&str] = &[
    "PRESENCED_CONFIG",
    "PRESENCED_REQUIRE_POSTGRES",
    "PRESENCED_REQUIRE_NATS",
];

/// A prefix of variables that are never config keys (test settings such as
/// `PRESENCED_TEST_BACKEND`, `PRESENCED_TEST_POSTGRES`,
/// `PRESENCED_TEST_SIM_SEEDS`).
const RESERVED_PREFIX: &str = "PRESENCED_TEST_";

/// One override taken from the environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Override {
    /// The variable's name, kept for error messages.
    pub variable: String,
    /// Lower-cased key path, e.g. `["presence", "enabled"]`.
    pub path: Vec<String>,
    /// The raw value.
    pub value: String,
}

/// Picks the overrides out of a list of variables (`std::env::vars()` in
/// production, a fixed list in tests so they stay hermetic).
pub fn collect(vars: impl IntoIterator<Item = (String, String)>) -> Vec<Override> {
    let mut out: Vec<Override> = vars
        .into_iter()
        .filter(|(k, _)| {
            k.starts_with(PREFIX)
                && !k.starts_with(RESERVED_PREFIX)
                && !RESERVED.contains(&k.as_str())
        })
        .map(|(variable, value)| {
            let path = if variable == PYTHON {
                vec!["python_modules".to_owned(), "python".to_owned()]
            } else if variable == DATABASE_URL {
                vec!["database".to_owned(), "url".to_owned()]
            } else {
                variable[PREFIX.len()..]
                    .split("__")
                    .map(str::to_ascii_lowercase)
                    .collect()
            };
            Override {
                variable,
                path,
                value,
            }
        })
        .collect();
    // Deterministic order whatever the environment's order is.
    out.sort_by(|a, b| a.variable.cmp(&b.variable));
    out
}

/// Writes every override into the parsed YAML document.
pub fn apply(doc: &mut Value, overrides: &[Override]) -> Result<(), String> {
    for o in overrides {
        let scalar: Value = serde_yaml::from_str(&o.value)
            .map_err(|e| format!("{}: value is not a YAML scalar: {e}", o.variable))?;
        if matches!(scalar, Value::Sequence(_) | Value::Mapping(_)) {
            return Err(format!(
                "{}: only scalar values can be set from the environment",
                o.variable
            ));
        }
        set(doc, &o.path, scalar).map_err(|e| format!("{}: {e}", o.variable))?;
    }
    Ok(())
}

fn set(node: &mut Value, path: &[String], value: Value) -> Result<(), String> {
    let Some((first, rest)) = path.split_first() else {
        *node = value;
        return Ok(());
    };
    if first.is_empty() {
        return Err("empty key segment".to_owned());
    }
    if node.is_null() {
        *node = Value::Mapping(Mapping::new());
    }
    match node {
        Value::Mapping(map) => {
            let child = map
                .entry(Value::String(first.clone()))
                .or_insert(Value::Null);
            set(child, rest, value)
        }
        Value::Sequence(items) => {
            let index: usize = first
                .parse()
                .map_err(|_| format!("{first:?} is not a list index"))?;
            let len = items.len();
            let child = items.get_mut(index).ok_or_else(|| {
                format!("list index {index} out of range (the list has {len} entries)")
            })?;
            set(child, rest, value)
        }
        _ => Err(format!(
            "cannot descend into {first:?}: the value there is a scalar"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn nested_and_indexed() {
        let mut doc: Value = serde_yaml::from_str("listeners:\n  - port: 1\n").unwrap();
        let o = collect(vars(&[
            ("PRESENCED_PRESENCE__ENABLED", "false"),
            ("PRESENCED_LISTENERS__0__PORT", "8080"),
            ("PRESENCED_CONFIG", "ignored.yaml"),
            ("HOME", "/root"),
        ]));
        assert_eq!(o.len(), 2);
        apply(&mut doc, &o).unwrap();
        assert_eq!(doc["presence"]["enabled"], Value::Bool(false));
        assert_eq!(doc["listeners"][0]["port"], Value::Number(8080.into()));
    }

    /// The test scripts' variables reach the binaries the tests start
    /// (CI exports them for the whole run): none of them is a config key.
    #[test]
    fn the_test_settings_are_not_config_keys() {
        let o = collect(vars(&[
            ("PRESENCED_REQUIRE_POSTGRES", "1"),
            ("PRESENCED_REQUIRE_NATS", "1"),
            ("PRESENCED_TEST_BACKEND", "postgres"),
            ("PRESENCED_TEST_SIM_SEEDS", "10000"),
            ("PRESENCED_TEST_KILL_CYCLES", "20"),
            ("PRESENCED_TEST_NATS_SERVER", "/usr/bin/nats-server"),
        ]));
        assert!(o.is_empty(), "{o:?}");
    }

    #[test]
    fn presenced_python_sets_the_module_hosts_interpreter() {
        let mut doc: Value = serde_yaml::from_str("python_modules: {path: [/m]}").unwrap();
        let o = collect(vars(&[("PRESENCED_PYTHON", "/opt/synapse/env/bin/python")]));
        apply(&mut doc, &o).unwrap();
        assert_eq!(
            doc["python_modules"]["python"],
            Value::String("/opt/synapse/env/bin/python".into())
        );
        assert_eq!(doc["python_modules"]["path"][0], Value::String("/m".into()));
    }

    #[test]
    fn bad_index_names_variable() {
        let mut doc: Value = serde_yaml::from_str("listeners: []").unwrap();
        let o = collect(vars(&[("PRESENCED_LISTENERS__3__PORT", "1")]));
        let err = apply(&mut doc, &o).unwrap_err();
        assert!(err.contains("PRESENCED_LISTENERS__3__PORT"), "{err}");
    }
}
