//! The chat client: the library's `ChatClient` (cursor kept between turns,
//! undo forks), and `agentgate chat` driven through a pseudo-terminal.

use std::time::Duration;

use agentgate::client::{ChatClient, Event};
use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::helpers::*;

#[tokio::test]
async fn undo_forks_the_conversation_and_the_branches_never_see_each_other() {
    let app = spawn_app().await;
    let mut client = ChatClient::new(&app.address, Some("p"), "echo", None);
    let mut streamed = String::new();
    let one = client
        .say("first", |e| {
            if let Event::Delta(t) = e {
                streamed.push_str(&t)
            }
        })
        .await
        .unwrap();
    assert_eq!(one.text, "You said: first [1 messages seen]");
    assert_eq!(streamed, one.text, "the answer arrived as deltas");
    let fork_point = client.cursor().unwrap().to_owned();

    let b = client.say("branch b", |_| {}).await.unwrap();
    assert_eq!(b.text, "You said: branch b [3 messages seen]");
    let b_cursor = client.cursor().unwrap().to_owned();

    // Back to the first turn's cursor: the next turn forks from there.
    assert!(client.undo());
    assert_eq!(client.cursor(), Some(fork_point.as_str()));
    let c = client.say("branch c", |_| {}).await.unwrap();
    assert_eq!(c.text, "You said: branch c [3 messages seen]");
    let c_cursor = client.cursor().unwrap().to_owned();

    // Each branch continues on its own; neither holds the other's turn.
    let ctx = agentgate::cursor::CursorContext {
        project: "p",
        agent: "echo",
        subject: "anonymous",
    };
    let now = agentgate::clock::Clock::now(&app.clock);
    for (cursor, mine, other) in [
        (&b_cursor, "branch b", "branch c"),
        (&c_cursor, "branch c", "branch b"),
    ] {
        let state = app.state.codec.open(cursor, &ctx, now).unwrap();
        let said = format!("{:?}", state.history);
        assert!(said.contains(mine) && !said.contains(other), "{said}");
        assert_eq!(state.history.len(), 4);
    }
    client.set_cursor(Some(b_cursor));
    let b2 = client.say("on b", |_| {}).await.unwrap();
    assert_eq!(b2.text, "You said: on b [5 messages seen]");

    // A new conversation starts from nothing.
    client.new_conversation();
    let fresh = client.say("again", |_| {}).await.unwrap();
    assert_eq!(fresh.text, "You said: again [1 messages seen]");
}

/// Asks for `read_file` when told to read, then answers with what it got.
struct FileReader {
    path: String,
}

/// A streamed chat-completions answer (the client always streams): the
/// text in two pieces, or one tool call.
pub fn sse(text: Option<&str>, call: Option<(&str, String)>) -> ResponseTemplate {
    let mut events = Vec::new();
    if let Some(text) = text {
        let (a, b) = text.split_at(text.len() / 2);
        for piece in [a, b] {
            events.push(json!({"choices": [{"index": 0, "delta": {"content": piece}}]}));
        }
    }
    let finish = if let Some((name, arguments)) = call {
        events.push(
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0,
            "id": "call_1", "type": "function",
            "function": {"name": name, "arguments": arguments}}]}}]}),
        );
        "tool_calls"
    } else {
        "stop"
    };
    events.push(json!({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}));
    events.push(json!({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4}}));
    let mut body: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    body.push_str("data: [DONE]\n\n");
    ResponseTemplate::new(200).set_body_raw(body, "text/event-stream")
}

/// The gateway with a [`FileReader`] model asking for `path`; the mock
/// lives as long as the returned server.
async fn with_file_reader(path: String) -> (MockServer, TestApp) {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(wiremock::matchers::path("/v1/chat/completions"))
        .respond_with(FileReader { path })
        .mount(&upstream)
        .await;
    let app = spawn_app_with(Options {
        upstream: Some(format!("{}/v1", upstream.uri())),
        ..Default::default()
    })
    .await;
    (upstream, app)
}

impl Respond for FileReader {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        let last = body["messages"].as_array().unwrap().last().unwrap().clone();
        if last["role"] == "tool" {
            let text = format!(
                "The file says: {}",
                last["content"].as_str().unwrap_or_default()
            );
            return sse(Some(&text), None);
        }
        let said = last["content"].as_str().unwrap_or_default().to_owned();
        let offered = body["tools"].as_array().cloned().unwrap_or_default();
        if said.contains("read") && offered.iter().any(|t| t["function"]["name"] == "read_file") {
            return sse(
                None,
                Some(("read_file", json!({"path": self.path}).to_string())),
            );
        }
        sse(Some(&format!("Hello again, you said {said}")), None)
    }
}

#[tokio::test]
async fn the_terminal_client_holds_a_two_turn_conversation_with_a_client_tool() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("note.txt");
    std::fs::write(&file, "the secret is 42").unwrap();
    let (upstream, app) = with_file_reader(file.display().to_string()).await;
    let saved = dir.path().join("cursor.txt");
    let steps = json!([
        ["expect", "you> "],
        ["send", "please read my note"],
        // The client asks before running its local tool.
        ["expect", "run read_file"],
        ["expect", "[y/N] "],
        ["send", "y"],
        ["expect", "The file says: the secret is 42"],
        ["expect", "you> "],
        ["send", "thanks"],
        ["expect", "Hello again, you said thanks"],
        ["expect", "you> "],
        ["send", format!("/save {}", saved.display())],
        ["expect", "cursor saved"],
        ["expect", "you> "],
        ["send", "/quit"],
    ]);
    // A real pseudo-terminal, driven by Python's pty module (the test Python).
    let mut child = tokio::process::Command::new(crate::sdk::python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/sdk/chat_pty.py"
        ))
        .arg(env!("CARGO_BIN_EXE_agentgate"))
        .args([
            "chat",
            "--url",
            &app.address,
            "--agent",
            "gpt",
            "--project",
            "p",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncWriteExt;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(steps.to_string().as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("the terminal session ends")
        .unwrap();
    let transcript = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{transcript}\n{}\nupstream got: {:?}",
        String::from_utf8_lossy(&out.stderr),
        received_bodies(&upstream).await
    );
    assert!(transcript.contains("[tool read_file"), "{transcript}");
    // The saved cursor continues the conversation elsewhere: two turns so far.
    let cursor = std::fs::read_to_string(&saved).unwrap();
    let ctx = agentgate::cursor::CursorContext {
        project: "p",
        agent: "gpt",
        subject: "anonymous",
    };
    let now = agentgate::clock::Clock::now(&app.clock);
    let state = app.state.codec.open(cursor.trim(), &ctx, now).unwrap();
    assert_eq!(state.turn, 3, "two user turns and the tool answer's turn");
    let bodies = received_bodies(&upstream).await;
    assert_eq!(bodies.len(), 3);
}

#[tokio::test]
async fn undo_after_a_tool_turn_goes_back_to_before_its_message() {
    let (_upstream, app) = with_file_reader("/nonexistent".into()).await;
    let mut client = ChatClient::new(&app.address, Some("p"), "gpt", None)
        .with_tools(agentgate::client::default_tools());
    client.say("hi", |_| {}).await.unwrap();
    let before = client.cursor().unwrap().to_owned();
    let asked = client.say("please read it", |_| {}).await.unwrap();
    let [agentgate::client::Pending::ClientTool { action_id, .. }] = &asked.pending[..] else {
        panic!("{:?}", asked.pending);
    };
    let done = client
        .answer(
            vec![agentgate::client::Answer::ToolResult {
                action_id: action_id.clone(),
                text: "nothing".into(),
            }],
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!(done.text, "The file says: nothing");
    // One undo takes back the whole tool turn, not just its last step.
    assert!(client.undo());
    assert_eq!(client.cursor(), Some(before.as_str()));
    let next = client.say("again", |_| {}).await.unwrap();
    assert_eq!(next.text, "Hello again, you said again");

    // A turn abandoned while an action waits goes back to before its message.
    let waiting = client.say("read once more", |_| {}).await.unwrap();
    assert_eq!(waiting.pending.len(), 1);
    let after_again = client.cursor().map(str::to_owned);
    client.abandon_turn();
    assert_ne!(client.cursor().map(str::to_owned), after_again);
    let ok = client.say("fine", |_| {}).await.unwrap();
    assert_eq!(ok.text, "Hello again, you said fine");
}
