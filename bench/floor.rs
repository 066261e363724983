//! The floor of the load benchmarks: the cheapest gateway one could write on
//! agentgate's stack. actix-web in, reqwest out, TCP_NODELAY on both legs,
//! the JSON parsed and re-serialised on both legs, no cursor, no logging,
//! no metrics. Whatever agentgate costs above this is its own.
//!
//! Usage: `floor PORT UPSTREAM_BASE WORKERS [per-worker]` (e.g. `floor 0
//! http://127.0.0.1:9000/v1 0`; 0 workers means one per core); prints
//! `listening <port>`. With `per-worker`, each worker thread has its own
//! reqwest client (as agentgate does) instead of one shared by all.

use actix_web::{App, HttpResponse, HttpServer, web};
use serde_json::{Value, json};

struct Floor {
    client: reqwest::Client,
    per_worker: bool,
    url: String,
}

thread_local! {
    static CLIENT: reqwest::Client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .unwrap_or_default();
}

async fn chat(floor: web::Data<Floor>, body: web::Bytes) -> HttpResponse {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return HttpResponse::BadRequest().finish();
    };
    let text = request["messages"][0]["content"]["text"].clone();
    let upstream = json!({
        "model": "bench",
        "messages": [{"role": "user", "content": text}],
    });
    let client = if floor.per_worker {
        CLIENT.with(Clone::clone)
    } else {
        floor.client.clone()
    };
    let answer = match client.post(&floor.url).json(&upstream).send().await {
        Ok(res) => res.json::<Value>().await,
        Err(e) => Err(e),
    };
    match answer {
        Ok(answer) => HttpResponse::Ok().json(json!({
            "agentExternalId": request["agentExternalId"],
            "response": {"type": "result", "messages": [{
                "role": "agent",
                "content": {"type": "text", "text": answer["choices"][0]["message"]["content"]}
            }]}
        })),
        Err(_) => HttpResponse::BadGateway().finish(),
    }
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let base = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:9000/v1".into());
    let workers: usize = args.next().and_then(|w| w.parse().ok()).unwrap_or(0);
    let per_worker = args.next().as_deref() == Some("per-worker");
    agentgate::install_crypto_provider();
    actix_web::rt::System::new().block_on(async move {
        let floor = web::Data::new(Floor {
            client: reqwest::Client::builder()
                .tcp_nodelay(true)
                .build()
                .map_err(std::io::Error::other)?,
            per_worker,
            url: format!("{base}/chat/completions"),
        });
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(floor.clone())
                .default_service(web::post().to(chat))
        })
        .on_connect(|conn, _| {
            if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
                let _ = tcp.set_nodelay(true);
            }
        })
        .bind(("127.0.0.1", port))?;
        if workers > 0 {
            server = server.workers(workers);
        }
        println!("listening {}", server.addrs()[0].port());
        server.run().await
    })
}
