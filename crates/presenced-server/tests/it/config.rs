//! Config loading: defaults, Synapse snippets, errors with lines, env.

use std::time::Duration;

use presenced_server::config::{Config, PresenceEnabled, EXAMPLE_CONFIG};

fn parse(text: &str) -> Result<Config, String> {
    Config::from_yaml(text, "test.yaml", Vec::new()).map_err(|e| e.to_string())
}

#[test]
fn empty_config_is_the_embedded_default() {
    let c = parse("").unwrap();
    assert_eq!(c.server_name.as_str(), "localhost:8008");
    assert_eq!(c.listeners.len(), 1);
    assert_eq!(c.listeners[0].port, 8008);
    assert_eq!(c.listeners[0].bind_addresses[0].to_string(), "127.0.0.1");
    assert!(!c.enable_registration);
    assert!(c.registration_shared_secret.is_none());
    assert_eq!(
        c.database_path(),
        std::path::Path::new("./presenced-data/presenced.db")
    );
    assert_eq!(c.presence_enabled(), PresenceEnabled::Enabled);
    assert_eq!(c.presence.sync_online_timeout, Duration::from_secs(30));
    assert_eq!(c.presence.idle_timeout, Duration::from_secs(300));
    assert_eq!(c.presence.last_active_granularity, Duration::from_secs(60));
    assert_eq!(c.rc_presence.per_user.per_second, 0.1);
}

/// Collects every mapping key path of a YAML document (sequences: the
/// first element stands for all).
fn key_paths(value: &serde_yaml::Value, prefix: &str, out: &mut Vec<String>) {
    match value {
        serde_yaml::Value::Mapping(map) => {
            for (k, v) in map {
                let path = format!("{prefix}{}", k.as_str().unwrap());
                out.push(path.clone());
                key_paths(v, &format!("{path}."), out);
            }
        }
        serde_yaml::Value::Sequence(items) => {
            if let Some(first) = items.first() {
                key_paths(first, &format!("{prefix}0."), out);
            }
        }
        _ => {}
    }
}

#[test]
fn example_config_parses_and_lists_every_key() {
    let parsed = parse(EXAMPLE_CONFIG).expect("the example config parses");
    // The example documents the defaults, so it must equal them. It spells
    // out presence.enabled, whose default is "absent, so use_presence or
    // true decides".
    let mut defaults = Config::default();
    defaults.presence.enabled = Some(PresenceEnabled::Enabled);
    let default_doc = serde_yaml::to_value(defaults).unwrap();
    assert_eq!(
        serde_yaml::to_value(&parsed).unwrap(),
        default_doc,
        "example and defaults differ"
    );
    let mut wanted = Vec::new();
    key_paths(&default_doc, "", &mut wanted);
    let example_doc: serde_yaml::Value = serde_yaml::from_str(EXAMPLE_CONFIG).unwrap();
    let mut present = Vec::new();
    key_paths(&example_doc, "", &mut present);
    let missing: Vec<_> = wanted.iter().filter(|k| !present.contains(k)).collect();
    assert!(
        missing.is_empty(),
        "keys missing from presenced.example.yaml: {missing:?}"
    );
}

#[test]
fn synapse_presence_and_modules_snippet_works_unchanged() {
    let c = parse(
        r#"
server_name: example.org
presence:
  enabled: untracked
  include_offline_users_on_sync: true
  presence_router:
    module: synapse_module.LegacyRouter
    config:
      key: value
modules:
  - module: my_module.ExamplePresenceRouter
    config:
      users_who_should_receive_all_presence:
        - "@alice:example.org"
listeners:
  - port: 8008
    tls: false
    type: http
    x_forwarded: true
    bind_addresses: ['::1', '127.0.0.1']
    resources:
      - names: [client, federation]
        compress: false
database:
  name: sqlite3
  args:
    database: /tmp/homeserver.db
exclude_rooms_from_presence: ["!abc:example.org"]
rc_presence:
  per_user:
    per_second: 0.05
    burst_count: 0.5
"#,
    )
    .unwrap();
    assert_eq!(c.presence_enabled(), PresenceEnabled::Untracked);
    let modules = c.router_modules();
    assert_eq!(modules.len(), 2);
    // modules: first, the legacy router last.
    assert_eq!(modules[0].module, "my_module.ExamplePresenceRouter");
    assert_eq!(
        modules[0].config["users_who_should_receive_all_presence"][0],
        "@alice:example.org"
    );
    assert_eq!(modules[1].module, "synapse_module.LegacyRouter");
    assert_eq!(modules[1].config["key"], "value");
    assert_eq!(c.listeners[0].bind_addresses.len(), 2);
    assert_eq!(
        c.database_path(),
        std::path::Path::new("/tmp/homeserver.db")
    );
}

#[test]
fn unknown_key_names_key_and_line() {
    let err = parse("server_name: example.org\npresence:\n  enabled: true\n  idle_timout: 5m\n")
        .unwrap_err();
    assert!(err.contains("idle_timout"), "{err}");
    assert!(err.contains("line 4"), "{err}");
    assert!(err.contains("test.yaml"), "{err}");
    let err = parse("server_name: example.org\nfoo: 1\n").unwrap_err();
    assert!(err.contains("foo") && err.contains("line 2"), "{err}");
}

#[test]
fn wrong_type_names_key_and_line() {
    let err = parse("enable_registration: true\nlisteners:\n  - port: eighty\n").unwrap_err();
    assert!(err.contains("port") || err.contains("listeners"), "{err}");
    assert!(err.contains("line 3"), "{err}");
    let err = parse("presence:\n  enabled: maybe\n").unwrap_err();
    assert!(err.contains("enabled") && err.contains("line 2"), "{err}");
}

#[test]
fn bad_duration_names_key_and_line() {
    let err = parse("presence:\n  sync_online_timeout: 30 seconds\n").unwrap_err();
    assert!(err.contains("sync_online_timeout"), "{err}");
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn durations_accept_ints_and_units() {
    let c = parse("presence:\n  sync_online_timeout: 45000\n  idle_timeout: 1h\n  last_active_granularity: 30s\n").unwrap();
    assert_eq!(c.presence.sync_online_timeout, Duration::from_secs(45));
    assert_eq!(c.presence.idle_timeout, Duration::from_secs(3600));
    assert_eq!(c.presence.last_active_granularity, Duration::from_secs(30));
}

#[test]
fn inconsistent_timers_are_refused() {
    let err = parse("presence:\n  idle_timeout: 30s\n  last_active_granularity: 1m\n").unwrap_err();
    assert!(err.contains("idle_timeout"), "{err}");
}

#[test]
fn use_presence_fallback() {
    assert_eq!(
        parse("use_presence: false\n").unwrap().presence_enabled(),
        PresenceEnabled::Disabled
    );
    assert_eq!(
        parse("use_presence: false\npresence:\n  enabled: true\n")
            .unwrap()
            .presence_enabled(),
        PresenceEnabled::Enabled
    );
}

#[test]
fn environment_overrides() {
    let vars = vec![
        (
            "PRESENCED_SERVER_NAME".to_owned(),
            "env.example.org".to_owned(),
        ),
        ("PRESENCED_PRESENCE__ENABLED".to_owned(), "false".to_owned()),
        (
            "PRESENCED_PRESENCE__IDLE_TIMEOUT".to_owned(),
            "10m".to_owned(),
        ),
        ("PRESENCED_LISTENERS__0__PORT".to_owned(), "9009".to_owned()),
        ("UNRELATED".to_owned(), "x".to_owned()),
    ];
    let c = Config::from_yaml(
        "server_name: file.example.org\nlisteners:\n  - port: 8008\n",
        "f.yaml",
        vars,
    )
    .unwrap();
    assert_eq!(c.server_name.as_str(), "env.example.org");
    assert_eq!(c.presence_enabled(), PresenceEnabled::Disabled);
    assert_eq!(c.presence.idle_timeout, Duration::from_secs(600));
    assert_eq!(c.listeners[0].port, 9009);

    // Overrides work without a file too (containers).
    let c = Config::from_yaml(
        "",
        "default",
        vec![(
            "PRESENCED_ENABLE_REGISTRATION".to_owned(),
            "true".to_owned(),
        )],
    )
    .unwrap();
    assert!(c.enable_registration);

    // A bad override names the variable.
    let err = Config::from_yaml(
        "",
        "default",
        vec![(
            "PRESENCED_PRESENCE__IDLE_TIMEOUT".to_owned(),
            "soon".to_owned(),
        )],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("PRESENCED_PRESENCE__IDLE_TIMEOUT"), "{err}");
}

#[test]
fn secrets_do_not_print() {
    let c = parse("registration_shared_secret: hunter2\n").unwrap();
    assert!(!format!("{c:?}").contains("hunter2"));
    assert!(!serde_yaml::to_string(&c).unwrap().contains("hunter2"));
    assert_eq!(c.registration_shared_secret.unwrap().expose(), "hunter2");
}

#[test]
fn federation_keys_and_defaults() {
    let c = parse("").unwrap();
    assert!(c.presence.federation.send && c.presence.federation.receive);
    assert_eq!(c.presence.max_remote_users_per_server, 10_000);
    assert_eq!(c.federation_domain_whitelist, None);
    assert!(c.federation_allowed("anyone.org".try_into().unwrap()));
    assert_eq!(
        c.signing_key_path(),
        c.data_dir.join("localhost:8008.signing.key")
    );

    let c = parse(
        "server_name: example.org\n\
         data_dir: /srv/pd\n\
         signing_key_path: /etc/matrix/example.org.signing.key\n\
         federation_domain_whitelist: [friend.org]\n\
         presence:\n  federation:\n    send: false\n  max_remote_users_per_server: 50\n",
    )
    .unwrap();
    assert!(!c.presence.federation.send && c.presence.federation.receive);
    assert_eq!(c.presence.max_remote_users_per_server, 50);
    assert_eq!(
        c.signing_key_path(),
        std::path::PathBuf::from("/etc/matrix/example.org.signing.key")
    );
    assert!(c.federation_allowed("friend.org".try_into().unwrap()));
    assert!(!c.federation_allowed("stranger.org".try_into().unwrap()));

    let err = parse("presence:\n  max_remote_users_per_server: 0\n").unwrap_err();
    assert!(err.contains("max_remote_users_per_server"), "{err}");
    let err = parse("presence:\n  federation:\n    recieve: true\n").unwrap_err();
    assert!(err.contains("recieve"), "{err}");
    let err = parse("federation_domain_whitelist: [\"not a server\"]\n").unwrap_err();
    assert!(err.contains("federation_domain_whitelist"), "{err}");
}
