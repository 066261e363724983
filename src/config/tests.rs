use super::*;

const MINIMAL: &str = r#"
[[providers]]
name = "local"
kind = "scripted"

[[agents]]
id = "helper"
provider = "local"
model = "scripted-1"
"#;

#[test]
fn defaults_apply_to_a_minimal_file() {
    let s = Settings::from_toml(MINIMAL).unwrap();
    assert_eq!(s.server.listen, "127.0.0.1:8080");
    assert_eq!(s.server.max_body_bytes, 8 * 1024 * 1024);
    assert_eq!(s.server.shutdown_grace_seconds, 30);
    assert_eq!(s.cursor.ttl_seconds, 3600);
    assert_eq!(s.cursor.max_conversation_age_seconds, 86_400);
    assert!(!s.cursor.allow_ephemeral_key);
    assert_eq!(s.auth.mode, AuthMode::None);
    assert_eq!(s.log.format, LogFormat::Json);
    let a = &s.agents[0];
    assert_eq!((a.max_steps, a.max_turn_seconds), (8, 120));
    assert_eq!((a.history_budget_bytes, a.keep_images_turns), (262_144, 2));
}

#[test]
fn an_mcp_server_is_a_tool_agents_can_list() {
    let text = format!(
        "{MINIMAL}tools = [\"kb\"]\n\n[[tools]]\nname = \"kb\"\nkind = \"mcp\"\nurl = \"http://127.0.0.1:9/mcp\"\nallow = [\"search\"]\nheaders = {{ authorization = \"env:KB_TOKEN\" }}"
    );
    let s = Settings::from_toml(&text).unwrap();
    let t = &s.tools[0];
    assert_eq!(
        (t.kind, t.refresh_seconds, t.timeout_ms),
        (ToolKind::Mcp, 300, 10_000)
    );
    assert_eq!(t.allow.as_deref(), Some(&["search".to_owned()][..]));
}

#[test]
fn the_shipped_config_is_valid() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/agentgate.toml"
    ))
    .unwrap();
    let s = Settings::from_toml(&text).unwrap();
    assert!(s.cursor.allow_ephemeral_key);
    assert!(!s.agents.is_empty());
}

#[test]
fn bad_files_fail_naming_the_key() {
    let cases = [
        ("[server]\nmax_body_bytes = \"lots\"", "max_body_bytes"),
        ("[server]\nlisten = \"nowhere\"", "server.listen"),
        ("[server]\nmax_body_bytes = 1000", "server.max_body_bytes"),
        ("[server]\nunknown_key = 1", "unknown_key"),
        ("[cursor]\nttl_seconds = 999999", "cursor.ttl_seconds"),
        (
            "[[providers]]\nname = \"o\"\nkind = \"openai\"",
            "providers[0].base_url",
        ),
        ("[[providers]]\nname = \"o\"\nkind = \"martian\"", "kind"),
        (
            &format!("{MINIMAL}\n[[agents]]\nid = \"helper\"\nprovider = \"local\"\nmodel = \"m\""),
            "agents[1].id",
        ),
        (
            &MINIMAL.replace("provider = \"local\"", "provider = \"nope\""),
            "agents[0].provider",
        ),
        (
            &format!("{MINIMAL}temperature = 3.5"),
            "agents[0].temperature",
        ),
        (
            &format!("{MINIMAL}history_budget_bytes = 10"),
            "agents[0].history_budget_bytes",
        ),
        (
            &format!("{MINIMAL}fallback_providers = [\"other\"]"),
            "agents[0].fallback_providers",
        ),
        (
            &format!("{MINIMAL}fallback_providers = [\"local\"]"),
            "agents[0].fallback_providers",
        ),
        (
            &format!("{MINIMAL}fallback_models = {{ other = \"m\" }}"),
            "agents[0].fallback_models",
        ),
        (
            &format!("{MINIMAL}first_byte_timeout_ms = 0"),
            "agents[0].first_byte_timeout_ms",
        ),
        (
            &format!("{MINIMAL}thinking_budget_tokens = 10"),
            "agents[0].thinking_budget_tokens",
        ),
        (
            "[[providers]]\nname = \"a\"\nkind = \"anthropic\"\nbreaker_threshold = 0",
            "providers[0].breaker_threshold",
        ),
        (
            "[[providers]]\nname = \"a\"\nkind = \"anthropic\"\nbase_url = \"ftp://x\"",
            "providers[0].base_url",
        ),
        (
            "[[providers]]\nname = \"o\"\nkind = \"openai\"\nbase_url = \"http://x\"\nanthropic_version = \"1\"",
            "providers[0].anthropic_version",
        ),
        ("[[tools]]\nname = \"kb\"\nkind = \"mcp\"", "tools[0].url"),
        (
            "[[tools]]\nname = \"kb\"\nkind = \"mcp\"\nurl = \"http://x/mcp\"\nmethod = \"GET\"",
            "tools[0].method",
        ),
        (
            "[[tools]]\nname = \"kb\"\nkind = \"mcp\"\nurl = \"http://x/mcp\"\nrefresh_seconds = 0",
            "tools[0].refresh_seconds",
        ),
        (
            "[[tools]]\nname = \"h\"\nkind = \"http\"\nurl = \"http://x\"\nallow = [\"a\"]",
            "tools[0].allow",
        ),
        (
            "[[tools]]\nname = \"kb.x\"\nkind = \"mcp\"\nurl = \"http://x/mcp\"",
            "tools[0].name",
        ),
        ("[log]\nlevel = \"nonsense==\"", "log.level"),
        ("[auth]\nmode = \"api_keys\"", "auth.api_keys"),
        ("[auth]\nmode = \"jwt\"", "auth.issuers"),
        (
            "[auth]\nmode = \"jwt\"\n[[auth.issuers]]\nissuer = \"i\"\naudience = \"a\"\njwks_url = \"https://x/j\"\nalgorithms = [\"HS256\"]",
            "auth.issuers[0].algorithms",
        ),
        (
            "[auth]\nmode = \"jwt\"\n[[auth.issuers]]\nissuer = \"i\"\naudience = \"a\"\njwks_url = \"file:///etc/passwd\"",
            "auth.issuers[0].jwks_url",
        ),
        (
            "[auth]\nmode = \"jwt\"\n[[auth.issuers]]\nissuer = \"i\"\naudience = \"a\"\njwks_url = \"http://login.example.com/j\"",
            "auth.issuers[0].jwks_url",
        ),
        (
            "[auth]\nmode = \"jwt\"\n[[auth.issuers]]\nissuer = \"i\"\naudience = \"a\"\njwks_url = \"https://x/j\"\njwks_refresh_seconds = 0",
            "auth.issuers[0].jwks_refresh_seconds",
        ),
        (
            "[auth]\nmode = \"api_keys\"\n[[auth.api_keys]]\nid = \"a\"\nsha256 = \"abc\"\nsubject = \"s\"\ntenants = [\"*\"]",
            "auth.api_keys[0].sha256",
        ),
        (
            &format!(
                "[auth]\nmode = \"api_keys\"\n[[auth.api_keys]]\nid = \"a\"\nsha256 = \"{}\"\nsubject = \"s\"\ntenants = []",
                "a".repeat(64)
            ),
            "auth.api_keys[0].tenants",
        ),
        (
            &format!(
                "[[auth.api_keys]]\nid = \"a\"\nsha256 = \"{}\"\nsubject = \"s\"\ntenants = [\"*\"]",
                "a".repeat(64)
            ),
            "auth.api_keys",
        ),
        (
            "[server]\nshutdown_grace_seconds = 999999999999",
            "server.shutdown_grace_seconds",
        ),
        ("[server]\nworkers = 5000", "server.workers"),
        ("[server]\nreplicas = 0", "server.replicas"),
        (
            "[[providers]]\nname = \"a\"\nkind = \"anthropic\"\nidle_timeout_ms = 9223372036854775807",
            "providers[0].idle_timeout_ms",
        ),
        (
            &format!("{MINIMAL}total_timeout_ms = 99999999999"),
            "agents[0].total_timeout_ms",
        ),
        ("[jobs]\nlease_seconds = 0", "jobs.lease_seconds"),
        ("[jobs]\nmax_attempts = 0", "jobs.max_attempts"),
        ("[jobs]\nmax_attempts = 1000", "jobs.max_attempts"),
        ("[store]\nurl = \"redis://127.0.0.1\"", "store.url"),
        ("[store]\ncluster = true", "store.cluster"),
        (
            "[store]\nkind = \"redis\"\nurl = \"redis://a:1,http://b:2\"",
            "store.url",
        ),
        ("[store]\nkind = \"redis\"\nurl = \" , \"", "store.url"),
        (
            "[store]\nkind = \"redis\"\nurl = \"redis://a\"\nprefix = \"p{x}\"",
            "store.prefix",
        ),
        ("[server]\nreplica_id = \"r\\u0001\"", "server.replica_id"),
        ("[store]\nsentinel_master = \"m\"", "store.sentinel_master"),
        (
            "[store]\nkind = \"redis\"\nurl = \"redis://a\"\ncluster = true\nsentinel_master = \"m\"",
            "store.sentinel_master",
        ),
        (
            "[server]\nbody_timeout_seconds = 0",
            "server.body_timeout_seconds",
        ),
        ("[server]\nmax_connections = 0", "server.max_connections"),
        (
            "[server]\ndefault_project = \"a b\"",
            "server.default_project",
        ),
        (
            &MINIMAL.replace("id = \"helper\"", "id = \"h\u{e9}\""),
            "agents[0].id",
        ),
        (
            "[[providers]]\nname = \"a\"\nkind = \"anthropic\"\nmax_event_bytes = 10",
            "providers[0].max_event_bytes",
        ),
        (
            "[[providers]]\nname = \"a\"\nkind = \"anthropic\"\nmax_event_bytes = 2048\nmax_response_bytes = 1024",
            "providers[0].max_response_bytes",
        ),
        (
            "[[providers]]\nname = \"a\"\nkind = \"anthropic\"\nmax_tool_call_bytes = 0",
            "providers[0].max_tool_call_bytes",
        ),
    ];
    for (text, key) in cases {
        let err = Settings::from_toml(text).unwrap_err().to_string();
        assert!(err.contains(key), "{text:?}: {err:?} should name {key}");
    }
}

#[test]
#[expect(
    clippy::result_large_err,
    reason = "figment::Jail fixes the closure's error type"
)]
fn environment_overrides_scalars() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.toml");
    std::fs::write(&path, MINIMAL).unwrap();
    figment::Jail::expect_with(|jail| {
        jail.set_env("AGENTGATE__SERVER__LISTEN", "127.0.0.1:9999");
        jail.set_env("AGENTGATE__CURSOR__TTL_SECONDS", "60");
        let s = Settings::load(&path).map_err(|e| figment::Error::from(e.to_string()))?;
        assert_eq!(s.server.listen, "127.0.0.1:9999");
        assert_eq!(s.cursor.ttl_seconds, 60);
        Ok(())
    });
}

#[test]
fn keys_come_from_env_or_file_never_both() {
    let line = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let c = CursorSettings::default();
    let (ring, src) = load_keyring(&c, |v| (v == KEYS_ENV).then(|| line.to_owned())).unwrap();
    assert_eq!((ring.active().kid(), src), ("k1", KeySource::Env));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys");
    std::fs::write(&file, format!("{line}\n")).unwrap();
    let f = file.to_string_lossy().to_string();
    let (_, src) = load_keyring(&c, |v| (v == KEYS_FILE_ENV).then(|| f.clone())).unwrap();
    assert_eq!(src, KeySource::File);

    assert!(matches!(
        load_keyring(&c, |_| Some(line.to_owned())),
        Err(ConfigError::BothKeySources)
    ));
    assert!(matches!(
        load_keyring(&c, |_| None),
        Err(ConfigError::NoKeys)
    ));
    let dev = CursorSettings {
        allow_ephemeral_key: true,
        ..c
    };
    assert_eq!(
        load_keyring(&dev, |_| None).unwrap().1,
        KeySource::Ephemeral
    );
    let err = load_keyring(&c, |v| (v == KEYS_ENV).then(|| "k1:short".to_owned()))
        .unwrap_err()
        .to_string();
    assert!(err.contains(KEYS_ENV) && !err.contains("short"), "{err}");
}

#[test]
fn secrets_in_settings_never_print() {
    let text = format!(
        "{MINIMAL}\n[store]\nkind = \"redis\"\nurl = \"redis://:hunter2-pw@127.0.0.1:6379\"\n\n\
         [[tools]]\nname = \"h\"\nkind = \"http\"\nurl = \"http://127.0.0.1:9/x\"\n\
         headers = {{ authorization = \"Bearer tool-secret-77\" }}\n"
    );
    let s = Settings::from_toml(&text).unwrap();
    let printed = format!("{s:?} {s:#?}");
    assert!(!printed.contains("hunter2-pw"), "{printed}");
    assert!(!printed.contains("tool-secret-77"), "{printed}");
}

#[test]
fn every_section_with_a_problem_is_reported() {
    let text =
        format!("[server]\nworkers = 5000\n\n[jobs]\nmax_attempts = 0\n{MINIMAL}temperature = 9\n");
    let err = Settings::from_toml(&text).unwrap_err().to_string();
    for key in [
        "server.workers",
        "jobs.max_attempts",
        "agents[0].temperature",
    ] {
        assert!(err.contains(key), "{err} should name {key}");
    }
    assert!(err.starts_with("3 problems"), "{err}");
}

const TWO_KINDS: &str = r#"
[[providers]]
name = "oa"
kind = "openai"
base_url = "http://127.0.0.1:9/v1"

[[providers]]
name = "an"
kind = "anthropic"

[[tools]]
name = "get_weather"
kind = "http"
url = "http://127.0.0.1:9/weather"
description = "Weather"

[[agents]]
id = "a"
provider = "oa"
model = "m"
tools = ["get_weather"]
"#;

#[test]
fn tool_choice_and_params_are_read_and_checked_per_provider_kind() {
    let ok = format!(
        "{TWO_KINDS}tool_choice = \"get_weather\"\n[agents.params]\ntop_p = 0.5\nseed = 3\nstop = [\"END\"]\n\
         [agents.params.response_format]\ntype = \"json_schema\"\n\
         json_schema = {{ name = \"w\", schema = {{ type = \"object\" }} }}\n"
    );
    let s = Settings::from_toml(&ok).unwrap();
    let a = &s.agents[0];
    assert_eq!(a.tool_choice.as_deref(), Some("get_weather"));
    assert_eq!(a.params["seed"], serde_json::json!(3));
    assert_eq!(a.params["response_format"]["json_schema"]["name"], "w");

    let cases = [
        (
            format!("{TWO_KINDS}tool_choice = \"get_wether\""),
            "agents[0].tool_choice",
            "not auto, required, none",
        ),
        (
            format!("{TWO_KINDS}[agents.params]\ntop_pp = 1"),
            "agents[0].params.top_pp",
            "not a parameter the openai provider takes",
        ),
        (
            format!("{TWO_KINDS}max_tokens = 5\n[agents.params]\nmax_completion_tokens = 9"),
            "agents[0].params.max_completion_tokens",
            "not both",
        ),
        (
            // Valid for OpenAI, but the route falls back to Anthropic, which takes no `stop`.
            format!("{TWO_KINDS}fallback_providers = [\"an\"]\n[agents.params]\nstop = \"x\""),
            "agents[0].params.stop",
            "provider \"an\"",
        ),
        (
            format!(
                "{TWO_KINDS}provider = \"an\"\ntool_choice = \"required\"\nthinking_budget_tokens = 2048"
            )
            .replacen("provider = \"oa\"\n", "", 1),
            "agents[0].tool_choice",
            "cannot force a tool call while thinking",
        ),
    ];
    for (text, key, message) in cases {
        let e = Settings::from_toml(&text).expect_err(&text).to_string();
        assert!(
            e.contains(key) && e.contains(message),
            "{e:?} should name {key:?} and say {message:?}"
        );
    }
}

#[test]
fn several_redis_urls_select_the_cluster_client() {
    let s =
        Settings::from_toml("[store]\nkind = \"redis\"\nurl = \"redis://a:1/, redis://b:2/\"\n")
            .unwrap();
    assert_eq!(s.store.redis_nodes(), ["redis://a:1/", "redis://b:2/"]);
    assert!(s.store.redis_cluster());
    let one = Settings::from_toml("[store]\nkind = \"redis\"\nurl = \"redis://a:1/\"\n").unwrap();
    assert!(!one.store.redis_cluster());
    let forced =
        Settings::from_toml("[store]\nkind = \"redis\"\nurl = \"redis://a:1/\"\ncluster = true\n")
            .unwrap();
    assert!(forced.store.redis_cluster());
    // Several Sentinels are not a cluster.
    let sentinels = Settings::from_toml(
        "[store]\nkind = \"redis\"\nurl = \"redis://a:26379,redis://b:26379\"\nsentinel_master = \"m\"\n",
    )
    .unwrap();
    assert!(!sentinels.store.redis_cluster());
}

#[test]
fn the_deploy_configs_are_valid() {
    for file in [
        "deploy/config/agentgate.toml",
        "deploy/k8s/base/agentgate.toml",
    ] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let s = Settings::from_toml(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        // Containers listen on every interface, and never fall back to an ephemeral key.
        assert_eq!(s.server.listen, "0.0.0.0:8080", "{file}");
        assert!(!s.cursor.allow_ephemeral_key, "{file}");
    }
}

#[test]
fn every_problem_of_an_agent_is_reported() {
    let text = format!("{MINIMAL}temperature = 9.0\nmax_steps = 0\nmodel = \"\"\n")
        .replace("model = \"scripted-1\"\n", "");
    let e = Settings::from_toml(&text).unwrap_err().to_string();
    for key in [
        "agents[0].temperature",
        "agents[0].max_steps",
        "agents[0].model",
    ] {
        assert!(e.contains(key), "{key} in {e}");
    }
}

#[test]
fn every_problem_of_every_section_is_reported() {
    let text = format!(
        "[server]\nworkers = 5000\nreplicas = 0\nlisten = \"nowhere\"\n\n\
         [jobs]\nmax_attempts = 0\nworkers = 0\nlease_seconds = 0\n\n\
         [store]\nurl = \"redis://127.0.0.1:1\"\ncluster = true\nprefix = \"a b\"\n\n\
         [cursor]\nttl_seconds = 0\nmax_conversation_age_seconds = 0\n\n\
         [[tools]]\nname = \"bad name\"\nkind = \"http\"\nurl = \"http://127.0.0.1:9/\"\n\
         timeout_ms = 0\nmax_response_bytes = 0\n\n\
         [[providers]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"ftp://x\"\nmax_retries = 99\n\
         breaker_threshold = 0\n{MINIMAL}"
    );
    let err = Settings::from_toml(&text).unwrap_err().to_string();
    let keys = [
        "server.workers",
        "server.replicas",
        "server.listen",
        "jobs.max_attempts",
        "jobs.workers",
        "jobs.lease_seconds",
        "store.url",
        "store.cluster",
        "store.prefix",
        "cursor.ttl_seconds",
        "cursor.max_conversation_age_seconds",
        // Follows from the cursor's age: a session may not outlive it.
        "sessions.max_age_seconds",
        "tools[0].name",
        "tools[0].timeout_ms",
        "tools[0].max_response_bytes",
        "providers[0].base_url",
        "providers[0].max_retries",
        "providers[0].breaker_threshold",
    ];
    for key in keys {
        assert!(err.contains(&format!("{key}:")), "{err} should name {key}");
    }
    assert!(
        err.starts_with(&format!("{} problems", keys.len())),
        "{err}"
    );
}
