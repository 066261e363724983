//! The browser playground's routes: off by default, one self-contained page,
//! and an agent list behind the API's own credentials.

use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn the_playground_is_off_unless_enabled() {
    let app = spawn_app().await;
    for path in ["/playground", "/playground/agents?project=p"] {
        let res = app.get(path).await;
        assert_eq!(res.status(), 404, "{path}");
        let body: Value = res.json().await.unwrap();
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("not enabled")
        );
    }
}

#[tokio::test]
async fn the_page_loads_nothing_from_elsewhere_and_lists_the_agents() {
    let app = spawn_app_with(Options {
        extra_toml: "\n[playground]\nenabled = true\n".into(),
        ..Default::default()
    })
    .await;
    let res = app.get("/playground").await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    let page = res.text().await.unwrap();
    // No CDN, no external script, style, font or image: the CSP would block them anyway.
    for external in [
        "<script src",
        "<link",
        "@import",
        "url(",
        "src=\"http",
        "href=\"http",
    ] {
        assert!(!page.contains(external), "the page references {external:?}");
    }
    assert!(
        page.contains("<label") && page.contains("aria-live"),
        "labels and a live region"
    );

    let list: Value = app.get_json("/playground/agents?project=p").await;
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["echo"]);
    let bad = app.get("/playground/agents?project=a%20b").await;
    assert_eq!(bad.status(), 400);
    let missing = app.get("/playground/agents").await;
    assert_eq!(missing.status(), 400);
    assert!(
        missing.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("json")
    );
}

#[tokio::test]
async fn the_agent_list_needs_the_apis_credentials() {
    let key = "pg-key-0123456789";
    let app = spawn_app_with(Options {
        extra_toml: format!(
            "\n[playground]\nenabled = true\n\n[auth]\nmode = \"api_keys\"\n\n[[auth.api_keys]]\nid = \"pg\"\nsha256 = \"{}\"\nsubject = \"pg\"\ntenants = [\"p\"]\n",
            sha256_hex(key)
        ),
        ..Default::default()
    })
    .await;
    let url = format!("{}/playground/agents?project=p", app.address);
    assert_eq!(app.client.get(&url).send().await.unwrap().status(), 401);
    let ok = app.client.get(&url).bearer_auth(key).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let other = format!("{}/playground/agents?project=q", app.address);
    assert_eq!(
        app.client
            .get(&other)
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
}
