//! Request bodies: a declared `Content-Type` must be JSON; `Content-Encoding`
//! (exactly one of gzip, deflate, identity) is decoded with the size limit
//! applied to the decoded bytes, so a gzip bomb stops at the limit instead of
//! after inflating; and the whole body must arrive before a deadline, so a
//! client that stalls mid-body cannot hold a connection forever.

use std::io::Read;
use std::time::Duration;

use actix_web::http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::{HttpRequest, web};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use crate::error::{ApiError, ErrorCode};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
    Deflate,
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        ErrorCode::BodyTooLarge,
        format!("the request body is larger than {limit} bytes"),
    )
}

/// The body's coding: no `Content-Encoding`, or exactly one header naming
/// exactly one known coding. Anything else (several headers, a list,
/// non-ASCII bytes, an unknown coding) is 415: guessing would decode a body
/// differently from what the client meant.
fn encoding(req: &HttpRequest) -> Result<Encoding, ApiError> {
    let mut values = req.headers().get_all(CONTENT_ENCODING);
    let Some(value) = values.next() else {
        return Ok(Encoding::Identity);
    };
    let unsupported = |what: String| {
        ApiError::new(
            ErrorCode::UnsupportedEncoding,
            format!("{what}; send one of gzip, deflate or identity"),
        )
    };
    if values.next().is_some() {
        return Err(unsupported(
            "more than one Content-Encoding header".to_owned(),
        ));
    }
    let Ok(value) = value.to_str() else {
        return Err(unsupported(
            "the Content-Encoding header is not ASCII".to_owned(),
        ));
    };
    match value.trim().to_ascii_lowercase().as_str() {
        "identity" => Ok(Encoding::Identity),
        "gzip" | "x-gzip" => Ok(Encoding::Gzip),
        "deflate" => Ok(Encoding::Deflate),
        other => Err(unsupported(format!(
            "Content-Encoding {:?} is not supported",
            crate::error::prefix(other, 64)
        ))),
    }
}

/// A declared `Content-Type` must be JSON (`application/json` or
/// `application/*+json`, any parameters); an absent one is accepted, as SDKs
/// and curl users expect.
fn check_json_type(req: &HttpRequest) -> Result<(), ApiError> {
    let mut values = req.headers().get_all(CONTENT_TYPE);
    let Some(value) = values.next() else {
        return Ok(());
    };
    let essence = value
        .to_str()
        .ok()
        .filter(|_| values.next().is_none())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
    let json = essence.as_deref().is_some_and(|e| {
        e == "application/json" || (e.starts_with("application/") && e.ends_with("+json"))
    });
    if json {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::UnsupportedMediaType,
        match essence {
            Some(e) => format!(
                "Content-Type {:?} is not supported; send application/json",
                crate::error::prefix(&e, 64)
            ),
            None => {
                "the Content-Type header is not one ASCII value; send application/json".to_owned()
            }
        },
    ))
}

/// Read the whole body, decoded, refusing more than `limit` decoded bytes, a
/// non-JSON `Content-Type`, and a body that has not fully arrived within
/// `[server] body_timeout_seconds` (408).
pub async fn read(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<Bytes, ApiError> {
    check_json_type(req)?;
    let encoding = encoding(req)?;
    let deadline = req
        .app_data::<web::Data<crate::app::AppState>>()
        .map_or(Duration::from_secs(30), |s| {
            Duration::from_secs(s.settings.server.body_timeout_seconds)
        });
    let raw = tokio::time::timeout(deadline, collect(req, payload, limit))
        .await
        .map_err(|_| {
            ApiError::new(
                ErrorCode::RequestTimeout,
                format!(
                    "the request body did not arrive within {} seconds",
                    deadline.as_secs()
                ),
            )
        })??;
    match encoding {
        Encoding::Identity => Ok(raw),
        Encoding::Gzip => inflate(flate2::read::MultiGzDecoder::new(&raw[..]), limit),
        Encoding::Deflate => inflate(flate2::read::ZlibDecoder::new(&raw[..]), limit),
    }
}

/// The raw (still encoded) body, at most `limit` bytes.
async fn collect(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    let mut raw = BytesMut::with_capacity(declared.unwrap_or(8192).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::invalid(format!("could not read the request body: {e}")))?;
        if raw.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        raw.extend_from_slice(&chunk);
    }
    Ok(raw.freeze())
}

fn inflate(decoder: impl Read, limit: usize) -> Result<Bytes, ApiError> {
    let mut out = Vec::new();
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| ApiError::invalid("the request body is not valid for its Content-Encoding"))?;
    if out.len() > limit {
        return Err(too_large(limit));
    }
    Ok(out.into())
}

/// Read and parse a JSON body (decoded, under `limit`).
pub async fn read_json<T: serde::de::DeserializeOwned>(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<T, ApiError> {
    let raw = read(req, payload, limit).await?;
    parse_json(&raw)
}

/// Parse a JSON body; the error quotes at most a short prefix of any value.
pub fn parse_json<T: serde::de::DeserializeOwned>(raw: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(raw).map_err(|e| {
        ApiError::invalid(format!(
            "the request body is not valid JSON for this API: {}",
            crate::error::prefix(&e.to_string(), 300)
        ))
    })
}
