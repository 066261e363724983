//! Added time to first event: a few hundred SSE streams, each measured from
//! sending the request to receiving the first content bytes, straight to a
//! mock upstream (the "direct" leg) and through the gateway, in one run on
//! loopback. Usage: `cargo run --release --example ttfe [-- STREAMS]`.
//! Method and latest figures: docs/benchmarks.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{App, HttpResponse, HttpServer, web};
use agentgate::clock::SystemClock;
use agentgate::config::Settings;
use agentgate::cursor::Keyring;
use agentgate::startup::Application;
use futures_util::StreamExt;

/// A mock upstream that streams its first chunk at once, then the rest.
async fn completions() -> HttpResponse {
    let stream = async_stream::stream! {
        yield Ok::<_, actix_web::Error>(web::Bytes::from_static(
            b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"finish_reason\":null}]}\n\n",
        ));
        tokio::time::sleep(Duration::from_millis(5)).await;
        yield Ok(web::Bytes::from_static(
            b"data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n",
        ));
    };
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .streaming(stream)
}

/// Time from sending the request to the first body bytes that carry an event.
async fn first_event(client: &reqwest::Client, url: &str, body: &serde_json::Value) -> Duration {
    let start = Instant::now();
    let res = client.post(url).json(body).send().await.expect("request");
    let mut stream = res.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("chunk");
        if chunk.windows(5).any(|w| w == b"data:") {
            let t = start.elapsed();
            // Drain the rest so the connection is reused.
            while stream.next().await.is_some() {}
            return t;
        }
    }
    panic!("no event");
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(300);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let upstream =
        HttpServer::new(|| App::new().route("/v1/chat/completions", web::post().to(completions)))
            .workers(1)
            .disable_signals()
            .listen(listener)
            .unwrap()
            .run();
    tokio::spawn(upstream);
    let base = format!("http://127.0.0.1:{port}/v1");

    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n[log]\nlevel = \"warn\"\n\
         [[providers]]\nname = \"up\"\nkind = \"openai\"\nbase_url = \"{base}\"\n\
         [[agents]]\nid = \"bench\"\nprovider = \"up\"\nmodel = \"m\"\n"
    );
    let settings = Settings::from_toml(&toml).unwrap();
    let keys = Keyring::parse("b:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
    let app = Application::build(settings, keys, Arc::new(SystemClock), &|_| None).unwrap();
    let gateway = format!(
        "http://127.0.0.1:{}/api/v1/projects/p/ai/agents/chat",
        app.port()
    );
    tokio::spawn(app.run_until_stopped());

    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .unwrap();
    let direct_body = serde_json::json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let gw_body = serde_json::json!({"agentExternalId": "bench", "stream": true,
        "messages": [{"role": "user", "content": {"type": "text", "text": "hi"}}]});
    // Warm up both legs.
    for _ in 0..20 {
        first_event(&client, &format!("{base}/chat/completions"), &direct_body).await;
        first_event(&client, &gateway, &gw_body).await;
    }
    let (mut direct, mut via) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        direct.push(first_event(&client, &format!("{base}/chat/completions"), &direct_body).await);
        via.push(first_event(&client, &gateway, &gw_body).await);
    }
    direct.sort();
    via.sort();
    println!("streams: {n} per leg, sequential, loopback");
    println!(
        "direct  TTFE ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}",
        pct(&direct, 0.5),
        pct(&direct, 0.9),
        pct(&direct, 0.99),
        pct(&direct, 1.0)
    );
    println!(
        "gateway TTFE ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}",
        pct(&via, 0.5),
        pct(&via, 0.9),
        pct(&via, 0.99),
        pct(&via, 1.0)
    );
    println!(
        "added at the median: {:.3} ms",
        pct(&via, 0.5) - pct(&direct, 0.5)
    );
    let slow = via.iter().filter(|d| d.as_millis() >= 40).count();
    println!("gateway streams with TTFE >= 40 ms: {slow}");
}
