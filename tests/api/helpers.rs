//! `spawn_app()` and friends.

use std::io::Write;
use std::sync::{Arc, LazyLock};

use agentgate::clock::ManualClock;
use agentgate::config::Settings;
use agentgate::cursor::Keyring;
use agentgate::startup::Application;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// A fixed test time (2027-01-15), moved only by tests.
pub const T0: i64 = 1_800_000_000;
pub const SYSTEM_PROMPT: &str = "You are the TEST-SYSTEM-PROMPT-7f3a agent.";

static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var("TEST_LOG").is_ok() {
        let _ = agentgate::telemetry::init(&agentgate::config::LogSettings::default());
    }
});

/// A cursor key line with a distinct, random-looking key per `seed`
/// (configured keys must pass a randomness check).
pub fn key_line(kid: &str, seed: u8) -> String {
    use sha2::Digest;
    format!("{kid}:{}", STANDARD.encode(sha2::Sha256::digest([seed])))
}

/// The hex SHA-256 of `text` (how API keys are configured).
pub fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn default_keys() -> String {
    key_line("k1", 1)
}

pub struct TestApp {
    pub address: String,
    pub clock: ManualClock,
    pub client: reqwest::Client,
    pub handle: actix_web::dev::ServerHandle,
    pub state: actix_web::web::Data<agentgate::app::AppState>,
    pub workers: agentgate::jobs::Workers,
}

/// Options for [`spawn_app_with`].
pub struct Options {
    pub keys: String,
    /// Base URL of the OpenAI-compatible upstream (…/v1), if any.
    pub upstream: Option<String>,
    /// Extra TOML appended to the generated config.
    pub extra_toml: String,
    pub provider_toml: String,
    /// Extra keys of the `[server]` section.
    pub server_toml: String,
    pub max_body_bytes: usize,
    pub default_project: Option<String>,
    pub store: Backend,
}

/// Which store an app uses.
#[derive(Debug, Clone, Default)]
pub enum Backend {
    #[default]
    Memory,
    /// A Redis URL; each app gets its own key prefix unless `shared_prefix` is set.
    Redis {
        url: String,
        shared_prefix: Option<String>,
    },
    /// Redis behind Sentinels at `url`, watching the master group `master`.
    Sentinel { url: String, master: String },
}

impl Backend {
    pub fn options(&self) -> Options {
        Options {
            store: self.clone(),
            ..Default::default()
        }
    }

    fn toml(&self) -> String {
        match self {
            Backend::Memory => String::new(),
            Backend::Redis { url, shared_prefix } => {
                let prefix = shared_prefix
                    .clone()
                    .unwrap_or_else(|| format!("t{}", uuid::Uuid::new_v4().simple()));
                format!("\n[store]\nkind = \"redis\"\nurl = \"{url}\"\nprefix = \"{prefix}\"\n")
            }
            Backend::Sentinel { url, master } => format!(
                "\n[store]\nkind = \"redis\"\nurl = \"{url}\"\nsentinel_master = \"{master}\"\nprefix = \"t{}\"\n",
                uuid::Uuid::new_v4().simple()
            ),
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            keys: default_keys(),
            upstream: None,
            extra_toml: String::new(),
            provider_toml: String::new(),
            server_toml: String::new(),
            max_body_bytes: 8 * 1024 * 1024,
            default_project: Some("home".into()),
            store: Backend::Memory,
        }
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

pub async fn spawn_app_with(opts: Options) -> TestApp {
    LazyLock::force(&TRACING);
    let mut toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
workers = 1
max_body_bytes = {max_body}
shutdown_grace_seconds = 2
{default_project}
{server_toml}

[[providers]]
name = "offline"
kind = "scripted"

[[agents]]
id = "echo"
provider = "offline"
model = "scripted-1"
system_prompt = "{SYSTEM_PROMPT}"
"#,
        max_body = opts.max_body_bytes,
        server_toml = opts.server_toml,
        default_project = opts
            .default_project
            .map(|p| format!("default_project = \"{p}\""))
            .unwrap_or_default(),
    );
    if let Some(base) = &opts.upstream {
        toml.push_str(&format!(
            r#"
[[providers]]
name = "up"
kind = "openai"
base_url = "{base}"
api_key_env = "TEST_UPSTREAM_KEY"
{retries}
{provider_toml}

[[agents]]
id = "gpt"
name = "GPT agent"
provider = "up"
model = "gpt-test-model"
system_prompt = "{SYSTEM_PROMPT}"
temperature = 0.3
max_tokens = 256
"#,
            provider_toml = opts.provider_toml,
            retries = if opts.provider_toml.contains("max_retries") {
                ""
            } else {
                "max_retries = 0"
            },
        ));
    }
    toml.push_str(&opts.extra_toml);
    toml.push_str(&opts.store.toml());
    let settings = Settings::from_toml(&toml).expect("test config is valid");
    let keys = Keyring::parse(&opts.keys).expect("test keys are valid");
    let clock = ManualClock::new(T0);
    let env =
        |name: &str| (name == "TEST_UPSTREAM_KEY").then(|| "sk-test-secret-key-123".to_owned());
    let app =
        Application::build(settings, keys, Arc::new(clock.clone()), &env).expect("app builds");
    let port = app.port();
    let handle = app.handle();
    let state = app.state();
    let workers = app.workers().clone();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        clock,
        client: reqwest::Client::new(),
        handle,
        state,
        workers,
    }
}

pub fn text_message(text: &str) -> Value {
    json!({"role": "user", "content": {"type": "text", "text": text}})
}

impl TestApp {
    pub fn chat_url(&self, project: &str) -> String {
        format!("{}/api/v1/projects/{project}/ai/agents/chat", self.address)
    }

    /// POST a JSON chat body to `project`.
    pub async fn chat(&self, project: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.chat_url(project))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// One user turn; returns (status, body).
    pub async fn say(
        &self,
        project: &str,
        agent: &str,
        text: &str,
        cursor: Option<&str>,
    ) -> (u16, Value) {
        let mut body = json!({"agentExternalId": agent, "messages": [text_message(text)]});
        if let Some(c) = cursor {
            body["cursor"] = json!(c);
        }
        let res = self.chat(project, &body).await;
        let status = res.status().as_u16();
        (status, res.json().await.expect("JSON body"))
    }
}

pub fn cursor_of(body: &Value) -> String {
    body["response"]["cursor"]
        .as_str()
        .expect("a cursor")
        .to_owned()
}

pub fn text_of(body: &Value) -> String {
    body["response"]["messages"][0]["content"]["text"]
        .as_str()
        .expect("a text answer")
        .to_owned()
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// An OpenAI chat-completions answer.
pub fn completion(text: &str) -> Value {
    json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-test-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}
    })
}

/// A mock OpenAI-compatible upstream (a real HTTP server) answering `text`.
pub async fn openai_upstream(text: &str) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion(text)))
        .mount(&server)
        .await;
    server
}

/// The JSON bodies the upstream received, in order.
pub async fn received_bodies(server: &MockServer) -> Vec<Value> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).expect("upstream got JSON"))
        .collect()
}

impl TestApp {
    /// GET `path` (starting with `/`) on this app.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request sent")
    }

    /// GET `path` and parse its JSON body.
    pub async fn get_json(&self, path: &str) -> Value {
        self.get(path).await.json().await.expect("a JSON body")
    }

    /// Simulate the replica dying: its job workers stop mid-job and its listener closes.
    pub async fn kill(&self) {
        self.workers.abort();
        self.handle.stop(false).await;
    }

    pub fn quant(&self, path: &str) -> String {
        format!("{}/api/v3/organizations/{path}", self.address)
    }

    /// POST a JSON body to a Quant path; returns (status, body).
    pub async fn quant_post(&self, path: &str, body: &Value) -> (u16, Value) {
        let res = self
            .client
            .post(self.quant(path))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    pub async fn quant_send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut req = self.client.request(method, self.quant(path));
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }
}

/// Poll an async execution until it is `complete` or `failed`, for at most `limit`.
pub async fn wait_done(app: &TestApp, poll_url: &str, limit: std::time::Duration) -> Value {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        let v: Value = app.get_json(poll_url).await;
        if v["status"] == "complete" || v["status"] == "failed" {
            return v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("execution {poll_url} did not finish within {limit:?}");
}

/// A loopback port that refuses connections for as long as the returned
/// socket lives: bound (so no other test can take it) but never listening.
pub fn refused_port() -> (tokio::net::TcpSocket, u16) {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind("127.0.0.1:0".parse().expect("an address"))
        .expect("a free port");
    let port = socket.local_addr().expect("bound").port();
    (socket, port)
}
