//! HTTP tools declared in config: a URL template filled from the arguments
//! (each value percent-encoded as one path segment), the other arguments as
//! the query (GET, DELETE) or a JSON body, headers from config (`env:NAME`
//! values read at start), a timeout, a response size cap, and an
//! `Idempotency-Key` that is stable across re-runs of the same turn.

use std::time::Duration;

use futures_util::StreamExt;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Method;
use reqwest::header::{HeaderName, HeaderValue};

use super::{Tool, ToolContext, ToolError, ToolSpec};
use crate::config::ToolSettings;

/// Everything but RFC 3986 unreserved characters is encoded, `/` included.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

pub struct HttpTool {
    spec: ToolSpec,
    method: Method,
    url: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    max_response_bytes: usize,
    client: reqwest::Client,
}

impl std::fmt::Debug for HttpTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header values may be secrets: print only their names.
        f.debug_struct("HttpTool")
            .field("name", &self.spec.name)
            .field("method", &self.method)
            .field("url", &self.url)
            .field(
                "headers",
                &self
                    .headers
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl HttpTool {
    pub fn new(s: &ToolSettings, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, String> {
        let method = match s
            .method
            .as_deref()
            .unwrap_or("GET")
            .to_ascii_uppercase()
            .as_str()
        {
            "GET" => Method::GET,
            "POST" => Method::POST,
            "PUT" => Method::PUT,
            "PATCH" => Method::PATCH,
            "DELETE" => Method::DELETE,
            other => return Err(format!("method {other:?} is not supported")),
        };
        let url = s.url.clone().ok_or("url is required for kind = \"http\"")?;
        check_placeholders(&url)?;
        let probe = template_names(&url)
            .into_iter()
            .fold(url.clone(), |u, n| u.replace(&format!("{{{n}}}"), "x"));
        reqwest::Url::parse(&probe).map_err(|e| format!("url: {e}"))?;
        let parameters = s
            .parameters
            .clone()
            .ok_or("parameters (a JSON Schema object) is required")?;
        if parameters.get("type").and_then(|t| t.as_str()) != Some("object") {
            return Err("parameters must be a JSON Schema with type = \"object\"".into());
        }
        let headers = resolve_headers(&s.headers, env)?;
        crate::install_crypto_provider();
        let client = reqwest::Client::builder()
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_millis(s.timeout_ms.min(10_000)))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("http client: {e}"))?;
        Ok(Self {
            spec: ToolSpec {
                name: s.name.clone(),
                description: s.description.clone().unwrap_or_default(),
                parameters,
                origin: super::ToolOrigin::Http,
                timeout: Duration::from_millis(s.timeout_ms),
                expose: s.expose,
                confirm: s.confirm,
            },
            method,
            url,
            headers,
            max_response_bytes: s.max_response_bytes,
            client,
        })
    }
}

/// Configured headers with `env:NAME` values read from the environment; the
/// values are marked sensitive (never printed).
pub fn resolve_headers(
    headers: &std::collections::BTreeMap<String, secrecy::SecretString>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    use secrecy::ExposeSecret;
    let mut out = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let value = value.expose_secret();
        let value = match value.strip_prefix("env:") {
            Some(var) => env(var)
                .ok_or_else(|| format!("header {name}: environment variable {var} is not set"))?,
            None => value.to_owned(),
        };
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("header name {name:?} is invalid"))?;
        let mut value =
            HeaderValue::from_str(&value).map_err(|_| format!("header {name}: invalid value"))?;
        value.set_sensitive(true);
        out.push((name, value));
    }
    Ok(out)
}

/// The distinct `{name}` placeholders of a URL template, in order.
fn template_names(url: &str) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for name in url
        .split('{')
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
    {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// Placeholders may fill path segments and query values only: never the
/// scheme, user info, host or port (a model could then point the tool
/// anywhere: SSRF), a query key, or the fragment. Checked on the URL as the
/// parser reads it, with a marker in each placeholder's place, so that no
/// spelling (`https:/{host}`, `http:\\{host}`) slips a placeholder into the authority.
fn check_placeholders(url: &str) -> Result<(), String> {
    const MARK: &str = "zq0placeholder0zq";
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err("url must start with http:// or https://".into());
    }
    let probe = template_names(url)
        .into_iter()
        .fold(url.to_owned(), |u, n| u.replace(&format!("{{{n}}}"), MARK));
    if probe.contains(['{', '}']) {
        return Err("url: a { or } that is not a whole {placeholder}".into());
    }
    let parsed = reqwest::Url::parse(&probe).map_err(|e| format!("url: {e}"))?;
    let marked = |part: &str| part.contains(MARK);
    if marked(parsed.scheme())
        || marked(parsed.username())
        || parsed.password().is_some_and(marked)
        || parsed.host_str().is_some_and(marked)
    {
        return Err(
            "url: placeholders may only fill path segments and query values, not the scheme, user, host or port"
                .into(),
        );
    }
    if parsed.fragment().is_some_and(marked) {
        return Err("url: placeholders may not be in the fragment".into());
    }
    if parsed.query_pairs().any(|(k, _)| marked(&k)) {
        return Err("url: placeholders may fill query values, not query keys".into());
    }
    Ok(())
}

fn scalar(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[async_trait::async_trait]
impl Tool for HttpTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    async fn call(&self, args: serde_json::Value, ctx: &ToolContext) -> Result<String, ToolError> {
        let fail = |m: String| ToolError::Failed(m);
        let mut rest = match args {
            serde_json::Value::Object(map) => map,
            _ => return Err(fail("the arguments must be an object".into())),
        };
        let mut url = self.url.clone();
        for name in template_names(&self.url) {
            let value = rest.remove(name).as_ref().and_then(scalar).ok_or_else(|| {
                fail(format!(
                    "argument {name:?} is required as a string or number"
                ))
            })?;
            if value.is_empty() || value == "." || value == ".." {
                return Err(fail(format!(
                    "argument {name:?} may not be empty, \".\" or \"..\""
                )));
            }
            url = url.replace(
                &format!("{{{name}}}"),
                &utf8_percent_encode(&value, SEGMENT).to_string(),
            );
        }
        let mut url =
            reqwest::Url::parse(&url).map_err(|e| fail(format!("could not build the URL: {e}")))?;
        let mut request = if matches!(self.method, Method::GET | Method::DELETE) {
            // Appended to the template's own query (`?api-version=…`), which
            // stays as it is when there is nothing to add.
            if !rest.is_empty() {
                let mut q = url.query_pairs_mut();
                for (k, v) in &rest {
                    q.append_pair(k, &scalar(v).unwrap_or_else(|| v.to_string()));
                }
            }
            self.client.request(self.method.clone(), url)
        } else {
            self.client.request(self.method.clone(), url).json(&rest)
        };
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        request = request.header("idempotency-key", &ctx.idempotency_key);
        let response = request
            .send()
            .await
            .map_err(|e| fail(format!("the request failed: {}", e.without_url())))?;
        let status = response.status();
        let mut body = Vec::new();
        let mut truncated = false;
        let mut chunks = response.bytes_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk
                .map_err(|e| fail(format!("reading the response failed: {}", e.without_url())))?;
            let room = self.max_response_bytes - body.len();
            if chunk.len() > room {
                body.extend_from_slice(&chunk[..room]);
                truncated = true;
                break;
            }
            body.extend_from_slice(&chunk);
        }
        let mut text = String::from_utf8_lossy(&body).into_owned();
        if truncated {
            text.push_str(&format!(
                "\n[truncated: the response was longer than {} bytes]",
                self.max_response_bytes
            ));
        }
        if !status.is_success() {
            return Err(fail(format!(
                "the service answered {}: {}",
                status.as_u16(),
                text.chars().take(1000).collect::<String>()
            )));
        }
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_fill_path_segments_and_query_values_only() {
        for ok in [
            "https://api.example.com/v1/items/{id}",
            "https://api.example.com/v1/items/{id}/sub/{id}?x={q}&api-version=1",
            "http://127.0.0.1:8080/{a}-{b}",
        ] {
            assert!(check_placeholders(ok).is_ok(), "{ok}");
        }
        for bad in [
            "https://{host}/v1",
            "https://api.{zone}.example.com/v1",
            "http://127.0.0.1:{port}/v1",
            "{scheme}://example.com/",
            "https://user:{pw}@example.com/",
            "https://example.com/v1?{key}=1",
            "https://example.com/v1#{frag}",
            "https:/{host}/v1",
            "http:\\\\{host}/v1",
            "https://{a}.{b}/v1",
            "ftp://example.com/{x}",
            "https://example.com/{x}}",
        ] {
            assert!(check_placeholders(bad).is_err(), "{bad}");
        }
        assert_eq!(template_names("/a/{x}/b/{x}/{y}"), vec!["x", "y"]);
    }
}
