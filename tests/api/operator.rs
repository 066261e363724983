//! Operator tools, run as the real binary: `cursor inspect` on a cursor from
//! a real turn, `config check`, and `serve` from a directory with no config.

use std::process::{Command, Stdio};

use serde_json::Value;

use crate::helpers::*;

fn agentgate() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agentgate"));
    cmd.env_remove("AGENTGATE_CURSOR_KEYS")
        .env_remove("AGENTGATE_CURSOR_KEYS_FILE")
        .env_remove("AGENTGATE_CONFIG")
        .env(
            "AGENTGATE_CONFIG",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/agentgate.toml"),
        );
    cmd
}

/// `agentgate cursor inspect CURSOR --project P --agent A --at AT EXTRA…`
/// with `keys` as the cursor keys (none: unset), `[P, A]` as `context`.
fn inspect(
    keys: Option<&str>,
    cursor: &str,
    [project, agent]: [&str; 2],
    at: i64,
    extra: &[&str],
) -> std::process::Output {
    let mut cmd = agentgate();
    if let Some(keys) = keys {
        cmd.env("AGENTGATE_CURSOR_KEYS", keys);
    }
    cmd.args([
        "cursor",
        "inspect",
        cursor,
        "--project",
        project,
        "--agent",
        agent,
    ])
    .args(["--at", &at.to_string()])
    .args(extra)
    .output()
    .unwrap()
}

#[tokio::test]
async fn cursor_inspect_opens_a_real_cursor_only_in_its_own_context() {
    let app = spawn_app().await;
    let (status, one) = app.say("p", "echo", "a secret question", None).await;
    assert_eq!(status, 200);
    let (status, two) = app
        .say("p", "echo", "another one", Some(&cursor_of(&one)))
        .await;
    assert_eq!(status, 200);
    let cursor = cursor_of(&two);

    let out = inspect(
        Some(&default_keys()),
        &cursor,
        ["p", "echo"],
        T0,
        &["--json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["kid"], "k1");
    assert_eq!(v["turn"], 2);
    assert_eq!(v["historyItems"], 4);
    assert_eq!(v["counts"]["user"], 2);
    assert_eq!(v["tokenChars"], cursor.len());
    assert!(v["expiresAt"].as_u64().unwrap() > v["issuedAt"].as_u64().unwrap());
    // What was said never leaves the cursor.
    assert!(
        !text.contains("secret question") && !text.contains("You said"),
        "{text}"
    );

    // The text form, reading the cursor from standard input.
    let mut child = agentgate()
        .env("AGENTGATE_CURSOR_KEYS", default_keys())
        .args([
            "cursor",
            "inspect",
            "-",
            "--project",
            "p",
            "--agent",
            "echo",
        ])
        .args(["--at", &T0.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), cursor.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("turn 2") && text.contains("4 items: 2 user, 2 assistant"),
        "{text}"
    );

    // Another project (or agent, or caller) cannot open it: exit 1 and why.
    for context in [["other", "echo"], ["p", "gpt"]] {
        let out = inspect(Some(&default_keys()), &cursor, context, T0, &["--json"]);
        assert_eq!(out.status.code(), Some(1));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["ok"], false);
        assert!(
            v["error"].as_str().unwrap().contains("authentication"),
            "{v}"
        );
    }
    // Without the keys the gateway runs with, nothing can be opened.
    let out = inspect(None, &cursor, ["p", "echo"], T0, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("AGENTGATE_CURSOR_KEYS"));
    let out = inspect(Some(&key_line("k2", 9)), &cursor, ["p", "echo"], T0, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown_kid"));
    // Long after its expiry (now, for a cursor sealed at the test clock's T0): the reason.
    let out = inspect(
        Some(&default_keys()),
        &cursor,
        ["p", "echo"],
        T0 + 7200,
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expired"));
}

#[test]
fn config_check_prints_every_problem_with_its_key() {
    let out = agentgate()
        .args([
            "config",
            "check",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/agentgate.toml"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        r#"
[server]
listen = "nowhere"

[[providers]]
name = "up"
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
api_key_env = "AGENTGATE_TEST_UNSET_KEY"

[[agents]]
id = "a"
provider = "missing"
model = "m"

[[agents]]
id = "b"
provider = "up"
model = "m"
temperature = 7.0
"#,
    )
    .unwrap();
    let out = agentgate()
        .env_remove("AGENTGATE_TEST_UNSET_KEY")
        .args(["config", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    for key in [
        "server.listen",
        "agents[0].provider",
        "agents[1].temperature",
    ] {
        assert!(text.contains(key), "{key} in {text}");
    }

    // Valid, but a provider's key is missing from the environment.
    let missing = dir.path().join("missing.toml");
    std::fs::write(
        &missing,
        r#"
[cursor]
allow_ephemeral_key = true

[[providers]]
name = "up"
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
api_key_env = "AGENTGATE_TEST_UNSET_KEY"

[[agents]]
id = "b"
provider = "up"
model = "m"
"#,
    )
    .unwrap();
    let out = agentgate()
        .env_remove("AGENTGATE_TEST_UNSET_KEY")
        .args(["config", "check"])
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("AGENTGATE_TEST_UNSET_KEY"));
}

#[tokio::test]
async fn serve_runs_from_a_directory_without_a_config() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_agentgate"))
        .arg("serve")
        .current_dir(dir.path())
        .env_remove("AGENTGATE_CONFIG")
        .env("HOME", dir.path())
        .env_remove("XDG_CONFIG_HOME")
        .env("AGENTGATE__SERVER__LISTEN", "127.0.0.1:0")
        .env("AGENTGATE__LOG__FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // The port it bound is in its "listening" log line.
    use tokio::io::AsyncBufReadExt;
    // Logs go to stderr.
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut port = None;
    let mut seen = Vec::new();
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line()).await
    {
        seen.push(line.clone());
        if line.contains("\"listening\"") {
            let v: Value = serde_json::from_str(&line).unwrap();
            port = v["fields"]["port"].as_u64().or(v["port"].as_u64());
            break;
        }
    }
    let port = port.unwrap_or_else(|| panic!("no listening line in {seen:#?}"));
    assert!(
        seen.iter()
            .any(|l| l.contains("built-in development config")),
        "{seen:#?}"
    );
    let (status, body) = {
        let res = reqwest::Client::new()
            .post(format!(
                "http://127.0.0.1:{port}/api/v1/projects/demo/ai/agents/chat"
            ))
            .json(&serde_json::json!({"agentId": "echo", "messages": [text_message("hi")]}))
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.json::<Value>().await.unwrap())
    };
    assert_eq!(status, 200, "{body}");
    assert_eq!(text_of(&body), "You said: hi [1 messages seen]");
    let _ = child.kill().await;
}
