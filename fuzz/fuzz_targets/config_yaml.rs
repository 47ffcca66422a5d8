//! The config loader: YAML text, and after a NUL byte `NAME=value` lines
//! of environment overrides (`PRESENCED_…`), through `Config::from_yaml` as
//! `presenced` calls it at start. Errors are fine; panics and hangs are not.

#![no_main]

use libfuzzer_sys::fuzz_target;
use presenced_server::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (yaml, vars) = text.split_once('\0').unwrap_or((text, ""));
    let vars: Vec<(String, String)> = vars
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    if let Ok(config) = Config::from_yaml(yaml, "fuzz input", vars) {
        // What start-up reads next from a loaded config.
        let _ = config.presence_enabled();
        let _ = config.database_path();
        let _ = config.signing_key_path();
        let _ = config.router_modules();
    }
});
