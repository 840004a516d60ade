//! The web interface's files: `runtime/ui/`, embedded in the binary at build time (no CDN, no
//! build step outside cargo), served at `/` (the page) and `/ui/…` (modules, styles, icons).
//!
//! The files are static and public: they hold no data. Everything the interface shows comes
//! from the `/v1` API with the key the user signs in with, so what a key may see and do is
//! decided by the API, not by the interface. Every response carries a strict Content Security
//! Policy (only this origin's scripts, styles and connections; no inline script; no framing).

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rust_embed::RustEmbed;

use super::http::{Problem, Shared};

/// The interface's files.
#[derive(RustEmbed)]
#[folder = "ui/"]
struct Assets;

/// The Content Security Policy of every interface response. `connect-src 'self'` covers the
/// same origin's `ws:`/`wss:` in current browsers (CSP Level 3).
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// `/` and `/ui/{*path}`.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/", get(index))
        .route("/favicon.ico", get(favicon))
        .route("/ui/{*path}", get(asset))
}

async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

async fn favicon(headers: HeaderMap) -> Response {
    serve("icon.svg", &headers)
}

async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&path, &headers)
}

/// The file at `path`, with its type, an `ETag` from its SHA-256, and `no-cache` (browsers
/// revalidate, so a new binary's files are picked up at once; unchanged ones answer 304).
fn serve(path: &str, headers: &HeaderMap) -> Response {
    let Some(file) = Assets::get(path) else {
        return Problem::not_found(format!("no file /ui/{path}")).into_response();
    };
    let etag = format!(
        "\"{}\"",
        file.metadata
            .sha256_hash()
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let mut response = if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        file.data.into_owned().into_response()
    };
    let h = response.headers_mut();
    let mime = file.metadata.mimetype();
    if let Ok(v) = HeaderValue::from_str(mime) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
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
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// The paths of every embedded file (for tests).
pub fn files() -> Vec<String> {
    Assets::iter().map(|p| p.into_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_modules_are_embedded() {
        let files = files();
        for f in [
            "index.html",
            "app.css",
            "icon.svg",
            "js/app.js",
            "js/api.js",
        ] {
            assert!(
                files.iter().any(|x| x == f),
                "{f} is not embedded: {files:?}"
            );
        }
    }

    #[test]
    fn every_module_the_page_imports_is_embedded() {
        // A relative import of a missing file would only fail in the browser.
        for path in files().iter().filter(|p| p.ends_with(".js")) {
            let text = String::from_utf8(Assets::get(path).unwrap().data.into_owned()).unwrap();
            let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
            for line in text.lines() {
                let Some(rest) = line.split(" from \"").nth(1) else {
                    continue;
                };
                let target = rest.split('"').next().unwrap();
                let mut parts: Vec<&str> = if dir.is_empty() {
                    vec![]
                } else {
                    dir.split('/').collect()
                };
                for seg in target.split('/') {
                    match seg {
                        "." => {}
                        ".." => {
                            parts.pop();
                        }
                        s => parts.push(s),
                    }
                }
                let resolved = parts.join("/");
                assert!(
                    Assets::get(&resolved).is_some(),
                    "{path} imports {target} ({resolved}), which is not embedded"
                );
            }
        }
    }
}
