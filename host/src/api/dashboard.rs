//! The dashboard: the single-page app built from `ui/` and embedded in the
//! binary, served at `/ui/` on the API's origin. It holds no data of its
//! own and calls only the public API with the key the user signs in with.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

include!(concat!(env!("OUT_DIR"), "/ui_assets.rs"));

/// Only this origin: no CDN, no inline script, no framing.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(|| async { asset("index.html") }))
        .route(
            "/ui/{*path}",
            get(|Path(path): Path<String>| async move { asset(&path) }),
        )
}

/// A file of the build; any other path is the app's own route and gets
/// `index.html`, except under `assets/`, where a missing file is a 404.
fn asset(path: &str) -> Response {
    let found = UI_ASSETS.iter().find(|(p, _, _)| *p == path);
    let (path, content_type, bytes) = match found {
        Some(file) => *file,
        None if path.starts_with("assets/") => {
            return (StatusCode::NOT_FOUND, "no such dashboard file").into_response();
        }
        None => *UI_ASSETS
            .iter()
            .find(|(p, _, _)| *p == "index.html")
            .expect("the dashboard build has an index.html"),
    };
    // Vite names built assets by content hash: they never change.
    let cache = if path.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut response = (StatusCode::OK, bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_is_embedded_with_an_index() {
        assert!(
            UI_ASSETS
                .iter()
                .any(|(p, t, _)| *p == "index.html" && t.starts_with("text/html"))
        );
        assert!(
            UI_ASSETS
                .iter()
                .any(|(p, _, _)| p.starts_with("assets/") && p.ends_with(".js"))
        );
    }

    #[test]
    fn app_routes_fall_back_to_the_index_but_missing_assets_do_not() {
        assert_eq!(asset("runs/0190").status(), StatusCode::OK);
        assert_eq!(asset("assets/nope.js").status(), StatusCode::NOT_FOUND);
    }
}
