//! The web console (`console/`): its static build, embedded at compile time (build.rs), served
//! at `/`. Hashed assets are cached for a year, everything else is revalidated; every page gets
//! a Content-Security-Policy that allows this origin only and no inline code. Paths the console
//! routes itself (`/tasks/<id>`, …) get its page when a browser asks for HTML.

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use crate::AppState;
use crate::problem::ApiError;

/// One file of the console's build.
struct ConsoleFile {
    path: &'static str,
    body: &'static [u8],
    /// The same, gzipped at build time (`console/scripts/compress.mjs`), for text files.
    gzip: Option<&'static [u8]>,
}

static FILES: &[ConsoleFile] = include!(concat!(env!("OUT_DIR"), "/console_files.rs"));

/// What the console's pages may load and where they may connect: this origin only (its API,
/// its WebSocket), no inline script or style, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     font-src 'self'; connect-src 'self'; manifest-src 'self'; worker-src 'self'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Prefixes that belong to the API and the platform, never to the console.
const NOT_CONSOLE: [&str; 8] = [
    "/api/", "/ws/", "/mcp", "/hooks/", "/metrics", "/healthz", "/livez", "/readyz",
];

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/", get(index))
}

/// Whether this gateway was built with the console in it.
pub fn embedded() -> bool {
    !FILES.is_empty()
}

async fn index(headers: HeaderMap) -> Response {
    page(&headers)
}

/// The console's page, or, in a gateway built without it, a page that says how to build it.
fn page(headers: &HeaderMap) -> Response {
    match find("/index.html") {
        Some(file) => serve(file, headers),
        None => secured(
            Html(
                "<!doctype html><meta charset=utf-8><title>Wharf</title>\
                 <h1>Wharf</h1><p>This gateway was built without its web console. Build the \
                 console with <code>npm ci --prefix console &amp;&amp; npm run build --prefix \
                 console</code>, then build <code>wharf</code> again (<code>./dev.sh</code> does \
                 both). The API is documented at <a href=/api/v1/docs>/api/v1/docs</a>.</p>",
            )
            .into_response(),
            "no-cache",
        ),
    }
}

/// Everything no route matched: a console file, the console's page for a browser navigating to
/// one of its screens, or the API's `404 not_found` problem.
pub(crate) async fn fallback(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path();
    let readable = method == Method::GET || method == Method::HEAD;
    if readable && !NOT_CONSOLE.iter().any(|p| path.starts_with(p)) {
        if let Some(file) = find(path) {
            return serve(file, &headers);
        }
        let wants_html = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/html"));
        if wants_html && !path.starts_with("/assets/") {
            return page(&headers);
        }
    }
    ApiError::new(
        wharf_contract::ErrorCode::NotFound,
        format!("nothing at {path}"),
    )
    .into_response()
}

fn find(path: &str) -> Option<&'static ConsoleFile> {
    FILES.iter().find(|f| f.path == path)
}

fn serve(file: &'static ConsoleFile, headers: &HeaderMap) -> Response {
    // Names under /assets/ carry a hash of their content: they never change.
    let cache = if file.path.starts_with("/assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let gzip_ok = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    let mut response = match file.gzip {
        Some(zipped) if gzip_ok => {
            let mut r = (StatusCode::OK, zipped).into_response();
            r.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            r
        }
        _ => (StatusCode::OK, file.body).into_response(),
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(file.path)),
    );
    if file.gzip.is_some() {
        h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    secured(response, cache)
}

/// Adds the caching rule and the headers every console answer carries.
fn secured(mut response: Response, cache: &'static str) -> Response {
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("webmanifest") => "application/manifest+json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}
