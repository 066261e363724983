//! docs/quickstart.md cannot rot: every `sh` block runs (in order, with the
//! real binary on PATH, in one scratch directory), every `python` block runs
//! with the test Python (the real SDKs), and every `toml` block marked
//! `<!-- file: NAME -->` is written there first. The block that is exactly
//! `agentgate serve` is the server the others talk to: it is started here,
//! as written, on a free port that replaces `127.0.0.1:8080` in every block.
//! `console` blocks are not run (a release build, Docker); the test pins
//! which commands they hold.

use std::path::Path;
use std::process::Stdio;

struct Block {
    lang: String,
    text: String,
    file: Option<String>,
}

fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut lines = markdown.lines();
    let mut file = None;
    while let Some(line) = lines.next() {
        if let Some(name) = line
            .strip_prefix("<!-- file: ")
            .and_then(|l| l.strip_suffix(" -->"))
        {
            file = Some(name.to_owned());
            continue;
        }
        if let Some(lang) = line.strip_prefix("```") {
            let mut text = String::new();
            for body in lines.by_ref() {
                if body.starts_with("```") {
                    break;
                }
                text.push_str(body);
                text.push('\n');
            }
            out.push(Block {
                lang: lang.trim().to_owned(),
                text,
                file: file.take(),
            });
        } else if !line.trim().is_empty() {
            file = None;
        }
    }
    out
}

#[tokio::test]
async fn every_command_of_the_quick_start_runs() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/quickstart.md"))
        .unwrap();
    let blocks = blocks(&doc);
    let dir = tempfile::tempdir().unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_agentgate"));
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );

    // What is not run is pinned: the release build and the Docker lines.
    let unrun: Vec<&str> = blocks
        .iter()
        .filter(|b| b.lang == "console")
        .flat_map(|b| b.text.lines())
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert!(
        unrun.iter().all(|l| l.starts_with("cargo build --release")
            || l.starts_with("docker ")
            || l.starts_with("python3 -m venv")
            || l.starts_with("pip install ")),
        "{unrun:?}"
    );
    // The SDK versions the page tells people to install are the ones tested.
    let pinned = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/sdk/requirements.txt"
    ))
    .unwrap();
    for l in unrun.iter().filter(|l| l.starts_with("pip install ")) {
        for package in l.split_whitespace().skip(2) {
            assert!(
                pinned.lines().any(|p| p == package),
                "{package} is not in tests/sdk/requirements.txt"
            );
        }
    }
    for b in &blocks {
        assert!(
            ["sh", "python", "toml", "console", "json"].contains(&b.lang.as_str()),
            "a block of unknown kind {:?}",
            b.lang
        );
        if let Some(name) = &b.file {
            std::fs::write(dir.path().join(name), &b.text).unwrap();
        }
    }

    // The server, started as the page says (no config: the built-in one).
    let serve = blocks
        .iter()
        .position(|b| b.lang == "sh" && b.text.trim() == "agentgate serve")
        .expect("the page starts the gateway with `agentgate serve`");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    drop(listener);
    let mut server = tokio::process::Command::new(bin)
        .arg("serve")
        .current_dir(dir.path())
        .env("HOME", dir.path())
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("AGENTGATE_CONFIG")
        .env_remove("AGENTGATE_CURSOR_KEYS")
        .env("AGENTGATE__SERVER__LISTEN", &address)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    agentgate::install_crypto_provider();
    let client = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..300 {
        if let Ok(r) = client.get(format!("http://{address}/readyz")).send().await
            && r.status() == 200
        {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ready, "agentgate serve did not become ready");

    let mut ran = 0;
    for (i, b) in blocks.iter().enumerate() {
        if i == serve || !["sh", "python"].contains(&b.lang.as_str()) {
            continue;
        }
        let text = b.text.replace("127.0.0.1:8080", &address);
        let mut cmd = if b.lang == "sh" {
            let mut c = tokio::process::Command::new("bash");
            c.args(["-euo", "pipefail", "-c", &text]);
            c
        } else {
            let mut c = tokio::process::Command::new(crate::sdk::python());
            c.args(["-c", &text]);
            c
        };
        let out = cmd
            .current_dir(dir.path())
            .env("PATH", &path)
            .env("HOME", dir.path())
            .env_remove("AGENTGATE_CONFIG")
            .env_remove("AGENTGATE_CURSOR_KEYS")
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "block {i} ({}) failed:\n{}\n--- stdout\n{stdout}\n--- stderr\n{}",
            b.lang,
            b.text,
            String::from_utf8_lossy(&out.stderr)
        );
        // The conversations in the page continue: their second turns saw 3 messages.
        if b.text.contains("Again") {
            assert!(stdout.contains("[3 messages seen]"), "block {i}: {stdout}");
        }
        if b.text.contains("agentgate chat") {
            assert!(
                stdout.contains("You said: Hello [1 messages seen]"),
                "block {i}: {stdout}"
            );
        }
        ran += 1;
    }
    assert!(ran >= 6, "ran {ran} blocks");
    let _ = server.kill().await;
}
