//! A fast mock of an OpenAI-compatible upstream for the load benchmarks: one
//! thread, hyper, `POST /v1/chat/completions` answering a fixed completion
//! (JSON), or server-sent events when the body asks for `"stream":true`.
//! The model `slow` streams one token a second for a minute (for the
//! concurrent-streams memory figure). It reads the body but parses only the
//! two flags it needs, so that it costs as little as possible next to what
//! it measures.
//!
//! Usage: `mock_upstream PORT` (0 for any); prints `listening <port>`.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const COMPLETION: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"bench","choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the mock upstream."},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":6,"total_tokens":18}}"#;

const CHUNK: &str = "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"finish_reason\":null}]}\n\n";
const END: &str = "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":6,\"total_tokens\":18}}\n\ndata: [DONE]\n\n";

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

async fn handle(req: Request<hyper::body::Incoming>) -> Result<Response<Body>, Infallible> {
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let stream = contains(&body, b"\"stream\":true") || contains(&body, b"\"stream\": true");
    if !stream {
        return Ok(Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(COMPLETION.as_bytes())).boxed())
            .unwrap_or_default());
    }
    let slow = contains(&body, b"\"model\":\"slow\"") || contains(&body, b"\"model\": \"slow\"");
    let events = async_stream::stream! {
        yield Ok::<_, Infallible>(Frame::data(Bytes::from_static(CHUNK.as_bytes())));
        if slow {
            for _ in 0..60 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                yield Ok(Frame::data(Bytes::from_static(CHUNK.as_bytes())));
            }
        }
        yield Ok(Frame::data(Bytes::from_static(END.as_bytes())));
    };
    Ok(Response::builder()
        .header("content-type", "text/event-stream")
        .body(StreamBody::new(events).boxed())
        .unwrap_or_default())
}

fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        println!("listening {}", listener.local_addr()?.port());
        loop {
            let (socket, _) = listener.accept().await?;
            let _ = socket.set_nodelay(true);
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(socket), service_fn(handle))
                    .await;
            });
        }
    })
}
