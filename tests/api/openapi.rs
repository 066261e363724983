//! `/openapi.json` is valid OpenAPI 3.1 and documents exactly the routes the
//! app serves; `/docs` works offline.

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;

use crate::helpers::*;

/// `/a/{x}/b` for `/a/{anything}/b` and for actix's `/a/{x:regex}/b`; the
/// Quant prefix's `{spelling:organi[sz]ations}` is its documented spelling.
fn normalise(path: &str) -> String {
    let path = path.replace("{spelling:organi[sz]ations}", "organizations");
    let mut out = String::new();
    let mut depth = 0;
    for c in path.chars() {
        match c {
            '{' => {
                depth += 1;
                if depth == 1 {
                    out.push_str("{x}");
                }
            }
            '}' => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "put", "post", "delete", "patch", "head", "options"]
                .contains(&method.as_str())
            {
                ops.insert((method.to_uppercase(), normalise(path)));
            }
        }
    }
    ops
}

#[tokio::test]
async fn the_document_lists_exactly_the_routes_the_app_serves() {
    let app = spawn_app().await;
    let res = app.get("/openapi.json").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    let doc: Value = res.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");

    let served: BTreeSet<(String, String)> = agentgate::api::route_table()
        .into_iter()
        .map(|(m, p)| (m.to_string(), normalise(&p)))
        .collect();
    let documented = documented(&doc);
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let not_served: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "served but not documented: {undocumented:?}"
    );
    assert!(
        not_served.is_empty(),
        "documented but not served: {not_served:?}"
    );
    assert!(served.len() >= 17, "{served:?}");

    // And the table is what the router answers: every route is found (no
    // 404 for an unknown path, no 405).
    for (method, path) in agentgate::api::route_table() {
        let url = format!("{}{}", app.address, normalise(&path).replace("{x}", "x1"));
        let res = app
            .client
            .request(
                reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap(),
                &url,
            )
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let body = res.text().await.unwrap();
        assert_ne!(status, 405, "{method} {path}: {body}");
        assert!(!body.contains("no route for"), "{method} {path}: {body}");
    }
}

#[tokio::test]
async fn every_operation_documents_its_errors_in_its_apis_format() {
    let app = spawn_app().await;
    let doc: Value = app.get_json("/openapi.json").await;
    let cognite = &doc["paths"]["/api/v1/projects/{project}/ai/agents/chat"]["post"];
    let quant = &doc["paths"]["/api/v3/organizations/{org}/ai/agents/{agent_id}/chat"]["post"];
    for status in [
        "400", "401", "403", "404", "413", "415", "422", "429", "500", "502", "503", "504",
    ] {
        assert_eq!(
            cognite["responses"][status]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/CogniteErrorBody",
            "{status}"
        );
        assert_eq!(
            quant["responses"][status]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/QuantErrorBody",
            "{status}"
        );
    }
    let too_many = cognite["responses"]["429"]["description"].as_str().unwrap();
    assert!(too_many.contains("`rate_limited`") && too_many.contains("`upstream_rate_limited`"));
    assert!(cognite["responses"]["429"]["headers"]["Retry-After"].is_object());
    assert!(cognite["responses"]["200"]["headers"]["x-ratelimit-remaining-requests"].is_object());
    // Streams are documented as server-sent events with their event types.
    for op in [cognite, quant] {
        let sse = &op["responses"]["200"]["content"]["text/event-stream"];
        assert_eq!(sse["schema"]["$ref"], "#/components/schemas/StreamEvent");
    }
    let events = &doc["components"]["schemas"]["StreamEventType"]["enum"];
    assert_eq!(
        events,
        &serde_json::json!([
            "delta",
            "tool_call",
            "tool_result",
            "action",
            "usage",
            "done",
            "error"
        ])
    );
    assert_eq!(
        quant["responses"]["202"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Accepted"
    );
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_is_valid_openapi_3_1() {
    let app = spawn_app().await;
    let text = app.get("/openapi.json").await.text().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, text).unwrap();
    // openapi-spec-validator (PyPI) checks the document against the OpenAPI
    // 3.1 schema and its references.
    let out = tokio::task::block_in_place(|| {
        Command::new(crate::sdk::python())
            .args(["-m", "openapi_spec_validator"])
            .arg(&file)
            .output()
            .unwrap()
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("OK"), "{stdout}");
}

#[tokio::test]
async fn the_docs_page_is_served_from_the_binary_and_loads_nothing_from_elsewhere() {
    let app = spawn_app().await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = client
        .get(format!("{}/docs", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 308);
    assert_eq!(res.headers()["location"], "/docs/");
    let page = app.get("/docs/").await;
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );
    // Every file the page names is served, and the initializer points at our document.
    let mut files = Vec::new();
    for attr in ["src=\"", "href=\""] {
        for part in html.split(attr).skip(1) {
            let name = part.split('"').next().unwrap();
            files.push(name.trim_start_matches("./").to_owned());
        }
    }
    assert!(files.iter().any(|f| f.ends_with(".js")), "{files:?}");
    for f in &files {
        let res = app.get(&format!("/docs/{f}")).await;
        assert_eq!(res.status(), 200, "{f}");
    }
    let init = app
        .get("/docs/swagger-initializer.js")
        .await
        .text()
        .await
        .unwrap();
    assert!(init.contains("/openapi.json"), "{init}");
    assert!(init.contains("\"validatorUrl\": \"none\""), "{init}");
    let missing = app.get("/docs/no-such-file.js").await;
    assert_eq!(missing.status(), 404);
}

/// schemathesis (PyPI) generates requests from the document for every
/// operation, a bounded number per operation, and checks that none gets a
/// 5xx and that every answer matches the document (status, content type,
/// headers, body schema). Set `AGENTGATE_SCHEMATHESIS_SEED` to explore other
/// inputs; the default seed keeps the run reproducible.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_off_the_document() {
    let app = spawn_app_with(Options {
        default_project: Some("demo".into()),
        ..Default::default()
    })
    .await;
    let st = crate::sdk::python().with_file_name("st");
    let seed = std::env::var("AGENTGATE_SCHEMATHESIS_SEED").unwrap_or_else(|_| "20261201".into());
    let work = tempfile::tempdir().unwrap();
    let out = tokio::task::block_in_place(|| {
        Command::new(&st)
            .current_dir(work.path())
            .args(["run", &format!("{}/openapi.json", app.address)])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance",
                "--max-examples",
                "25",
                "--seed",
                &seed,
                "--generation-database",
                ":memory:",
                "--request-timeout",
                "10",
                "--no-color",
            ])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", st.display()))
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis failed (seed {seed}):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Tested: 18"), "{stdout}");
}
