//! The playground in a real browser: headless Chromium (Debian's package)
//! driven by playwright-core (tests/browser/playground.mjs), against the
//! gateway and a mock model that streams, asks for a client action and
//! calls a server tool that needs confirmation. The screenshot is left in
//! target/playground.png.

use std::path::PathBuf;

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::client::sse;
use crate::helpers::*;

struct Script;

impl Respond for Script {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        let messages = body["messages"].as_array().unwrap();
        let last = messages.last().unwrap();
        if last["role"] == "tool" {
            let called = messages
                .iter()
                .rev()
                .find_map(|m| m["tool_calls"][0]["function"]["name"].as_str())
                .unwrap_or_default();
            let content = last["content"].as_str().unwrap_or_default();
            let text = match called {
                "ask_user" => format!("You chose {content}"),
                _ => format!("The answer is {content}"),
            };
            return sse(Some(&text), None);
        }
        let said = last["content"].as_str().unwrap_or_default();
        match said {
            "please ask me" => sse(
                None,
                Some(("ask_user", json!({"question": "Which colour?"}).to_string())),
            ),
            "calculate 6*7" => sse(
                None,
                Some(("calculator", json!({"expression": "6*7"}).to_string())),
            ),
            other => sse(Some(&format!("Nice to meet you, {other}")), None),
        }
    }
}

fn playwright() -> PathBuf {
    let dir = std::env::var_os("AGENTGATE_TEST_PLAYWRIGHT").map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("target/browser/node_modules/playwright-core")
        },
        PathBuf::from,
    );
    assert!(
        dir.join("package.json").exists(),
        "the browser test needs playwright-core and Debian's chromium: run scripts/test.sh, \
         or set AGENTGATE_TEST_PLAYWRIGHT to a playwright-core directory"
    );
    dir
}

#[tokio::test]
async fn the_playground_chats_streams_and_answers_actions_in_headless_chromium() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(Script)
        .mount(&upstream)
        .await;
    let app = spawn_app_with(Options {
        upstream: Some(format!("{}/v1", upstream.uri())),
        extra_toml: r#"
[playground]
enabled = true

[[tools]]
name = "calculator"
kind = "builtin"
confirm = true

[[agents]]
id = "tooly"
provider = "up"
model = "gpt-test-model"
tools = ["calculator"]
"#
        .into(),
        ..Default::default()
    })
    .await;
    let shot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/playground.png");
    let out = tokio::process::Command::new("node")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/browser/playground.mjs"
        ))
        .arg(&app.address)
        .arg(&shot)
        .env("PLAYWRIGHT_CORE", playwright())
        .kill_on_drop(true)
        .output()
        .await
        .expect("node must be installed (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(shot.exists(), "the screenshot was saved");
}
