//! (a) seal + open of a conversation state, serde included, at 1, 16 and 256 KiB;
//! (b) the whole request path without network at 16 KiB: parse the Cognite
//!     body → open the cursor → build the upstream JSON → parse the upstream
//!     reply → seal the new state.
//! Figures and method: docs/benchmarks.md.

use std::hint::black_box;
use std::sync::Arc;

use agentgate::api::cognite::wire::ChatRequest as CogniteRequest;
use agentgate::cursor::{Budget, CursorCodec, CursorContext, Keyring, token};
use agentgate::domain::{ConversationState, HistoryItem};
use agentgate::llm::ChatRequest;
use agentgate::llm::openai::{encode_request, parse};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const NOW: i64 = 1_800_000_000;
const CTX: CursorContext<'static> = CursorContext {
    project: "bench-proj",
    agent: "bench-agent",
    subject: "anonymous",
};

fn codec() -> CursorCodec {
    let keys = Keyring::parse("bench:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
    CursorCodec::new(Arc::new(keys), 3600, 86_400)
}

/// A state whose history serialises to about `kib` KiB, in turns of ~1 KiB of prose.
fn state_of(kib: usize) -> ConversationState {
    let mut s = ConversationState::new(NOW, "cfg");
    let sentence = "The quick brown fox jumps over the lazy dog, and \"quotes\" too. ";
    let mut size = 0;
    while size < kib * 1024 {
        let q = sentence.repeat(4);
        let a = sentence.repeat(12);
        size += q.len() + a.len() + 100;
        s.history.push(HistoryItem::user_text(q));
        s.history.push(HistoryItem::assistant_text(a));
        s.turn += 1;
    }
    s
}

fn seal_and_open(c: &mut Criterion) {
    let codec = codec();
    let budget = Budget {
        history_bytes: 1_048_576,
        keep_images_turns: 2,
    };
    let mut group = c.benchmark_group("cursor_seal_open");
    for kib in [1usize, 16, 256] {
        let state = state_of(kib);
        group.throughput(Throughput::Bytes((kib * 1024) as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{kib}KiB")),
            &state,
            |b, state| {
                let mut s = state.clone();
                b.iter(|| {
                    let sealed = codec.seal(&mut s, budget, &CTX, NOW).unwrap();
                    black_box(codec.open(&sealed.token, &CTX, NOW).unwrap())
                })
            },
        );
    }
    group.finish();
}

fn request_path(c: &mut Criterion) {
    let codec = codec();
    let mut state = state_of(16);
    let budget = Budget {
        history_bytes: 262_144,
        keep_images_turns: 2,
    };
    let cursor = codec.seal(&mut state, budget, &CTX, NOW).unwrap().token;
    let body = serde_json::to_vec(&serde_json::json!({
        "agentExternalId": "bench-agent",
        "cursor": cursor,
        "messages": [{"role": "user", "content": {"type": "text", "text": "and what happened next?"}}]
    }))
    .unwrap();
    let reply = serde_json::to_vec(&serde_json::json!({
        "choices": [{"message": {"role": "assistant", "content": "The fox ran away into the forest and was never seen again."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 4000, "completion_tokens": 14}
    }))
    .unwrap();
    c.bench_function("request_path_16KiB", |b| {
        b.iter(|| {
            let req: CogniteRequest = serde_json::from_slice(black_box(&body)).unwrap();
            let chat = req.validate().unwrap();
            let mut s = codec
                .open(chat.cursor.as_deref().unwrap(), &CTX, NOW)
                .unwrap();
            s.history.extend(chat.messages);
            let upstream = encode_request(
                &ChatRequest {
                    model: "gpt-test",
                    system: Some("You are a helpful assistant."),
                    messages: &s.history,
                    temperature: Some(0.2),
                    max_tokens: None,
                    tools: &[],
                    thinking_budget: None,
                    tool_choice: None,
                    params: None,
                    deadline: tokio::time::Instant::now(),
                },
                false,
            )
            .unwrap();
            black_box(&upstream);
            let completion = parse(black_box(&reply)).unwrap();
            s.history.push(HistoryItem::assistant_text(completion.text));
            s.turn += 1;
            black_box(codec.seal(&mut s, budget, &CTX, NOW).unwrap())
        })
    });
}

/// The parts of (a) at 16 KiB: history serde alone, and the cv1 envelope alone.
fn parts(c: &mut Criterion) {
    let state = state_of(16);
    let json = serde_json::to_vec(&state.history).unwrap();
    c.bench_function("parts_16KiB/history_serialize", |b| {
        // sonic-rs, as sealing writes the claims.
        b.iter(|| black_box(sonic_rs::to_vec(black_box(&state.history)).unwrap()))
    });
    c.bench_function("parts_16KiB/history_deserialize", |b| {
        b.iter(|| black_box(serde_json::from_slice::<Vec<HistoryItem>>(black_box(&json)).unwrap()))
    });
    let codec = codec();
    let mut padded = json.clone();
    agentgate::cursor::token::pad(&mut padded);
    c.bench_function("parts_16KiB/envelope_seal", |b| {
        b.iter(|| {
            black_box(token::seal(
                token::Purpose::Cursor,
                codec.keyring(),
                NOW as u64 + 3600,
                &CTX,
                black_box(&padded),
            ))
        })
    });
    let t = token::seal(
        token::Purpose::Cursor,
        codec.keyring(),
        NOW as u64 + 3600,
        &CTX,
        &padded,
    );
    c.bench_function("parts_16KiB/envelope_open", |b| {
        b.iter(|| {
            black_box(
                token::open(
                    token::Purpose::Cursor,
                    codec.keyring(),
                    black_box(&t),
                    &CTX,
                    NOW,
                )
                .unwrap(),
            )
        })
    });
}

criterion_group!(benches, seal_and_open, request_path, parts);
criterion_main!(benches);
