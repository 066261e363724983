//! Several replicas on one Redis, and Redis outages.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::redis_server::RedisServer;

fn shared(redis: &RedisServer, prefix: &str) -> Options {
    Options {
        store: Backend::Redis {
            url: redis.url(),
            shared_prefix: Some(prefix.into()),
        },
        ..Default::default()
    }
}

#[tokio::test]
async fn two_replicas_share_sessions_and_async_executions() {
    let redis = RedisServer::start().await;
    let a = spawn_app_with(shared(&redis, "shared")).await;
    let b = spawn_app_with(shared(&redis, "shared")).await;

    let (status, one) = a
        .quant_post(
            "acme/ai/agents/echo/chat",
            &json!({"message": "on a", "userId": "u1"}),
        )
        .await;
    assert_eq!(status, 200, "{one}");
    let sid = one["sessionId"].as_str().unwrap().to_owned();
    let (status, two) = b
        .quant_post(
            "acme/ai/agents/echo/chat",
            &json!({"message": "on b", "userId": "u1", "sessionId": sid}),
        )
        .await;
    assert_eq!(status, 200, "{two}");
    assert_eq!(two["response"]["text"], "You said: on b [3 messages seen]");
    let (_, listed) = b
        .quant_send(Method::GET, "acme/ai/sessions?userId=u1", None)
        .await;
    assert_eq!(listed.as_array().unwrap().len(), 1);

    let (status, accepted) = a
        .quant_post(
            "acme/ai/agents/echo/chat",
            &json!({"message": "async", "userId": "u1", "sessionId": sid, "async": true}),
        )
        .await;
    assert_eq!(status, 202);
    let poll = accepted["pollUrl"].as_str().unwrap();
    let done = wait_done(&b, poll, Duration::from_secs(5)).await;
    assert_eq!(done["status"], "complete", "{done}");
    assert_eq!(
        done["result"]["response"]["content"],
        "You said: async [5 messages seen]"
    );
}

#[tokio::test]
async fn a_redis_outage_fails_only_the_store_endpoints_and_recovers_without_a_restart() {
    let redis = RedisServer::start().await;
    let app = spawn_app_with(shared(&redis, "outage")).await;
    let (status, _) = app
        .quant_post("acme/ai/agents/echo/chat", &json!({"message": "before"}))
        .await;
    assert_eq!(status, 200);

    let mut redis = redis;
    redis.kill();
    let res = app
        .client
        .post(app.quant("acme/ai/agents/echo/chat"))
        .json(&json!({"message": "during"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers().get("retry-after").unwrap(), "1");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "store_unavailable");
    let (status, body) = app.quant_send(Method::GET, "acme/ai/sessions", None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("store_unavailable"))
    );

    // Cursor chat needs no store and keeps working; readiness stays up and reports the store.
    let (status, _) = app.say("p", "echo", "cursor chat still works", None).await;
    assert_eq!(status, 200);
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<Value>().await.unwrap()["store"],
        json!({"kind": "redis", "up": false})
    );

    let _redis = redis.restart().await;
    let mut recovered = false;
    for _ in 0..60 {
        let (status, _) = app
            .quant_post("acme/ai/agents/echo/chat", &json!({"message": "after"}))
            .await;
        if status == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "Quant chat works again once Redis is back");
    let ready: Value = app.get_json("/readyz").await;
    assert_eq!(ready["store"]["up"], true);
}

/// Post an async turn to `a` and wait until a worker is running it.
async fn start_job_on(a: &TestApp) -> String {
    let (status, accepted) = a
        .quant_post(
            "acme/ai/agents/gpt/chat",
            &json!({"message": "long job", "async": true}),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let poll = accepted["pollUrl"].as_str().unwrap().to_owned();
    for _ in 0..100 {
        let v: Value = a.get_json(&poll).await;
        if v["status"] == "running" {
            return poll;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the job never started");
}

/// A mock upstream whose first call hangs (the dying replica's) and later calls answer.
async fn hanging_then_quick() -> wiremock::MockServer {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(completion("from the dead replica"))
                .set_delay(Duration::from_secs(30)),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("from the survivor")))
        .with_priority(2)
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn a_job_whose_replica_dies_mid_turn_completes_once_on_another_replica() {
    let redis = RedisServer::start().await;
    let upstream = hanging_then_quick().await;
    let opts = || Options {
        upstream: Some(format!("{}/v1", upstream.uri())),
        extra_toml: "[jobs]\nlease_seconds = 1\n".into(),
        ..shared(&redis, "crash")
    };
    let a = spawn_app_with(opts()).await;
    let poll = start_job_on(&a).await;
    let b = spawn_app_with(opts()).await;
    a.kill().await;

    let done = wait_done(&b, &poll, Duration::from_secs(15)).await;
    assert_eq!(done["status"], "complete", "{done}");
    assert_eq!(done["result"]["response"]["content"], "from the survivor");
    // Run to completion once: the session holds exactly one turn.
    let sid = done["sessionId"].as_str().unwrap();
    let (_, detail) = b
        .quant_send(Method::GET, &format!("acme/ai/sessions/{sid}"), None)
        .await;
    assert_eq!(
        detail["messages"],
        json!([{"role": "user", "content": "long job"}, {"role": "assistant", "content": "from the survivor"}])
    );
    assert_eq!(
        upstream.received_requests().await.unwrap().len(),
        2,
        "one call per attempt"
    );
}

#[tokio::test]
async fn a_job_past_max_attempts_is_failed_not_retried_forever() {
    let redis = RedisServer::start().await;
    let upstream = hanging_then_quick().await;
    let opts = || Options {
        upstream: Some(format!("{}/v1", upstream.uri())),
        extra_toml: "[jobs]\nlease_seconds = 1\nmax_attempts = 1\n".into(),
        ..shared(&redis, "attempts")
    };
    let a = spawn_app_with(opts()).await;
    let poll = start_job_on(&a).await;
    let b = spawn_app_with(opts()).await;
    a.kill().await;
    let done = wait_done(&b, &poll, Duration::from_secs(15)).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(
        done["error"]["ErrorMessage"],
        "the execution was abandoned after 1 attempt(s)"
    );
    assert_eq!(upstream.received_requests().await.unwrap().len(), 1);
}

fn execution(
    id: &str,
    status: agentgate::store::ExecutionStatus,
) -> agentgate::store::ExecutionRecord {
    agentgate::store::ExecutionRecord {
        id: id.into(),
        org: "acme".into(),
        subject: "anonymous".into(),
        agent_id: "echo".into(),
        session_id: "s".into(),
        status,
        created_at: T0,
        updated_at: T0,
        expires_at: T0 + 600,
        result: None,
        error: None,
        fingerprint: None,
    }
}

/// Two attempts of one job racing (the first worker stalled, its lease was
/// reclaimed): statuses only move forward, and a completion is never undone.
#[tokio::test]
async fn execution_statuses_only_move_forward_under_a_racing_reclaim() {
    use agentgate::store::ExecutionStatus::*;
    use agentgate::store::Store;
    let redis = RedisServer::start().await;
    let store = agentgate::store::redis::RedisStore::new(&redis.url(), "fwd").unwrap();
    let memory = agentgate::store::memory::MemoryStore::new(100);
    for store in [&store as &dyn Store, &memory] {
        store
            .put_execution(execution("x", Pending), T0)
            .await
            .unwrap();
        assert!(
            store
                .advance_execution(execution("x", Running), T0)
                .await
                .unwrap()
        );
        // The reclaimed attempt marks it running again: allowed.
        assert!(
            store
                .advance_execution(execution("x", Running), T0)
                .await
                .unwrap()
        );
        let mut done = execution("x", Complete);
        done.result = Some("sealed".into());
        assert!(store.advance_execution(done, T0).await.unwrap());
        // The stalled first attempt wakes up and reports running, then failed.
        assert!(
            !store
                .advance_execution(execution("x", Running), T0)
                .await
                .unwrap()
        );
        assert!(
            !store
                .advance_execution(execution("x", Failed), T0)
                .await
                .unwrap()
        );
        assert!(
            !store
                .advance_execution(execution("x", Pending), T0)
                .await
                .unwrap()
        );
        let rec = store.get_execution("x", T0).await.unwrap().unwrap();
        assert_eq!(
            (rec.status, rec.result.as_deref()),
            (Complete, Some("sealed"))
        );
        // An unknown record is not created by an advance.
        assert!(
            !store
                .advance_execution(execution("y", Running), T0)
                .await
                .unwrap()
        );
        assert!(store.get_execution("y", T0).await.unwrap().is_none());
    }
}

/// A worker whose lease was reclaimed by another cannot renew or ack it: the
/// job stays with its new holder.
#[tokio::test]
async fn only_the_holder_of_a_lease_renews_or_acks_it() {
    use agentgate::store::{Store, StoreError};
    let redis = RedisServer::start().await;
    let store = agentgate::store::redis::RedisStore::new(&redis.url(), "own").unwrap();
    store.enqueue("job".into(), 10).await.unwrap();
    let a = store
        .next_job("worker-a", Duration::from_secs(2))
        .await
        .unwrap()
        .expect("a job");
    store.renew("worker-a", &a).await.unwrap();
    // worker-a stalls; worker-b reclaims the lease (any idle time counts here).
    let b = store
        .reclaim("worker-b", Duration::ZERO)
        .await
        .unwrap()
        .expect("reclaimed");
    assert_eq!((b.id.as_str(), b.deliveries), (a.id.as_str(), 2));
    assert_eq!(store.renew("worker-a", &a).await, Err(StoreError::Conflict));
    assert_eq!(store.ack("worker-a", &a).await, Err(StoreError::Conflict));
    store.renew("worker-b", &b).await.unwrap();
    store.ack("worker-b", &b).await.unwrap();
    assert!(
        store
            .reclaim("worker-c", Duration::ZERO)
            .await
            .unwrap()
            .is_none(),
        "acked by its holder, the job is gone"
    );
}

/// A Redis that accepts connections and never answers: concurrent store
/// calls share one bounded connect attempt instead of queueing behind one
/// attempt each, and all of them answer 503.
#[tokio::test]
async fn a_silent_redis_costs_one_connect_attempt_not_one_per_waiting_call() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("redis://{}", listener.local_addr().unwrap());
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(socket); // never read, never answered
        }
    });
    let app = spawn_app_with(Options {
        store: Backend::Redis {
            url,
            shared_prefix: None,
        },
        ..Default::default()
    })
    .await;
    let calls = (0..6).map(|_| app.quant_send(Method::GET, "acme/ai/sessions", None));
    for (status, body) in futures::future::join_all(calls).await {
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"], "store_unavailable");
    }
    let attempts = accepted.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&attempts),
        "{attempts} connections for 6 concurrent calls"
    );
}

/// Session metadata is kept apart from the sealed state, so that listing
/// never reads states; records written before the split still load.
#[tokio::test]
async fn sessions_keep_their_sealed_state_apart_from_their_metadata() {
    let redis = RedisServer::start().await;
    let app = spawn_app_with(shared(&redis, "split")).await;
    let (status, one) = app
        .quant_post(
            "acme/ai/agents/echo/chat",
            &json!({"message": "hello", "userId": "u1"}),
        )
        .await;
    assert_eq!(status, 200, "{one}");
    let sid = one["sessionId"].as_str().unwrap().to_owned();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("split:s:{sid}");
    let (d, st): (String, String) = redis::cmd("HMGET")
        .arg(&key)
        .arg("d")
        .arg("st")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(st.starts_with("cv1."), "the state is its own field");
    assert!(!d.contains("cv1."), "the metadata holds no state: {d}");

    // A record of the earlier layout (state inside `d`) still loads.
    let mut legacy: Value = serde_json::from_str(&d).unwrap();
    legacy["sealed"] = json!(st);
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg("d")
        .arg(legacy.to_string())
        .query_async(&mut c)
        .await
        .unwrap();
    let _: () = redis::cmd("HDEL")
        .arg(&key)
        .arg("st")
        .query_async(&mut c)
        .await
        .unwrap();
    let rec = app
        .state
        .store
        .get_session(&sid, T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.sealed.as_deref(), Some(st.as_str()));
    let (status, two) = app
        .quant_post(
            "acme/ai/agents/echo/chat",
            &json!({"message": "again", "userId": "u1", "sessionId": sid}),
        )
        .await;
    assert_eq!(status, 200, "{two}");
    assert_eq!(two["response"]["text"], "You said: again [3 messages seen]");
}

#[tokio::test]
async fn listing_pages_through_the_index_newest_first() {
    let redis = RedisServer::start().await;
    let app = spawn_app_with(shared(&redis, "pages")).await;
    let mut ids = Vec::new();
    for i in 0..230 {
        app.clock.advance(1);
        let (status, v) = app
            .quant_post(
                "acme/ai/sessions",
                &json!({"userId": if i % 2 == 0 { "even" } else { "odd" }}),
            )
            .await;
        assert_eq!(status, 201, "{v}");
        ids.push(v["sessionId"].as_str().unwrap().to_owned());
    }
    let (_, page) = app
        .quant_send(
            Method::GET,
            "acme/ai/sessions?userId=even&limit=100&offset=10",
            None,
        )
        .await;
    let got: Vec<&str> = page
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    let want: Vec<&str> = ids
        .iter()
        .rev()
        .enumerate()
        .filter(|(i, _)| i % 2 == 1) // newest is odd (i = 229)
        .map(|(_, id)| id.as_str())
        .skip(10)
        .take(100)
        .collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn queue_depth_counts_jobs_not_yet_taken() {
    use agentgate::store::Store;
    let redis = RedisServer::start().await;
    let store = agentgate::store::redis::RedisStore::new(&redis.url(), "depth").unwrap();
    let memory = agentgate::store::memory::MemoryStore::new(100);
    for store in [&store as &dyn Store, &memory] {
        assert_eq!(store.queue_depth().await.unwrap(), 0);
        store.enqueue("one".into(), 10).await.unwrap();
        store.enqueue("two".into(), 10).await.unwrap();
        assert_eq!(store.queue_depth().await.unwrap(), 2);
        let taken = store
            .next_job("w", Duration::from_secs(2))
            .await
            .unwrap()
            .expect("a job");
        assert_eq!(
            store.queue_depth().await.unwrap(),
            1,
            "a leased job is not waiting"
        );
        store.ack("w", &taken).await.unwrap();
        assert_eq!(store.queue_depth().await.unwrap(), 1);
    }
}

/// On a Redis Cluster the store spreads its keys over the primaries (each
/// operation touches one slot), and listing reads sessions from all of them.
#[tokio::test]
async fn on_a_redis_cluster_sessions_spread_over_every_primary_and_list_together() {
    let cluster = crate::redis_server::RedisCluster::start().await;
    let app = spawn_app_with(
        Backend::Redis {
            url: cluster.url(),
            shared_prefix: Some("spread".into()),
        }
        .options(),
    )
    .await;
    let mut created = Vec::new();
    for i in 0..24 {
        let (status, v) = app
            .quant_post(
                "acme/ai/sessions",
                &json!({"userId": format!("u{}", i % 2)}),
            )
            .await;
        assert_eq!(status, 201, "{v}");
        created.push(v["sessionId"].as_str().unwrap().to_owned());
    }
    let (status, all) = app
        .quant_send(Method::GET, "acme/ai/sessions?limit=100", None)
        .await;
    assert_eq!(status, 200, "{all}");
    let mut listed: Vec<String> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    listed.sort();
    created.sort();
    assert_eq!(listed, created);
    // Each primary holds some of the keys.
    let mut per_node = Vec::new();
    for port in &cluster.ports {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("spread:s:*")
            .query_async(&mut c)
            .await
            .unwrap();
        per_node.push(keys.len());
    }
    assert!(
        per_node.iter().all(|&n| n > 0),
        "sessions per primary: {per_node:?}"
    );
    assert_eq!(per_node.iter().sum::<usize>(), 24);
}

/// Behind Redis Sentinel, a failover moves the store to the new primary:
/// the session written before it continues after it.
#[tokio::test]
async fn behind_sentinel_a_session_continues_after_the_primary_fails_over() {
    let mut redis = crate::redis_server::RedisSentinel::start().await;
    let app = spawn_app_with(
        Backend::Sentinel {
            url: redis.url(),
            master: "mymaster".into(),
        }
        .options(),
    )
    .await;
    let (status, one) = app
        .quant_post(
            "acme/ai/agents/echo/chat",
            &json!({"message": "before", "userId": "u1"}),
        )
        .await;
    assert_eq!(status, 200, "{one}");
    let sid = one["sessionId"].clone();

    redis.fail_over().await;

    // The first call after the failover may find the old primary gone (503,
    // and the store asks the Sentinel again); the next ones reach the new one.
    let mut refused = 0;
    let two = loop {
        let (status, body) = app
            .quant_post(
                "acme/ai/agents/echo/chat",
                &json!({"message": "after", "userId": "u1", "sessionId": sid}),
            )
            .await;
        if status == 200 {
            break body;
        }
        assert_eq!(
            (status, body["error"].as_str()),
            (503, Some("store_unavailable"))
        );
        refused += 1;
        assert!(refused <= 3, "the store never moved to the new primary");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(two["response"]["text"], "You said: after [3 messages seen]");
}
