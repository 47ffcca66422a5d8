//! Config loading: defaults, Synapse snippets, errors with lines, env.

use std::path::Path;
use std::time::Duration;

use presenced_server::config::synapse_keys::SYNAPSE_OPTIONS;
use presenced_server::config::{
    presenced_keys, Config, ListenerKind, PresenceEnabled, EXAMPLE_CONFIG,
};
use presenced_server::process::database::{database_target, DatabaseTarget};

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
        Path::new("./presenced-data/presenced.db")
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
    assert_eq!(c.database_path(), Path::new("/tmp/homeserver.db"));
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

/// What Synapse 1.163.2's `--generate-config` wrote (secrets replaced).
const SYNAPSE_GENERATED: &str = include_str!("../fixtures/synapse-homeserver.yaml");
/// A Synapse config grown the way operators grow it.
const SYNAPSE_OPERATOR: &str = include_str!("../fixtures/synapse-operator.yaml");

fn top_level_keys(text: &str) -> Vec<String> {
    let doc: serde_yaml::Value = serde_yaml::from_str(text).unwrap();
    doc.as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn synapse_generated_config_is_accepted_whole() {
    let c = parse(SYNAPSE_GENERATED).expect("Synapse's generated config loads");
    // What presenced uses, with Synapse's meaning.
    assert_eq!(c.server_name.as_str(), "example.com");
    assert_eq!(
        c.pid_file.as_deref(),
        Some(Path::new("/data/homeserver.pid"))
    );
    assert_eq!(c.database_path(), Path::new("/data/homeserver.db"));
    assert_eq!(
        c.log_config.as_deref(),
        Some(Path::new("/data/example.com.log.config"))
    );
    assert_eq!(
        c.signing_key_path(),
        Path::new("/data/example.com.signing.key")
    );
    assert_eq!(
        c.registration_shared_secret.as_ref().map(|s| s.expose()),
        Some("fixture-registration-secret")
    );
    let l = &c.listeners[0];
    assert_eq!(l.port, 8008);
    assert_eq!(l.bind_addresses.len(), 2);
    assert!(l.x_forwarded && !l.tls);
    assert!(l.serves("client") && l.serves("federation"));
    // The rest is listed, in file order, in one line.
    assert_eq!(
        c.ignored_options_warning().as_deref(),
        Some(
            "ignored Synapse options: media_store_path, report_stats, macaroon_secret_key, \
             form_secret, trusted_key_servers"
        )
    );
    // Every key of the file is either used or in that line.
    let used = presenced_keys();
    for key in top_level_keys(SYNAPSE_GENERATED) {
        assert!(
            used.contains(&key) ^ c.ignored_synapse_options.contains(&key),
            "{key} is neither used nor listed as ignored (or both)"
        );
    }
}

#[test]
fn synapse_operator_config_is_accepted_and_its_keys_keep_their_meaning() {
    let c = parse(SYNAPSE_OPERATOR).expect("an operator's Synapse config loads");
    assert_eq!(c.listeners.len(), 4);
    assert!(c.listeners[0].tls && c.listeners[0].serves("federation"));
    assert!(!c.listeners[0].serves("client"));
    assert_eq!(c.listeners[2].kind, ListenerKind::Metrics);
    assert!(c.listeners[2].serves("metrics"));
    assert_eq!(c.listeners[3].kind, ListenerKind::Manhole);
    assert_eq!(c.listeners[3].resource_names().count(), 0);
    assert!(c.enable_metrics);
    assert_eq!(c.database_path(), Path::new("/data/presenced.db"));
    assert_eq!(c.federation_domain_whitelist.as_ref().unwrap().len(), 2);
    assert_eq!(
        c.federation.destination_min_retry_interval,
        Duration::from_secs(600)
    );
    assert_eq!(c.federation.destination_retry_multiplier, 5);
    assert_eq!(c.rc_presence.per_user.per_second, 0.05);
    let modules = c.router_modules();
    assert_eq!(modules[0].module, "my_module.ExamplePresenceRouter");
    assert_eq!(modules[1].module, "my_module.LegacyRouter");
    // Nested Synapse keys inside sections presenced reads are ignored by
    // their path, not refused.
    for key in [
        "listeners[1].tag",
        "listeners[1].request_id_header",
        "database.txn_limit",
        "database.allow_unsafe_locale",
        "database.args.check_same_thread",
        "federation.client_timeout",
        "federation.max_long_retries",
        "manhole_settings",
        "rc_message",
        "email",
        "experimental_features",
        "public_baseurl",
    ] {
        assert!(
            c.ignored_synapse_options.iter().any(|k| k == key),
            "{key} not in {:?}",
            c.ignored_synapse_options
        );
    }
    // rc_login and rc_registration are used once presenced has them as
    // fields; until then they are listed as ignored. Either way, every
    // top-level key is accounted for exactly once.
    let used = presenced_keys();
    for key in top_level_keys(SYNAPSE_OPERATOR) {
        assert!(
            used.contains(&key) ^ c.ignored_synapse_options.contains(&key),
            "{key} is neither used nor listed as ignored (or both)"
        );
    }
}

/// Builds `{a: {b: [{c: null}]}}`-style documents for a dotted Synapse
/// option, with lists where Synapse has them.
fn document_with(dotted: &str) -> String {
    const LISTS: &[&str] = &["listeners", "listeners.resources", "modules"];
    let parts: Vec<&str> = dotted.split('.').collect();
    let mut yaml = String::new();
    for (depth, part) in parts.iter().enumerate() {
        let indent = "  ".repeat(depth * 2);
        let is_list = LISTS.contains(&parts[..=depth].join(".").as_str());
        let last = depth + 1 == parts.len();
        yaml.push_str(&format!(
            "{indent}{part}:{}\n",
            if last { " ~" } else { "" }
        ));
        if !last {
            // Every level one step deeper: a map, or a list of one map.
            let inner = "  ".repeat(depth * 2 + 1);
            yaml.push_str(&format!(
                "{inner}{}",
                if is_list { "- _x: ~\n" } else { "_x: ~\n" }
            ));
        }
    }
    yaml.replace("_x: ~\n", "").replace("- \n", "- ")
}

#[test]
fn every_synapse_option_at_a_level_presenced_reads_is_accepted() {
    let used = presenced_keys();
    let mut checked = 0;
    for option in SYNAPSE_OPTIONS
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let parent_read_by_presenced = match option.rsplit_once('.') {
            None => true,
            Some((parent, _)) => used.iter().any(|k| k == parent),
        };
        if used.iter().any(|k| k == option) || !parent_read_by_presenced {
            continue;
        }
        let text = document_with(option);
        let c = parse(&text).unwrap_or_else(|e| panic!("{option}:\n{text}\n{e}"));
        assert_eq!(
            c.ignored_synapse_options.len(),
            1,
            "{option}: {:?}",
            c.ignored_synapse_options
        );
        checked += 1;
    }
    // Some 230 top-level names plus the nested ones of presenced's sections
    // (241 with Synapse 1.163.2's list).
    assert!(checked > 200, "only {checked} options checked");
}

#[test]
fn unknown_keys_name_their_path_line_and_nearest_key() {
    let err = parse("server_name: example.org\npid_fil: /run/presenced.pid\n").unwrap_err();
    for part in [
        "`pid_fil`",
        "line 2",
        "did you mean `pid_file`?",
        "neither a presenced option nor a Synapse 1.163",
    ] {
        assert!(err.contains(part), "{part:?} missing in: {err}");
    }
    let err = parse("listeners:\n  - port: 8008\n    tsl: true\n").unwrap_err();
    assert!(err.contains("`listeners[0].tsl` at line 3"), "{err}");
    assert!(err.contains("did you mean `listeners[0].tls`?"), "{err}");
    // A typo inside database.args would otherwise leave the database where
    // the operator did not mean it to be.
    let err = parse("database:\n  name: sqlite3\n  args:\n    databse: /x.db\n").unwrap_err();
    assert!(err.contains("`database.args.databse` at line 4"), "{err}");
    assert!(err.contains("`database.args.database`"), "{err}");
    // Far from anything: no suggestion, still the key.
    let err = parse("zzqqxxyy: 1\n").unwrap_err();
    assert!(
        err.contains("`zzqqxxyy`") && !err.contains("did you mean"),
        "{err}"
    );
    // Several at once: all of them.
    let err = parse("pid_fil: x\npresence:\n  idle_timout: 5m\n").unwrap_err();
    assert!(
        err.contains("pid_fil") && err.contains("presence.idle_timout"),
        "{err}"
    );
}

/// Synapse's documented PostgreSQL block, unchanged.
#[test]
fn a_synapse_postgres_block_names_the_database() {
    let c = parse(
        "database:\n  name: psycopg2\n  txn_limit: 10000\n  args:\n    user: synapse_user\n    password: secretpassword\n    dbname: synapse\n    host: db.internal\n    port: 6432\n    cp_min: 5\n    cp_max: 10\n    keepalives_idle: 10\n    keepalives_interval: 10\n    keepalives_count: 3\n    sslmode: require\n    target_session_attrs: any\n",
    )
    .unwrap();
    let DatabaseTarget::Postgres(pg) = database_target(&c).unwrap() else {
        panic!("PostgreSQL expected");
    };
    assert_eq!(
        pg.describe(),
        "host db.internal, port 6432, database synapse, user synapse_user"
    );
    assert_eq!(pg.password.as_deref(), Some("secretpassword"));
    assert_eq!((pg.cp_min, pg.cp_max), (5, 10));
    assert_eq!(pg.sslmode, "require");
    assert_eq!(
        (
            pg.keepalives_idle,
            pg.keepalives_interval,
            pg.keepalives_count
        ),
        (Some(10), Some(10), Some(3))
    );
    assert!(!format!("{c:?}").contains("secretpassword"));
    // psycopg2's alias `database` for `dbname`.
    let c = parse("database:\n  name: psycopg2\n  args:\n    database: matrix\n").unwrap();
    let DatabaseTarget::Postgres(pg) = database_target(&c).unwrap() else {
        panic!("PostgreSQL expected");
    };
    assert_eq!(
        pg.describe(),
        "host localhost, port 5432, database matrix, user postgres"
    );
    // Bad arguments are start-up errors that name the key.
    let c = parse("database:\n  name: psycopg2\n  args:\n    dbname: x\n    sslmode: sometimes\n")
        .unwrap();
    let err = database_target(&c).unwrap_err();
    assert!(
        err.contains("database.args") && err.contains("sslmode"),
        "{err}"
    );
    let c = parse("database:\n  name: psycopg2\n  args:\n    user: x\n").unwrap();
    let err = database_target(&c).unwrap_err();
    assert!(err.contains("dbname"), "{err}");
}

/// `PRESENCED_DATABASE_URL` replaces the whole `database:` block.
#[test]
fn the_database_url_variable_wins_over_the_file() {
    let vars = vec![(
        "PRESENCED_DATABASE_URL".to_owned(),
        "postgres://pd:pw@10.0.0.5:5433/presence?sslmode=disable&cp_max=20".to_owned(),
    )];
    let c = Config::from_yaml(
        "database:\n  name: sqlite3\n  args:\n    database: /tmp/x.db\n",
        "test",
        vars,
    )
    .unwrap();
    let DatabaseTarget::Postgres(pg) = database_target(&c).unwrap() else {
        panic!("PostgreSQL expected");
    };
    assert_eq!(
        pg.describe(),
        "host 10.0.0.5, port 5433, database presence, user pd"
    );
    assert_eq!((pg.sslmode.as_str(), pg.cp_max), ("disable", 20));
    let vars = vec![("PRESENCED_DATABASE_URL".to_owned(), "mysql://x".to_owned())];
    let c = Config::from_yaml("", "test", vars).unwrap();
    let err = database_target(&c).unwrap_err();
    assert!(err.contains("PRESENCED_DATABASE_URL"), "{err}");
}

#[test]
fn unix_sockets_are_refused_with_what_to_do() {
    let err = parse("listeners:\n  - path: /run/synapse.sock\n    type: http\n").unwrap_err();
    assert!(
        err.contains("listeners[0].path") && err.contains("Unix"),
        "{err}"
    );
}

#[test]
fn environment_overrides_go_through_the_same_key_check() {
    let vars = vec![("PRESENCED_REPORT_STATS".to_owned(), "true".to_owned())];
    let c = Config::from_yaml("server_name: example.org\n", "t.yaml", vars).unwrap();
    assert_eq!(c.ignored_synapse_options, ["report_stats"]);
    let vars = vec![("PRESENCED_PID_FIL".to_owned(), "/x".to_owned())];
    let err = Config::from_yaml("server_name: example.org\n", "t.yaml", vars)
        .unwrap_err()
        .to_string();
    assert!(err.contains("pid_fil") && err.contains("pid_file"), "{err}");
}

#[test]
fn log_config_gives_the_root_level_unless_log_level_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("example.com.log.config");
    std::fs::write(
        &log,
        include_str!("../fixtures/synapse-example.com.log.config").replace(
            "level: INFO\n\n    handlers",
            "level: WARNING\n\n    handlers",
        ),
    )
    .unwrap();
    let mut c = parse(&format!("log_config: {}\n", log.display())).unwrap();
    c.apply_log_config();
    assert_eq!(c.log.level.as_deref(), Some("warn"));
    assert!(c.load_notes[0].contains("root level"), "{:?}", c.load_notes);
    let mut c = parse(&format!(
        "log_config: {}\nlog: {{level: debug}}\n",
        log.display()
    ))
    .unwrap();
    c.apply_log_config();
    assert_eq!(c.log.level.as_deref(), Some("debug"));
    let mut c = parse("log_config: /nonexistent/presenced.log.config\n").unwrap();
    c.apply_log_config();
    assert_eq!(c.log.level, None);
    assert!(
        c.load_notes[0].contains("cannot read"),
        "{:?}",
        c.load_notes
    );
}

#[test]
fn cluster_section_takes_exactly_its_four_keys() {
    let c = parse(
        "database: {name: psycopg2, args: {dbname: presenced}}\n\
         cluster:\n  node_name: node-a\n  nats_servers: [\"nats://127.0.0.1:4222\"]\n",
    )
    .unwrap();
    let cluster = c.cluster.expect("cluster section");
    assert_eq!(cluster.node_name, "node-a");
    assert_eq!(cluster.nats_servers, ["nats://127.0.0.1:4222"]);
    assert_eq!(cluster.nats_credentials, None);
    assert!(!cluster.allow_unreplicated);
    assert!(
        parse("").unwrap().cluster.is_none(),
        "absent means one node"
    );

    let typo = parse(
        "database: {url: \"postgres://u@h/db\"}\n\
         cluster: {node_name: a, nats_servers: [\"nats://h:4222\"], partitions: 32}\n",
    )
    .unwrap_err();
    assert!(typo.contains("cluster.partitions"), "{typo}");
}

#[test]
fn cluster_mode_refuses_sqlite_and_bad_values() {
    let sqlite = parse("cluster: {node_name: a, nats_servers: [\"nats://h:4222\"]}").unwrap_err();
    assert!(sqlite.contains("cluster: needs PostgreSQL"), "{sqlite}");
    let pg = "database: {url: \"postgres://u@h/db\"}\n";
    let no_servers =
        parse(&format!("{pg}cluster: {{node_name: a, nats_servers: []}}")).unwrap_err();
    assert!(no_servers.contains("cluster.nats_servers"), "{no_servers}");
    let http = parse(&format!(
        "{pg}cluster: {{node_name: a, nats_servers: [\"http://h:4222\"]}}"
    ))
    .unwrap_err();
    assert!(http.contains("not a NATS URL"), "{http}");
    let name = parse(&format!(
        "{pg}cluster: {{node_name: \"a.b\", nats_servers: [\"nats://h:4222\"]}}"
    ))
    .unwrap_err();
    assert!(name.contains("cluster.node_name"), "{name}");
}

#[test]
fn companion_mode_needs_synapses_signing_key_and_an_admin_token() {
    let section = "synapse: {url: \"http://127.0.0.1:8118\", appservice_registration: as.yaml, admin_token: syt_x}\n";
    let no_key = parse(section).unwrap_err();
    assert!(
        no_key.contains("synapse: needs signing_key_path"),
        "{no_key}"
    );
    let config = parse(&format!(
        "signing_key_path: /etc/synapse/x.signing.key\n{section}"
    ))
    .unwrap();
    let companion = config.synapse.expect("companion mode");
    assert_eq!(companion.base_url(), "http://127.0.0.1:8118");
    assert_eq!(companion.admin_token.unwrap().expose(), "syt_x");
    let no_admin = parse(
        "signing_key_path: k\nsynapse: {url: \"http://h\", appservice_registration: as.yaml}\n",
    )
    .unwrap_err();
    assert!(no_admin.contains("admin_token"), "{no_admin}");
    let typo = parse(
        "signing_key_path: k\nsynapse: {url: \"http://h\", appservice_registration: a, admin_token: t, admin_tokn: u}\n",
    )
    .unwrap_err();
    assert!(typo.contains("admin_tokn"), "{typo}");
    assert!(
        parse("").unwrap().synapse.is_none(),
        "absent means standalone"
    );
}
