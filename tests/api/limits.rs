//! Rate limits (`[rate_limits]`): per tenant and per key, requests and model
//! tokens per minute, concurrent streams; shared by replicas on one Redis;
//! failing open when Redis is down.

use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::hostile::{RawUpstream, Script};
use crate::redis_server::RedisServer;

fn limited(toml: &str) -> Options {
    Options {
        extra_toml: format!("\n[rate_limits]\n{toml}\n"),
        ..Default::default()
    }
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).map(|v| v.to_str().unwrap().to_owned())
}

/// A Cognite turn of `echo` in `project`, with an optional bearer key.
async fn turn(app: &TestApp, project: &str, key: Option<&str>) -> reqwest::Response {
    let mut req = app.client.post(app.chat_url(project)).json(&json!({
        "agentExternalId": "echo",
        "messages": [text_message("hello there")]
    }));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    req.send().await.unwrap()
}

/// Send turns until one is refused (at most `max`); returns the refusal.
async fn until_refused(app: &TestApp, project: &str, max: usize) -> reqwest::Response {
    for _ in 0..max {
        let res = turn(app, project, None).await;
        if res.status() == 429 {
            return res;
        }
        assert_eq!(res.status(), 200);
        // The tokens of a turn are charged in the background.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no turn was refused");
}

#[tokio::test]
async fn a_tenant_over_its_requests_per_minute_gets_429_with_retry_after_and_headers() {
    let app = spawn_app_with(limited("requests_per_minute = 3")).await;
    for left in ["2", "1", "0"] {
        let res = turn(&app, "acme", None).await;
        assert_eq!(res.status(), 200);
        let h = res.headers();
        assert_eq!(
            header(h, "x-ratelimit-limit-requests").as_deref(),
            Some("3")
        );
        assert_eq!(
            header(h, "x-ratelimit-remaining-requests").as_deref(),
            Some(left)
        );
        assert!(header(h, "x-ratelimit-reset-requests").is_some());
        assert_eq!(header(h, "x-ratelimit-limit-tokens"), None);
    }
    let res = turn(&app, "acme", None).await;
    assert_eq!(res.status(), 429);
    let retry: u64 = header(res.headers(), "retry-after")
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry), "retry after {retry}");
    assert_eq!(
        header(res.headers(), "x-ratelimit-remaining-requests").as_deref(),
        Some("0"),
        "a refusal reports the empty bucket"
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], 429);
    assert_eq!(body["error"]["type"], "rate_limited");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("requests per minute"),
        "{body}"
    );

    // Another tenant has its own bucket.
    assert_eq!(turn(&app, "other", None).await.status(), 200);
    // The Quant API shares the tenant's bucket and answers in its own format.
    let (status, body) = app
        .quant_post("acme/ai/agents/echo/chat", &json!({"message": "hi"}))
        .await;
    assert_eq!(status, 429);
    assert_eq!(body["error"], "rate_limited", "{body}");
    let (status, _) = app
        .quant_post("other/ai/agents/echo/chat", &json!({"message": "hi"}))
        .await;
    assert_eq!(status, 200);

    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("agentgate_rate_limit_rejections_total")
                && l.contains("scope=\"tenant\"")
                && l.contains("limit=\"requests\"")),
        "{metrics}"
    );
}

#[tokio::test]
async fn each_key_has_its_own_limit_and_a_key_may_set_its_own() {
    let toml = format!(
        r#"
[auth]
mode = "api_keys"

[[auth.api_keys]]
id = "small"
sha256 = "{small}"
subject = "svc-small"
tenants = ["*"]
requests_per_minute = 1

[[auth.api_keys]]
id = "default"
sha256 = "{default}"
subject = "svc-default"
tenants = ["*"]

[rate_limits]
key_requests_per_minute = 2
requests_per_minute = 100
"#,
        small = sha256_hex("key-small"),
        default = sha256_hex("key-default"),
    );
    let app = spawn_app_with(Options {
        extra_toml: toml,
        ..Default::default()
    })
    .await;
    let res = turn(&app, "acme", Some("key-small")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        header(res.headers(), "x-ratelimit-limit-requests").as_deref(),
        Some("1"),
        "the tighter of the key's and the tenant's limits is reported"
    );
    assert_eq!(turn(&app, "acme", Some("key-small")).await.status(), 429);
    // The same key is refused in every tenant: the limit is the key's.
    let res = turn(&app, "elsewhere", Some("key-small")).await;
    assert_eq!(res.status(), 429);
    let body: Value = res.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("this API key"),
        "{body}"
    );
    for _ in 0..2 {
        assert_eq!(turn(&app, "acme", Some("key-default")).await.status(), 200);
    }
    assert_eq!(turn(&app, "acme", Some("key-default")).await.status(), 429);
}

#[tokio::test]
async fn a_turn_that_used_the_tenants_tokens_holds_off_the_next_one() {
    // The scripted model counts words: one turn uses 14 tokens.
    let app = spawn_app_with(limited("tokens_per_minute = 10")).await;
    let res = turn(&app, "acme", None).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        header(res.headers(), "x-ratelimit-limit-tokens").as_deref(),
        Some("10")
    );
    assert_eq!(
        header(res.headers(), "x-ratelimit-remaining-tokens").as_deref(),
        Some("10")
    );
    let refused = until_refused(&app, "acme", 50).await;
    let retry: u64 = header(refused.headers(), "retry-after")
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("model tokens per minute"),
        "{body}"
    );
    // Reads are not turns: they spend no tokens and need none.
    let (status, _) = app
        .quant_send(reqwest::Method::GET, "acme/ai/sessions", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(turn(&app, "other", None).await.status(), 200);
}

/// An upstream that streams one token every 50 ms until the gateway hangs up.
async fn slow_stream() -> RawUpstream {
    let dot = json!({"choices": [{"delta": {"content": "."}}]});
    RawUpstream::start(Script::Trickle {
        piece: format!("data: {dot}\n\n").into_bytes(),
        every_ms: 50,
        count: 1200,
    })
    .await
}

/// Open a streamed Quant turn of the slow `gpt` agent; returns the response
/// once its headers (and first event) arrived.
async fn open_stream(app: &TestApp, org: &str) -> reqwest::Response {
    app.client
        .post(app.quant(&format!("{org}/ai/agents/gpt/chat")))
        .json(&json!({"message": "go slowly", "stream": true}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_stream_that_fails_before_its_first_event_gives_its_slot_back() {
    let up = RawUpstream::start(Script::Bytes(crate::hostile::http(
        "500 Internal Server Error",
        &[],
        "",
    )))
    .await;
    let app = spawn_app_with(Options {
        upstream: Some(up.base.clone()),
        extra_toml: "\n[rate_limits]\nconcurrent_streams = 1\n".into(),
        ..Default::default()
    })
    .await;
    // Each refused turn is a 502 (the upstream's failure), never a 429 for a
    // slot the previous failed stream kept.
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let mut status = 429;
        for _ in 0..100 {
            status = open_stream(&app, "acme").await.status().as_u16();
            if status != 429 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        statuses.push(status);
    }
    assert_eq!(statuses, [502, 502, 502]);
}

#[tokio::test]
async fn concurrent_streams_are_limited_per_tenant_on_one_replica_with_the_memory_store() {
    // Two apps on the memory store are two replicas that share nothing, so
    // run both requests through one: the second app's slot is its own.
    let up = slow_stream().await;
    let app = spawn_app_with(Options {
        upstream: Some(up.base.clone()),
        extra_toml: "\n[rate_limits]\nconcurrent_streams = 1\n".into(),
        ..Default::default()
    })
    .await;
    let first = open_stream(&app, "acme").await;
    assert_eq!(first.status(), 200);
    assert_eq!(open_stream(&app, "acme").await.status(), 429);
    drop(first);
    let mut reopened = false;
    for _ in 0..100 {
        if open_stream(&app, "acme").await.status() == 200 {
            reopened = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reopened, "the slot was given back");
}

fn shared(redis: &RedisServer, prefix: &str, limits: &str) -> Options {
    Options {
        store: Backend::Redis {
            url: redis.url(),
            shared_prefix: Some(prefix.into()),
        },
        extra_toml: format!("\n[rate_limits]\n{limits}\n"),
        ..Default::default()
    }
}

#[tokio::test]
async fn two_replicas_on_one_redis_enforce_one_limit_together() {
    let redis = RedisServer::start().await;
    let a = spawn_app_with(shared(&redis, "limits", "requests_per_minute = 4")).await;
    let b = spawn_app_with(shared(&redis, "limits", "requests_per_minute = 4")).await;
    let mut remaining = Vec::new();
    for app in [&a, &b, &a, &b] {
        let res = turn(app, "acme", None).await;
        assert_eq!(res.status(), 200);
        remaining.push(header(res.headers(), "x-ratelimit-remaining-requests").unwrap());
    }
    assert_eq!(remaining, ["3", "2", "1", "0"]);
    for app in [&a, &b] {
        let res = turn(app, "acme", None).await;
        assert_eq!(res.status(), 429);
        let retry: u64 = header(res.headers(), "retry-after")
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=15).contains(&retry), "retry after {retry}");
    }
    assert_eq!(turn(&b, "other", None).await.status(), 200);
}

#[tokio::test]
async fn tokens_charged_on_one_replica_count_on_the_other() {
    let redis = RedisServer::start().await;
    // One turn of the scripted model uses 14 tokens: more than a minute's worth.
    let a = spawn_app_with(shared(&redis, "tokens", "tokens_per_minute = 10")).await;
    let b = spawn_app_with(shared(&redis, "tokens", "tokens_per_minute = 10")).await;
    assert_eq!(turn(&a, "acme", None).await.status(), 200);
    // The charge is written in the background: wait until Redis holds it
    // (a check that finds room writes nothing, so the key is the charge).
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut charged = false;
    for _ in 0..200 {
        let exists: bool = redis::cmd("EXISTS")
            .arg("tokens:rl:t:t:acme")
            .query_async(&mut conn)
            .await
            .unwrap();
        if exists {
            charged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(charged, "replica a charged the tenant's tokens");
    // Replica b has run no turn itself: its first is refused by a's charge.
    let refused = turn(&b, "acme", None).await;
    assert_eq!(refused.status(), 429);
}

#[tokio::test]
async fn stream_slots_are_shared_by_replicas_on_one_redis() {
    let redis = RedisServer::start().await;
    let up = slow_stream().await;
    let opts = || Options {
        upstream: Some(up.base.clone()),
        ..shared(&redis, "streams", "concurrent_streams = 1")
    };
    let a = spawn_app_with(opts()).await;
    let b = spawn_app_with(opts()).await;
    let first = open_stream(&a, "acme").await;
    assert_eq!(first.status(), 200);
    let second = open_stream(&b, "acme").await;
    assert_eq!(second.status(), 429);
    let body: Value = second.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("streams open at once"),
        "{body}"
    );
    // A turn that is not streamed needs no stream slot; another tenant has its own.
    let (status, _) = b
        .quant_post("acme/ai/agents/echo/chat", &json!({"message": "hi"}))
        .await;
    assert_eq!(status, 200);
    let other = open_stream(&b, "other").await;
    assert_eq!(other.status(), 200);
    drop(other);
    // Ending the first stream (on the other replica) gives its slot back.
    drop(first);
    let mut reopened = false;
    for _ in 0..100 {
        if open_stream(&b, "acme").await.status() == 200 {
            reopened = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reopened, "the slot was given back");
}

#[tokio::test]
async fn a_redis_outage_lets_requests_through_with_a_metric() {
    let mut redis = RedisServer::start().await;
    let app = spawn_app_with(shared(
        &redis,
        "open",
        "requests_per_minute = 1\ntokens_per_minute = 5\nconcurrent_streams = 1",
    ))
    .await;
    assert_eq!(turn(&app, "acme", None).await.status(), 200);
    assert_eq!(turn(&app, "acme", None).await.status(), 429);
    redis.kill();
    for _ in 0..3 {
        let res = turn(&app, "acme", None).await;
        assert_eq!(res.status(), 200, "limits fail open while Redis is down");
        assert_eq!(header(res.headers(), "x-ratelimit-limit-requests"), None);
    }
    let streamed = app
        .client
        .post(app.chat_url("acme"))
        .json(&json!({"agentExternalId": "echo", "messages": [text_message("hi")], "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), 200);
    assert!(streamed.text().await.unwrap().contains("event: done"));
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let errors: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("agentgate_rate_limit_store_errors_total "))
        .expect("the store error counter")
        .trim()
        .parse()
        .unwrap();
    assert!(errors >= 3.0, "{errors}");
}

/// The Redis script and the memory store's limiter answer the same sequence
/// of checks alike (within the few milliseconds between calls).
#[tokio::test]
async fn the_redis_script_and_the_local_limiter_count_alike() {
    use agentgate::store::{Store, Tokens};
    let redis = RedisServer::start().await;
    let shared = agentgate::store::redis::RedisStore::new(&redis.url(), "alike").unwrap();
    let local = agentgate::store::memory::MemoryStore::new(100);
    let mut answers = Vec::new();
    for store in [&shared as &dyn Store, &local] {
        let mut seen = Vec::new();
        let mut note = |b: agentgate::store::Bucket| {
            seen.push((
                b.allowed,
                b.remaining,
                b.retry_after.as_secs_f64().round() as u64,
            ));
        };
        note(store.meter_tokens("t", 600, Tokens::Peek).await.unwrap());
        note(
            store
                .meter_tokens("t", 600, Tokens::Charge(300))
                .await
                .unwrap(),
        );
        note(store.meter_tokens("t", 600, Tokens::Peek).await.unwrap());
        // 900 more: 1,200 in all, two minutes' worth: one minute of debt.
        note(
            store
                .meter_tokens("t", 600, Tokens::Charge(900))
                .await
                .unwrap(),
        );
        note(store.meter_tokens("t", 600, Tokens::Peek).await.unwrap());
        for _ in 0..3 {
            note(store.count_request("r", 2).await.unwrap());
        }
        answers.push(seen);
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(
        answers[0],
        [
            (true, 600, 0),
            (true, 300, 0),
            (true, 300, 0),
            (false, 0, 60),
            (false, 0, 60),
            (true, 1, 0),
            (true, 0, 0),
            (false, 0, 30),
        ]
    );
}
