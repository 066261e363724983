//! HTTP only: routing, request ids, body decoding, health, and one facade per
//! public API shape. Facades parse wire types at the edge and call the engine.

pub mod body;
pub mod cognite;
pub mod health;
pub mod openapi;
pub mod playground;
pub mod quant;
pub mod report;
pub mod request_id;
pub mod sse;

use actix_web::http::Method;
use actix_web::{HttpRequest, HttpResponse, web};

pub use crate::app::{AppState, Lifecycle};

/// Names the replica that answered, when `[server] replica_id` is set.
pub const REPLICA_HEADER: actix_web::http::header::HeaderName =
    actix_web::http::header::HeaderName::from_static("x-agentgate-replica");
use crate::error::{ApiError, ErrorCode};

/// An error response with `body` (the facade's rendering) and `Retry-After` when set.
pub fn error_response(err: &ApiError, body: String) -> HttpResponse {
    let mut res = HttpResponse::build(err.code.status());
    if err.code == ErrorCode::Unauthorized {
        res.insert_header((actix_web::http::header::WWW_AUTHENTICATE, "Bearer"));
    }
    if let Some(secs) = err.retry_after {
        res.insert_header((actix_web::http::header::RETRY_AFTER, secs.to_string()));
    }
    res.content_type("application/json").body(body)
}

/// Where routes go: into the app, or into a list of `(method, path)` (the
/// route table the OpenAPI test compares with the document). Both come
/// from the one [`register`] function, so the list is what the app serves.
pub enum Sink<'a> {
    Config(&'a mut web::ServiceConfig),
    List {
        prefix: String,
        routes: &'a mut Vec<(Method, String)>,
    },
}

impl Sink<'_> {
    /// One path with its methods; any other method gets 405 in format `F`.
    fn resource<F: ErrorFormat + 'static>(
        &mut self,
        path: &str,
        routes: Vec<(Method, actix_web::Route)>,
    ) {
        match self {
            Sink::Config(cfg) => {
                let mut resource = web::resource(path);
                for (method, route) in routes {
                    resource = resource.route(route.method(method));
                }
                cfg.service(resource.default_service(web::to(method_not_allowed::<F>)));
            }
            Sink::List {
                prefix,
                routes: list,
            } => {
                list.extend(
                    routes
                        .into_iter()
                        .map(|(m, _)| (m, format!("{prefix}{path}"))),
                );
            }
        }
    }
}

/// Register every route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    register(&mut Sink::Config(cfg));
}

/// Every `(method, path pattern)` the app serves.
pub fn route_table() -> Vec<(Method, String)> {
    let mut routes = Vec::new();
    register(&mut Sink::List {
        prefix: String::new(),
        routes: &mut routes,
    });
    routes
}

fn register(sink: &mut Sink<'_>) {
    let get = || Method::GET;
    sink.resource::<Cognite>("/healthz", vec![(get(), web::route().to(health::healthz))]);
    sink.resource::<Cognite>("/readyz", vec![(get(), web::route().to(health::readyz))]);
    sink.resource::<Cognite>("/metrics", vec![(get(), web::route().to(health::metrics))]);
    sink.resource::<Cognite>(
        "/admin/reload",
        vec![(Method::POST, web::route().to(health::reload))],
    );
    sink.resource::<Cognite>(
        "/openapi.json",
        vec![(get(), web::route().to(openapi::document))],
    );
    sink.resource::<Cognite>("/docs", vec![(get(), web::route().to(openapi::docs_root))]);
    sink.resource::<Cognite>(
        "/playground",
        vec![(get(), web::route().to(playground::page))],
    );
    sink.resource::<Cognite>(
        "/playground/agents",
        vec![(get(), web::route().to(playground::agents))],
    );
    sink.resource::<Cognite>(
        "/docs/{file:.*}",
        vec![(get(), web::route().to(openapi::docs_file))],
    );
    sink.resource::<Cognite>(
        "/api/v1/projects/{project}/ai/agents/chat",
        vec![(
            Method::POST,
            web::route().to(cognite::handlers::chat_in_project),
        )],
    );
    quant::register(sink);
    sink.resource::<Cognite>(
        "/ai/agents/chat",
        vec![(
            Method::POST,
            web::route().to(cognite::handlers::chat_default_project),
        )],
    );
}

/// An API shape's error rendering: the body format its clients parse.
pub trait ErrorFormat {
    fn render(err: &ApiError, request_id: &str) -> HttpResponse;
}

/// The Cognite error format (also used for the health routes and unknown paths).
pub struct Cognite;

impl ErrorFormat for Cognite {
    fn render(err: &ApiError, request_id: &str) -> HttpResponse {
        cognite::error::render(err, request_id)
    }
}

/// The Quant error format.
pub struct Quant;

impl ErrorFormat for Quant {
    fn render(err: &ApiError, request_id: &str) -> HttpResponse {
        quant::error::render(err, request_id)
    }
}

/// 405 for a known path with another method, in format `F`: the one
/// handler every resource of both facades falls back to.
pub async fn method_not_allowed<F: ErrorFormat>(req: HttpRequest) -> HttpResponse {
    F::render(
        &ApiError::new(
            ErrorCode::MethodNotAllowed,
            format!("{} is not allowed here", req.method()),
        ),
        &request_id::of(&req),
    )
}

/// 404 for an unknown path, in format `F`.
pub async fn not_found<F: ErrorFormat>(req: HttpRequest) -> HttpResponse {
    F::render(
        &ApiError::new(
            ErrorCode::NotFound,
            format!(
                "no route for {} {}",
                req.method(),
                crate::error::prefix(req.path(), 200)
            ),
        ),
        &request_id::of(&req),
    )
}
