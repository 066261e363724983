//! Scale-out with real parts: `scripts/cluster` starts replicas of the real
//! binary, a real Redis and real nginx round robin in front (the shipped
//! deploy/nginx/agentgate-proxy.conf), and these tests drive them through the
//! balancer: conversations that cross replicas, a key rotation rolled through
//! every replica under load, and a replica killed under load.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use serde_json::{Value, json};

use crate::helpers::*;

/// A cluster started by `scripts/cluster up`, stopped (`down`) on drop.
pub struct Cluster {
    dir: tempfile::TempDir,
    pub base: String,
    config: PathBuf,
}

/// One line of `scripts/cluster status`.
#[derive(Debug, Clone)]
pub struct Replica {
    pub index: u32,
    pub pid: Option<i32>,
    pub url: String,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/cluster")
}

impl Cluster {
    /// `scripts/cluster up n` with `config` and `keys`.
    pub fn up(n: u32, config: &str, keys: &str) -> Self {
        agentgate::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("agentgate.toml");
        std::fs::write(&config_path, config).unwrap();
        let mut cluster = Self {
            dir,
            base: String::new(),
            config: config_path,
        };
        let out = cluster
            .command(&["up", &n.to_string()])
            .env("AGENTGATE_CURSOR_KEYS", keys)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            let logs: Vec<String> = std::fs::read_dir(cluster.dir.path().join("state"))
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
                .map(|e| {
                    let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                    format!(
                        "{}:\n{}",
                        e.path().display(),
                        &text[text.len().saturating_sub(1500)..]
                    )
                })
                .collect();
            panic!(
                "cluster up failed: {stdout}{}\n{}",
                String::from_utf8_lossy(&out.stderr),
                logs.join("\n")
            );
        }
        // The interface: the balancer's base URL is the last line of stdout.
        cluster.base = stdout.lines().last().unwrap_or_default().trim().to_owned();
        assert!(cluster.base.starts_with("http://127.0.0.1:"), "{stdout}");
        cluster
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(script());
        cmd.args(args)
            .env("AGENTGATE_CLUSTER_DIR", self.dir.path().join("state"))
            .env("AGENTGATE_BIN", env!("CARGO_BIN_EXE_agentgate"))
            .env("AGENTGATE_CONFIG", &self.config)
            .env_remove("AGENTGATE_CURSOR_KEYS");
        cmd
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.command(args).output().unwrap();
        assert!(
            out.status.success(),
            "scripts/cluster {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    async fn run_async(&self, args: &[&str]) -> String {
        let mut cmd = tokio::process::Command::from(self.command(args));
        let out = cmd.output().await.unwrap();
        assert!(
            out.status.success(),
            "scripts/cluster {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn status(&self) -> Vec<Replica> {
        self.run(&["status"])
            .lines()
            .map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                assert_eq!((f.len(), f[0]), (4, "replica"), "status line {line:?}");
                Replica {
                    index: f[1].parse().unwrap(),
                    pid: f[2].parse().ok(),
                    url: f[3].to_owned(),
                }
            })
            .collect()
    }

    /// Roll every replica, one at a time, onto the keyset `keys`.
    pub async fn roll(&self, keys: &str) {
        self.run_async(&["keys", keys]).await;
        for r in self.status() {
            self.run_async(&["restart", &r.index.to_string()]).await;
        }
    }

    fn log_path(&self, index: u32) -> PathBuf {
        self.dir
            .path()
            .join("state")
            .join(format!("replica-{index}.log"))
    }

    pub fn log(&self, index: u32) -> String {
        std::fs::read_to_string(self.log_path(index)).unwrap_or_default()
    }

    /// Waits until `found` sees what it looks for in the replicas' logs, and
    /// returns it; `None` after 30 s. A replica buffers its log lines and
    /// writes them out every 20 ms (longer on a busy machine), so a line
    /// about something that has just happened may not be in the file yet.
    pub async fn in_logs<T>(&self, found: impl Fn(&Self) -> Option<T>) -> Option<T> {
        for _ in 0..3_000 {
            if let Some(t) = found(self) {
                return Some(t);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }

    /// The replica whose log says it started the job `request_id`, other than `except`.
    pub fn job_runner(&self, request_id: &str, except: Option<u32>) -> Option<u32> {
        let replicas = (1..).take_while(|i| self.log_path(*i).exists()).count() as u32;
        (1..=replicas).find(|&i| {
            Some(i) != except
                && self
                    .log(i)
                    .lines()
                    .any(|l| l.contains("job started") && l.contains(request_id))
        })
    }

    /// The end of nginx's error log, for failure messages.
    pub fn nginx_errors(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("state/nginx/error.log"))
            .unwrap_or_default();
        text[text.len().saturating_sub(3000)..].to_owned()
    }

    /// nginx's access log: `METHOD URI STATUS upstream=ADDR[, ADDR…]` per request.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("state/nginx/access.log")).unwrap_or_default()
    }

    pub fn chat_url(&self) -> String {
        format!("{}/api/v1/projects/demo/ai/agents/chat", self.base)
    }

    pub fn quant(&self, path: &str) -> String {
        format!("{}/api/v3/organizations/{path}", self.base)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.command(&["down"]).output();
    }
}

/// The gateway config the replicas load: the offline echo agent, and `gate`,
/// an OpenAI agent on `upstream` (when given). Short leases and grace so
/// that jobs move and replicas stop quickly.
pub fn cluster_config(upstream: Option<&str>) -> String {
    let mut toml = String::from(
        r#"
[server]
listen = "127.0.0.1:0"
default_project = "demo"
shutdown_grace_seconds = 5
workers = 1

[log]
format = "json"
level = "info"

[jobs]
lease_seconds = 2

[[providers]]
name = "offline"
kind = "scripted"

[[agents]]
id = "echo"
provider = "offline"
model = "scripted-1"
"#,
    );
    if let Some(base) = upstream {
        toml.push_str(&format!(
            r#"
[[providers]]
name = "gate"
kind = "openai"
base_url = "{base}"
max_retries = 0

[[agents]]
id = "gate"
provider = "gate"
model = "gpt-test-model"
"#
        ));
    }
    toml
}

fn replica_of(res: &reqwest::Response) -> String {
    res.headers()
        .get("x-agentgate-replica")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?")
        .to_owned()
}

/// One Cognite turn through the balancer: (status, replica, body).
async fn turn(
    client: &reqwest::Client,
    cluster_chat: &str,
    text: &str,
    cursor: Option<&str>,
) -> Result<(u16, String, Value), String> {
    let mut body = json!({"agentId": "echo", "messages": [text_message(text)]});
    if let Some(c) = cursor {
        body["cursor"] = json!(c);
    }
    let res = client
        .post(cluster_chat)
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = res.status().as_u16();
    let replica = replica_of(&res);
    let text = res.text().await.map_err(|e| format!("body: {e}"))?;
    let body = serde_json::from_str(&text)
        .map_err(|_| format!("{status} from {replica}, not JSON: {text:.300}"))?;
    Ok((status, replica, body))
}

#[tokio::test]
async fn conversations_sessions_and_async_jobs_cross_replicas_through_nginx() {
    let cluster = Cluster::up(3, &cluster_config(None), &key_line("k1", 1));
    let replicas = cluster.status();
    assert_eq!(replicas.len(), 3);
    assert!(replicas.iter().all(|r| r.pid.is_some()), "{replicas:?}");
    let client = reqwest::Client::new();
    for r in &replicas {
        // Each status line's URL is that replica itself, named in its answers.
        let res = client
            .get(format!("{}/readyz", r.url))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(replica_of(&res), format!("replica-{}", r.index));
    }
    // The image's HEALTHCHECK: `agentgate probe` exits 0 on a 200, 1 otherwise.
    let probe = |url: String| {
        Command::new(env!("CARGO_BIN_EXE_agentgate"))
            .args(["probe", "--url", &url, "--timeout-seconds", "5"])
            .output()
            .unwrap()
    };
    assert!(probe(format!("{}/healthz", cluster.base)).status.success());
    let missing = probe(format!("{}/no-such-page", cluster.base));
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("404"));

    // A 10-turn conversation: round robin sends consecutive turns to
    // different replicas, and each continues from the cursor alone.
    let mut cursor: Option<String> = None;
    let mut seen = Vec::new();
    for k in 1..=10 {
        let (status, replica, body) = turn(
            &client,
            &cluster.chat_url(),
            &format!("turn {k}"),
            cursor.as_deref(),
        )
        .await
        .unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            text_of(&body),
            format!("You said: turn {k} [{} messages seen]", 2 * k - 1)
        );
        cursor = Some(cursor_of(&body));
        seen.push(replica);
    }
    let distinct: std::collections::BTreeSet<&String> = seen.iter().collect();
    assert_eq!(
        distinct.len(),
        3,
        "turns landed on {seen:?}: every replica should have served some"
    );
    for w in seen.windows(2) {
        assert_ne!(w[0], w[1], "consecutive turns on one replica: {seen:?}");
    }

    // A Quant session on Redis, continued on whichever replica nginx picks.
    let mut sid = Value::Null;
    let mut quant_replicas = std::collections::BTreeSet::new();
    for k in 1..=4 {
        let mut body = json!({"message": format!("q{k}"), "userId": "u1"});
        if !sid.is_null() {
            body["sessionId"] = sid.clone();
        }
        let res = client
            .post(cluster.quant("acme/ai/agents/echo/chat"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        quant_replicas.insert(replica_of(&res));
        let v: Value = res.json().await.unwrap();
        assert_eq!(
            v["response"]["text"],
            format!("You said: q{k} [{} messages seen]", 2 * k - 1)
        );
        sid = v["sessionId"].clone();
    }
    assert!(quant_replicas.len() >= 2, "{quant_replicas:?}");

    // An async execution accepted by one replica, polled through the balancer
    // (so on the others), run by whichever worker takes it.
    let res = client
        .post(cluster.quant("acme/ai/agents/echo/chat"))
        .json(&json!({"message": "later", "userId": "u1", "sessionId": sid, "async": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let accepted_by = replica_of(&res);
    let accepted: Value = res.json().await.unwrap();
    let poll = format!("{}{}", cluster.base, accepted["pollUrl"].as_str().unwrap());
    let mut polled_on = std::collections::BTreeSet::new();
    let mut done = Value::Null;
    for _ in 0..1_500 {
        let res = client.get(&poll).send().await.unwrap();
        assert_eq!(res.status(), 200);
        polled_on.insert(replica_of(&res));
        done = res.json().await.unwrap();
        if done["status"] == "complete" || done["status"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(done["status"], "complete", "{done}");
    assert_eq!(
        done["result"]["response"]["content"],
        "You said: later [9 messages seen]"
    );
    // The final poll went to a replica other than the one that accepted it
    // unless all polls hit one replica, which round robin rules out.
    polled_on.insert(accepted_by);
    assert!(polled_on.len() >= 2, "{polled_on:?}");
    // And some replica's worker ran it.
    let request_id = accepted["requestId"].as_str().unwrap();
    assert!(
        cluster
            .in_logs(|c| c.job_runner(request_id, None))
            .await
            .is_some(),
        "no replica logged running {request_id}"
    );
}

/// Conversations run continuously through the balancer until `stop`; every
/// turn must succeed and continue its conversation.
struct Load {
    stop: Arc<AtomicBool>,
    /// While set, conversations take no new turn.
    paused: Arc<AtomicBool>,
    in_flight: Arc<AtomicU64>,
    turns: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<Option<String>>>,
}

impl Load {
    fn start(chat_url: &str, conversations: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(false));
        let in_flight = Arc::new(AtomicU64::new(0));
        let turns = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..conversations)
            .map(|c| {
                let (stop, turns, failures) = (stop.clone(), turns.clone(), failures.clone());
                let (paused, in_flight) = (paused.clone(), in_flight.clone());
                let url = chat_url.to_owned();
                tokio::spawn(async move {
                    let client = reqwest::Client::new();
                    let mut cursor: Option<String> = None;
                    let mut k = 0u64;
                    // Bounded: at most this many turns per conversation.
                    let mut taken = 0u32;
                    while !stop.load(Ordering::Relaxed) && taken < 20_000 {
                        if paused.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            continue;
                        }
                        in_flight.fetch_add(1, Ordering::SeqCst);
                        taken += 1;
                        k += 1;
                        // Long conversations are cut to keep cursors small.
                        if k > 30 {
                            k = 1;
                            cursor = None;
                        }
                        let text = format!("c{c} t{k}");
                        let answer = turn(&client, &url, &text, cursor.as_deref()).await;
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        match answer {
                            Ok((200, _, body))
                                if text_of(&body)
                                    == format!(
                                        "You said: {text} [{} messages seen]",
                                        2 * k - 1
                                    ) =>
                            {
                                cursor = Some(cursor_of(&body));
                                turns.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok((status, replica, body)) => {
                                failures.lock().unwrap().push(format!(
                                    "conversation {c} turn {k} on {replica}: {status} {body}"
                                ));
                                k -= 1;
                            }
                            Err(e) => {
                                failures
                                    .lock()
                                    .unwrap()
                                    .push(format!("conversation {c} turn {k}: {e}"));
                                k -= 1;
                            }
                        }
                    }
                    cursor
                })
            })
            .collect();
        Self {
            stop,
            paused,
            in_flight,
            turns,
            failures,
            tasks,
        }
    }

    /// Hold new turns and wait until none is in flight (bounded).
    async fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
        for _ in 0..3_000 {
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("turns still in flight after the pause");
    }

    fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
    }

    /// Wait until `more` further turns completed (bounded).
    async fn advance(&self, more: u64) {
        let target = self.turns.load(Ordering::Relaxed) + more;
        for _ in 0..6_000 {
            if self.turns.load(Ordering::Relaxed) >= target {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "the load made no progress: {:?}",
            self.failures.lock().unwrap()
        );
    }

    /// Stop, and return the failures and each conversation's last cursor.
    async fn finish(self) -> (Vec<String>, Vec<Option<String>>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut cursors = Vec::new();
        for t in self.tasks {
            cursors.push(t.await.unwrap());
        }
        let failures = self.failures.lock().unwrap().clone();
        (failures, cursors)
    }
}

#[tokio::test]
async fn a_key_rotation_rolled_through_every_replica_under_load_fails_no_turn() {
    let k1 = key_line("k1", 1);
    let k2 = key_line("k2", 2);
    let cluster = Cluster::up(3, &cluster_config(None), &k1);
    let load = Load::start(&cluster.chat_url(), 4);
    load.advance(20).await;

    // 1. Add k2 behind the active k1, on every replica.
    cluster.roll(&format!("{k1},{k2}")).await;
    load.advance(20).await;
    // 2. Promote k2: replicas now seal with it; any replica can open both.
    cluster.roll(&format!("{k2},{k1}")).await;
    // 3. Drain: every conversation re-seals under k2 on its next turn. Wait
    //    for enough turns that each of the four has taken several.
    load.advance(60).await;
    // 4. Remove k1.
    cluster.roll(&k2).await;
    load.advance(20).await;

    let (failures, cursors) = load.finish().await;
    assert!(
        failures.is_empty(),
        "failed turns: {failures:#?}\nnginx: {}",
        cluster.nginx_errors()
    );
    for c in cursors {
        let c = c.expect("every conversation has a cursor");
        assert!(
            c.starts_with("cv1.k2."),
            "sealed under the new key: {c:.12}"
        );
    }
    // The replicas really were restarted (new pids each roll).
    for i in 1..=3 {
        let started = cluster
            .in_logs(|c| (c.log(i).matches("listening").count() >= 4).then_some(()))
            .await;
        assert!(started.is_some(), "replica {i} started four times");
    }
}

/// An OpenAI upstream that holds every answer until the gate opens.
struct Gate {
    open: tokio::sync::watch::Sender<bool>,
    base: String,
    calls: Arc<AtomicU64>,
}

async fn gate_upstream() -> Gate {
    let (open, rx) = tokio::sync::watch::channel(false);
    let calls = Arc::new(AtomicU64::new(0));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let data = web::Data::new((rx, calls.clone()));
    let server = HttpServer::new(move || {
        App::new().app_data(data.clone()).route(
            "/v1/chat/completions",
            web::post().to(
                |d: web::Data<(tokio::sync::watch::Receiver<bool>, Arc<AtomicU64>)>| async move {
                    d.1.fetch_add(1, Ordering::SeqCst);
                    let mut rx = d.0.clone();
                    let _ = rx.wait_for(|open| *open).await;
                    HttpResponse::Ok().json(completion("through the gate"))
                },
            ),
        )
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    Gate {
        open,
        base: format!("http://127.0.0.1:{port}/v1"),
        calls,
    }
}

#[tokio::test]
async fn a_replica_killed_under_load_fails_no_turn_and_its_async_job_completes_elsewhere() {
    let gate = gate_upstream().await;
    let cluster = Cluster::up(3, &cluster_config(Some(&gate.base)), &key_line("k1", 1));
    let client = reqwest::Client::new();
    let load = Load::start(&cluster.chat_url(), 4);
    load.advance(20).await;

    // An async turn whose model call is held at the gate: its job is running.
    let res = client
        .post(cluster.quant("acme/ai/agents/gate/chat"))
        .json(&json!({"message": "hold on", "userId": "u1", "async": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let accepted: Value = res.json().await.unwrap();
    let request_id = accepted["requestId"].as_str().unwrap().to_owned();
    let holder = cluster
        .in_logs(|c| c.job_runner(&request_id, None))
        .await
        .expect("no replica started the job");
    for _ in 0..3_000 {
        if gate.calls.load(Ordering::SeqCst) >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(gate.calls.load(Ordering::SeqCst), 1);

    // Three chat turns held at the gate, one on each replica: with the load
    // paused, nginx's round robin sends three requests in a row to three
    // different replicas.
    load.pause().await;
    let mut held = Vec::new();
    for n in 0..3u64 {
        let (client, url) = (client.clone(), cluster.chat_url());
        held.push(tokio::spawn(async move {
            let body = json!({"agentId": "gate", "messages": [text_message("held")]});
            let res = client.post(&url).json(&body).send().await.unwrap();
            let status = res.status().as_u16();
            (status, res.text().await.unwrap_or_default())
        }));
        // Each is in flight (its model call reached the gate) before the next.
        for _ in 0..3_000 {
            if gate.calls.load(Ordering::SeqCst) >= 2 + n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(gate.calls.load(Ordering::SeqCst), 2 + n);
    }
    load.resume();

    // SIGKILL the replica holding the job, mid-load, with a chat turn of
    // ours in flight on it.
    let victim = cluster
        .status()
        .into_iter()
        .find(|r| r.index == holder)
        .unwrap();
    let pid = victim.pid.expect("the holder is running");
    assert_eq!(kill9(pid), 0, "kill -9 {pid}");
    load.advance(40).await;

    // Its lease lapses and another replica runs the job again; this time
    // the gate lets the answer through.
    gate.open.send_replace(true);
    let poll = format!("{}{}", cluster.base, accepted["pollUrl"].as_str().unwrap());
    let mut done = Value::Null;
    for _ in 0..3_000 {
        let res = client.get(&poll).send().await.unwrap();
        assert_eq!(
            res.status(),
            200,
            "polls never fail while a replica is down"
        );
        done = res.json().await.unwrap();
        if done["status"] == "complete" || done["status"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(done["status"], "complete", "{done}");
    assert_eq!(done["result"]["response"]["content"], "through the gate");
    let runner = cluster
        .in_logs(|c| c.job_runner(&request_id, Some(holder)))
        .await;
    assert!(runner.is_some(), "another replica ran the job");
    assert!(gate.calls.load(Ordering::SeqCst) >= 2);

    // The held turn that was on the dead replica had been sent to it: nginx
    // passed it on to another (non_idempotent), which answered once the gate
    // opened. Every held turn answers.
    for h in held {
        let (status, body) = h.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("through the gate"), "{body}");
    }
    let victim_addr = victim.url.trim_start_matches("http://").to_owned();
    let retried = format!("upstream={victim_addr}, ");
    let log = cluster.access_log();
    assert!(
        log.lines().any(
            |l| l.starts_with("POST /api/v1/projects/demo/ai/agents/chat 200")
                && l.contains(&retried)
        ),
        "no chat turn was retried from {victim_addr}:\n{log:.4000}"
    );

    let (failures, _) = load.finish().await;
    assert!(
        failures.is_empty(),
        "failed turns: {failures:#?}\nnginx: {}",
        cluster.nginx_errors()
    );
    let status = cluster.status();
    assert_eq!(
        status.iter().filter(|r| r.pid.is_none()).count(),
        1,
        "{status:?}"
    );
}

/// `kill -9 pid`, with kill(1).
fn kill9(pid: i32) -> i32 {
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .map(|s| s.code().unwrap_or(-1))
        .unwrap_or(-1)
}
