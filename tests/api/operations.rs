//! Health, readiness, unknown routes, graceful shutdown.

use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn_app().await;
    let res = app.get("/healthz").await;
    assert_eq!(res.status(), 200);
    let res = app.get("/readyz").await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        serde_json::json!({"status": "ready", "store": {"kind": "memory", "up": true}})
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let app = spawn_app().await;
    let res = app.get("/nowhere").await;
    assert_eq!(res.status(), 404);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["type"],
        "not_found"
    );
    let res = app.client.get(app.chat_url("p")).send().await.unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["type"],
        "method_not_allowed"
    );
}

#[tokio::test]
async fn without_a_default_project_the_short_route_is_404() {
    let app = spawn_app_with(Options {
        default_project: None,
        ..Default::default()
    })
    .await;
    let res = app
        .client
        .post(format!("{}/ai/agents/chat", app.address))
        .json(&serde_json::json!({"agentExternalId": "echo", "messages": [text_message("x")]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn a_graceful_stop_ends_the_server() {
    let app = spawn_app().await;
    app.handle.stop(true).await;
    let res = app
        .client
        .get(format!("{}/healthz", app.address))
        .send()
        .await;
    assert!(res.is_err(), "the listener is closed after stop");
}

/// The release binary's behaviour on SIGTERM, as an orchestrator sees it.
pub mod sigterm {
    use std::process::Stdio;
    use std::sync::Arc;
    use std::time::Duration;

    use serde_json::json;
    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::process::{Child, Command};

    use crate::helpers::{completion, default_keys, text_message};
    use crate::hostile::{RawUpstream, Script, http};

    /// Start the `agentgate` binary on a free port with `upstream` as its
    /// OpenAI provider; returns the child and its port (read from its log).
    async fn start(upstream: &str, dir: &tempfile::TempDir) -> (Child, u16) {
        let (child, port, _log, _reader) = start_logged(upstream, dir).await;
        (child, port)
    }

    /// Like [`start`], also returning every log line the binary writes
    /// (complete once it has exited).
    async fn start_logged(
        upstream: &str,
        dir: &tempfile::TempDir,
    ) -> (
        Child,
        u16,
        Arc<std::sync::Mutex<Vec<String>>>,
        tokio::task::JoinHandle<()>,
    ) {
        launch(&base_config(upstream, ""), dir).await
    }

    /// A config: one OpenAI provider on `upstream`, agent `gpt`, then `extra`.
    pub fn base_config(upstream: &str, extra: &str) -> String {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\nshutdown_grace_seconds = 30\n\n\
             [[providers]]\nname = \"up\"\nkind = \"openai\"\nbase_url = \"{upstream}\"\n\
             max_retries = 0\n\n\
             [[agents]]\nid = \"gpt\"\nprovider = \"up\"\nmodel = \"m\"\n\n{extra}"
        )
    }

    /// Start the binary with `config_text`; its port, and its log as it is written.
    pub async fn launch(
        config_text: &str,
        dir: &tempfile::TempDir,
    ) -> (
        Child,
        u16,
        Arc<std::sync::Mutex<Vec<String>>>,
        tokio::task::JoinHandle<()>,
    ) {
        launch_with_env(config_text, dir, &[]).await
    }

    /// [`launch`] with extra environment variables.
    pub async fn launch_with_env(
        config_text: &str,
        dir: &tempfile::TempDir,
        env: &[(&str, &str)],
    ) -> (
        Child,
        u16,
        Arc<std::sync::Mutex<Vec<String>>>,
        tokio::task::JoinHandle<()>,
    ) {
        agentgate::install_crypto_provider();
        let config = dir.path().join("agentgate.toml");
        std::fs::write(&config, config_text).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_agentgate"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("AGENTGATE_CURSOR_KEYS", default_keys())
            .env_remove("RUST_LOG")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the agentgate binary starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = log.clone();
        let port = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                seen.lock().unwrap().push(line);
                if v["fields"]["message"] == "listening" {
                    return v["fields"]["port"].as_u64().unwrap() as u16;
                }
            }
            panic!("the binary exited before listening");
        })
        .await
        .expect("the binary logs its port");
        // Keep reading its log so that it never blocks on a full pipe; the
        // reader ends at the pipe's end, once the process has exited.
        let reader = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                seen.lock().unwrap().push(line);
            }
        });
        (child, port, log, reader)
    }

    pub fn sigterm(child: &Child) {
        signal(child, "-TERM");
    }

    pub fn sighup(child: &Child) {
        signal(child, "-HUP");
    }

    /// Wait (bounded) for the binary to exit, which it must do with status 0.
    pub async fn exits_0(child: &mut Child, why: &str) {
        let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
            .await
            .expect(why)
            .unwrap();
        assert!(status.success(), "{status:?}");
    }

    fn signal(child: &Child, which: &str) {
        let pid = child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args([which, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    async fn refused(port: u16) -> bool {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
    }

    #[tokio::test]
    async fn sigterm_closes_the_listener_at_once_finishes_the_request_in_flight_and_exits_0() {
        let (up, release) = crate::hostile::held_completion("finished after the signal", 0).await;
        let dir = tempfile::tempdir().unwrap();
        let (mut child, port) = start(&up.base, &dir).await;
        let url = format!("http://127.0.0.1:{port}/api/v1/projects/p/ai/agents/chat");
        let in_flight = tokio::spawn(async move {
            reqwest::Client::new()
                .post(url)
                .json(&json!({"agentExternalId": "gpt", "messages": [text_message("slow")]}))
                .send()
                .await
        });
        up.wait_hits(1).await;

        sigterm(&child);
        let signalled = tokio::time::Instant::now();
        let mut closed = false;
        while signalled.elapsed() < Duration::from_secs(1) {
            if refused(port).await {
                closed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            closed,
            "new connections are refused within a second of SIGTERM"
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(200), child.wait())
                .await
                .is_err(),
            "the process waits for the request in flight"
        );

        release.add_permits(1);
        let res = in_flight
            .await
            .unwrap()
            .expect("the in-flight request is answered");
        assert_eq!(res.status(), 200);
        let v: serde_json::Value = res.json().await.unwrap();
        assert_eq!(
            v["response"]["messages"][0]["content"]["text"],
            "finished after the signal"
        );
        exits_0(
            &mut child,
            "it exits once drained, well before the 30 s grace period",
        )
        .await;
    }

    #[tokio::test]
    async fn an_idle_replica_exits_0_without_waiting_out_the_grace_period() {
        let up = RawUpstream::start(Script::Bytes(Vec::new())).await;
        let dir = tempfile::tempdir().unwrap();
        let (mut child, port) = start(&up.base, &dir).await;
        assert!(!refused(port).await);
        sigterm(&child);
        exits_0(
            &mut child,
            "an idle replica exits well before the 30 s grace period",
        )
        .await;
    }

    #[tokio::test]
    async fn malformed_http_from_a_client_writes_no_error_lines() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let up = RawUpstream::start(Script::Bytes(Vec::new())).await;
        let dir = tempfile::tempdir().unwrap();
        let (mut child, port, log, reader) = start_logged(&up.base, &dir).await;
        for garbage in [
            &b"GARBAGE / HTTP/9.9\r\n\r\n"[..],
            b"POST /healthz HTTP/1.1\r\ncontent-length: x\r\n\r\n",
            b"\x00\x01\x02\r\n\r\n",
        ] {
            let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            socket.write_all(garbage).await.unwrap();
            let mut answer = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut answer)).await;
        }
        sigterm(&child);
        exits_0(&mut child, "exits").await;
        tokio::time::timeout(Duration::from_secs(10), reader)
            .await
            .expect("the log pipe closes once the process exited")
            .unwrap();
        let log = log.lock().unwrap();
        let errors: Vec<&String> = log.iter().filter(|l| l.contains("\"ERROR\"")).collect();
        assert!(errors.is_empty(), "{errors:?}");
        assert!(
            log.iter().any(|l| l.contains("stopped")),
            "the log was read to the end"
        );
    }

    /// Keys, credentials and cursors never reach the log, even at debug level.
    #[tokio::test]
    async fn no_key_credential_or_cursor_appears_in_the_logs() {
        const API_KEY: &str = "ag-secret-9d8c7b6a5f4e3d2c";
        let hash = crate::helpers::sha256_hex(API_KEY);
        let body = completion("a reply").to_string();
        let up = RawUpstream::start(Script::Bytes(http(
            "200 OK",
            &[("content-type", "application/json")],
            &body,
        )))
        .await;
        let extra = format!(
            "[log]\nlevel = \"debug\"\n\n[auth]\nmode = \"api_keys\"\n\n\
             [[auth.api_keys]]\nid = \"logged-id\"\nsha256 = \"{hash}\"\n\
             subject = \"svc\"\ntenants = [\"*\"]\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let (mut child, port, log, reader) = launch(&base_config(&up.base, &extra), &dir).await;
        let client = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{port}/api/v1/projects/p/ai/agents/chat");
        let mut cursors = Vec::new();
        let mut body = json!({"agentExternalId": "gpt", "messages": [text_message("hi")]});
        for _ in 0..2 {
            let res = client
                .post(&url)
                .bearer_auth(API_KEY)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            let v: serde_json::Value = res.json().await.unwrap();
            let cursor = v["response"]["cursor"].as_str().unwrap().to_owned();
            body["cursor"] = json!(cursor);
            cursors.push(cursor);
        }
        // A wrong key and a forged cursor are refused, and not echoed either.
        let res = client
            .post(&url)
            .bearer_auth("ag-wrong-key-0000")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
        let forged = format!("{}x", cursors[1]);
        let res = client
            .post(&url)
            .bearer_auth(API_KEY)
            .json(&json!({"agentExternalId": "gpt", "cursor": forged, "messages": [text_message("hi")]}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400);
        sigterm(&child);
        exits_0(&mut child, "exits").await;
        tokio::time::timeout(Duration::from_secs(10), reader)
            .await
            .expect("the log pipe closes")
            .unwrap();
        let log = log.lock().unwrap().join("\n");
        assert!(
            log.contains("\"key_id\":\"logged-id\""),
            "the key's id is logged: {log}"
        );
        let cursor_key = default_keys();
        let key_bytes = cursor_key.split_once(':').unwrap().1;
        for secret in [
            API_KEY,
            "ag-wrong-key-0000",
            key_bytes,
            "sk-test-secret-key-123",
        ] {
            assert!(!log.contains(secret), "{secret} is in the log");
        }
        for cursor in &cursors {
            // Not the cursor, nor any long piece of it.
            let body = cursor.rsplit('.').next().unwrap();
            assert!(!log.contains(&body[..40]), "a cursor is in the log");
        }
    }

    /// A stream still open when the grace period is about to end is ended
    /// with an `error` event the client can retry on, and the process exits 0.
    #[tokio::test]
    async fn an_open_stream_ends_with_an_error_event_before_the_grace_period_ends() {
        use futures::StreamExt;
        let dot = json!({"choices": [{"delta": {"content": "."}}]});
        let up = RawUpstream::start(Script::Trickle {
            piece: format!("data: {dot}\n\n").into_bytes(),
            every_ms: 50,
            count: 1200,
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let config = base_config(&up.base, "")
            .replace("shutdown_grace_seconds = 30", "shutdown_grace_seconds = 2");
        let (mut child, port, _log, _reader) = launch(&config, &dir).await;
        let res = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/api/v1/projects/p/ai/agents/chat"))
            .json(&json!({"agentExternalId": "gpt", "stream": true, "messages": [text_message("go")]}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let mut body = res.bytes_stream();
        let mut seen = String::new();
        // The first delta: the stream is open and the model is producing.
        while !seen.contains("event: delta") {
            let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
                .await
                .expect("a first event")
                .expect("more")
                .unwrap();
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        sigterm(&child);
        let rest = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(Ok(chunk)) = body.next().await {
                seen.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await;
        assert!(rest.is_ok(), "the stream ended within the grace period");
        let last = seen
            .split("\n\n")
            .filter(|e| e.contains("event: "))
            .last()
            .unwrap()
            .to_owned();
        assert!(last.contains("event: error"), "{last}");
        assert!(last.contains("\"type\":\"not_ready\""), "{last}");
        exits_0(&mut child, "exits").await;
    }
}

#[tokio::test]
async fn metrics_are_exposed_in_prometheus_format_without_tenants_or_paths() {
    let upstream = openai_upstream("metered").await;
    // An agent no other test has, so that its series can only come from here
    // (the recorder is one per process).
    let app = spawn_app_with(Options {
        upstream: Some(format!("{}/v1", upstream.uri())),
        extra_toml: "[[agents]]\nid = \"metrics-probe\"\nprovider = \"up\"\nmodel = \"m\"\n".into(),
        ..Default::default()
    })
    .await;
    let (status, first) = app.say("tenant-x7q", "metrics-probe", "hi", None).await;
    assert_eq!(status, 200, "{first}");
    let res = app
        .chat(
            "tenant-x7q",
            &serde_json::json!({"agentExternalId": "echo", "stream": true, "messages": [text_message("stream")]}),
        )
        .await;
    let _ = res.text().await;
    let (status, _) = app
        .say("tenant-x7q", "metrics-probe", "hi", Some("garbage"))
        .await;
    assert_eq!(status, 400);
    let res = app.get("/metrics").await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = res.text().await.unwrap();
    for needle in [
        "agentgate_http_requests_total{",
        "route=\"/api/v1/projects/{project}/ai/agents/chat\"",
        "agentgate_http_request_duration_seconds_bucket{",
        "agentgate_model_tokens_total{agent=\"metrics-probe\",provider=\"up\",direction=\"in\"} 11",
        "agentgate_model_tokens_total{agent=\"metrics-probe\",provider=\"up\",direction=\"out\"} 3",
        "agentgate_cursor_failures_total{reason=\"shape\"}",
        "agentgate_cursor_opens_total{kid=\"k1\"}",
        "agentgate_time_to_first_token_seconds_bucket",
        "agentgate_store_up",
        "agentgate_async_queue_depth",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    assert!(!text.contains("tenant-x7q"), "tenants are not labels");
}

/// SIGHUP re-reads agents, providers, tools and auth without a restart.
mod reload {
    use std::time::Duration;

    use serde_json::json;

    use crate::helpers::{completion, text_message};
    use crate::hostile::{RawUpstream, Script, http};
    use crate::operations::sigterm::{base_config, exits_0, launch, sighup, sigterm};

    async fn status_of(port: u16, agent: &str) -> u16 {
        reqwest::Client::new()
            .post(format!(
                "http://127.0.0.1:{port}/api/v1/projects/p/ai/agents/chat"
            ))
            .json(&json!({"agentExternalId": agent, "messages": [text_message("hi")]}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Poll (bounded) until `agent` answers `want`.
    async fn until(port: u16, agent: &str, want: u16) -> bool {
        for _ in 0..200 {
            if status_of(port, agent).await == want {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }

    #[tokio::test]
    async fn sighup_swaps_agents_and_an_invalid_file_changes_nothing() {
        let body = completion("ok").to_string();
        let up = RawUpstream::start(Script::Bytes(http(
            "200 OK",
            &[("content-type", "application/json")],
            &body,
        )))
        .await;
        let dir = tempfile::tempdir().unwrap();
        let (mut child, port, log, reader) = launch(&base_config(&up.base, ""), &dir).await;
        assert_eq!(status_of(port, "gpt").await, 200);
        assert_eq!(status_of(port, "newcomer").await, 404);

        // A new agent appears and the old one goes, without a restart.
        let renamed = base_config(&up.base, "").replace("id = \"gpt\"", "id = \"newcomer\"");
        std::fs::write(dir.path().join("agentgate.toml"), renamed).unwrap();
        sighup(&child);
        assert!(until(port, "newcomer", 200).await, "the new agent answers");
        assert_eq!(
            status_of(port, "gpt").await,
            404,
            "the removed agent is gone"
        );

        // An invalid file: the error is logged with its key, nothing changes.
        let broken =
            base_config(&up.base, "").replace("id = \"gpt\"", "id = \"newcomer\"\ntemperature = 9");
        std::fs::write(dir.path().join("agentgate.toml"), broken).unwrap();
        sighup(&child);
        let mut logged = false;
        for _ in 0..200 {
            if log.lock().unwrap().iter().any(|l| {
                l.contains("configuration reload failed") && l.contains("agents[0].temperature")
            }) {
                logged = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(logged, "the failed reload is logged with its key");
        assert_eq!(
            status_of(port, "newcomer").await,
            200,
            "the current set stays"
        );

        sigterm(&child);
        exits_0(&mut child, "exits").await;
        let _ = tokio::time::timeout(Duration::from_secs(10), reader).await;
    }

    #[tokio::test]
    async fn an_admin_key_reloads_over_http() {
        const ADMIN: &str = "ag-admin-5e4d3c2b1a";
        let hash = crate::helpers::sha256_hex(ADMIN);
        let admin = format!(
            "[[auth.api_keys]]\nid = \"ops\"\nsha256 = \"{hash}\"\nsubject = \"ops\"\n\
             tenants = [\"*\"]\nadmin = true\n"
        );
        let body = completion("ok").to_string();
        let up = RawUpstream::start(Script::Bytes(http(
            "200 OK",
            &[("content-type", "application/json")],
            &body,
        )))
        .await;
        let dir = tempfile::tempdir().unwrap();
        let (mut child, port, _log, _reader) = launch(&base_config(&up.base, &admin), &dir).await;
        let url = format!("http://127.0.0.1:{port}/admin/reload");
        let client = reqwest::Client::new();
        let res = client.post(&url).send().await.unwrap();
        assert_eq!(res.status(), 401, "no key");
        let res = client
            .post(&url)
            .bearer_auth("ag-not-admin")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "not a key");

        let renamed = base_config(&up.base, &admin).replace("id = \"gpt\"", "id = \"viahttp\"");
        std::fs::write(dir.path().join("agentgate.toml"), renamed).unwrap();
        let res = client.post(&url).bearer_auth(ADMIN).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let v: serde_json::Value = res.json().await.unwrap();
        assert_eq!(v["agents"], 1);
        assert_eq!(status_of(port, "viahttp").await, 200);
        assert_eq!(status_of(port, "gpt").await, 404);

        let broken = base_config(&up.base, &admin).replace("model = \"m\"", "model = \"\"");
        std::fs::write(dir.path().join("agentgate.toml"), broken).unwrap();
        let res = client.post(&url).bearer_auth(ADMIN).send().await.unwrap();
        assert_eq!(res.status(), 400);
        let v: serde_json::Value = res.json().await.unwrap();
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("agents[0].model"),
            "{v}"
        );
        assert_eq!(
            status_of(port, "viahttp").await,
            200,
            "the current set stays"
        );

        sigterm(&child);
        exits_0(&mut child, "exits").await;
    }
}

/// OpenTelemetry export from the binary.
mod otel {
    use serde_json::json;

    use crate::helpers::text_message;
    use crate::operations::sigterm::{base_config, exits_0, launch_with_env, sigterm};

    /// With `OTEL_EXPORTER_OTLP_ENDPOINT` set, the binary exports its spans
    /// over OTLP/HTTP to a collector (here a real HTTP server), continuing
    /// the caller's W3C trace, and flushes them when it stops.
    #[tokio::test]
    async fn spans_are_exported_over_otlp_in_the_callers_trace() {
        use wiremock::matchers::{method, path};
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let collector = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/v1/traces"))
            .respond_with(ResponseTemplate::new(200))
            .mount(&collector)
            .await;
        let up = crate::helpers::openai_upstream("traced").await;
        let dir = tempfile::tempdir().unwrap();
        let endpoint = collector.uri();
        let key = "otel-test-key-5a9e1c";
        let auth = format!(
            "[auth]\nmode = \"api_keys\"\n\n[[auth.api_keys]]\nid = \"tracer\"\nsha256 = \"{}\"\nsubject = \"svc\"\ntenants = [\"*\"]\n",
            crate::helpers::sha256_hex(key)
        );
        let (mut child, port, log, reader) = launch_with_env(
            &base_config(&format!("{}/v1", up.uri()), &auth),
            &dir,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
                ("OTEL_SERVICE_NAME", "agentgate-under-test"),
            ],
        )
        .await;
        let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let res = reqwest::Client::new()
            .post(format!(
                "http://127.0.0.1:{port}/api/v1/projects/p/ai/agents/chat"
            ))
            .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
            .bearer_auth(key)
            .json(&json!({"agentExternalId": "gpt", "messages": [text_message("hi")]}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        sigterm(&child);
        exits_0(&mut child, "the binary exits after SIGTERM").await;
        reader.await.unwrap();
        let posts = collector.received_requests().await.unwrap();
        assert!(!posts.is_empty(), "no spans were exported");
        let mut body = Vec::new();
        for p in &posts {
            assert_eq!(p.headers["content-type"], "application/x-protobuf");
            body.extend_from_slice(&p.body);
        }
        let contains = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
        let id: Vec<u8> = (0..16)
            .map(|i| u8::from_str_radix(&trace_id[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        assert!(contains(&id), "the spans continue the caller's trace");
        for name in [
            &b"request"[..],
            b"cognite_chat",
            b"agentgate-under-test",
            b"tracer",
        ] {
            assert!(
                contains(name),
                "{:?} was not exported",
                String::from_utf8_lossy(name)
            );
        }
        assert!(!contains(key.as_bytes()), "the API key was exported");
        let log = log.lock().unwrap().join("\n");
        assert!(log.contains("exporting spans over OTLP"), "{log}");
    }
}
