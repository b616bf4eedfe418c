//! `/docs`: the Resource API's interactive docs page (the seed's PEP-UC-007). A small page of
//! this repository's own (control-plane/assets/docs), embedded in the binary so it works
//! offline: it reads `/openapi.json` from the same server, lists every operation (method, path,
//! summary, parameters, request body schema, responses), takes a pasted bearer token and sends
//! a "try it out" request per operation, showing the status and the body.
//!
//! Every answer carries a strict Content-Security-Policy: scripts and styles only from this
//! origin (no inline script: the script and the style sheet are routes of their own), requests
//! only to this origin, Trusted Types required (the page builds its DOM without `innerHTML`),
//! no framing, no form posts.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("../assets/docs/index.html");
const APP_JS: &str = include_str!("../assets/docs/app.js");
const APP_CSS: &str = include_str!("../assets/docs/app.css");
const FAVICON_SVG: &str = include_str!("../assets/docs/favicon.svg");

/// The policy of the page and of each of its assets.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; \
     require-trusted-types-for 'script'";

/// The page's routes, to merge into the Resource API's router (they need no state).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/docs", get(index))
        .route("/docs/", get(index))
        .route("/docs/app.js", get(app_js))
        .route("/docs/app.css", get(app_css))
        .route("/docs/favicon.svg", get(favicon))
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

async fn favicon() -> Response {
    asset("image/svg+xml", FAVICON_SVG)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY)),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
            (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
            // Embedded in the binary: an upgrade changes them, so revalidate each time.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn start() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, routes::<()>()).await.unwrap() });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn page_and_assets_have_their_types_and_the_policy() {
        let base = start().await;
        for (path, ty, marker) in [
            ("/docs", "text/html; charset=utf-8", "<script src=\"/docs/app.js\""),
            ("/docs/", "text/html; charset=utf-8", "<link rel=\"stylesheet\" href=\"/docs/app.css\">"),
            ("/docs/app.js", "text/javascript; charset=utf-8", "/openapi.json"),
            ("/docs/app.css", "text/css; charset=utf-8", ".op"),
            ("/docs/favicon.svg", "image/svg+xml", "<svg"),
        ] {
            let r = reqwest::get(format!("{base}{path}")).await.unwrap();
            assert_eq!(r.status(), 200, "{path}");
            assert_eq!(r.headers()["content-type"], ty, "{path}");
            assert_eq!(r.headers()["content-security-policy"], CONTENT_SECURITY_POLICY, "{path}");
            assert_eq!(r.headers()["x-content-type-options"], "nosniff", "{path}");
            assert!(r.text().await.unwrap().contains(marker), "{path}");
        }
        assert_eq!(reqwest::get(format!("{base}/docs/other.js")).await.unwrap().status(), 404);
    }

    #[test]
    fn the_page_has_no_inline_script_or_style_and_nothing_from_elsewhere() {
        let html = INDEX_HTML.to_ascii_lowercase();
        assert_eq!(html.matches("<script").count(), 1);
        assert!(html.contains("<script src=\"/docs/app.js\" defer></script>"));
        assert!(!html.contains("<style") && !html.contains(" style="));
        // No event handler attribute (`onclick=`...).
        assert!(!html.split_whitespace().any(|w| w.starts_with("on")
            && w.split_once('=').is_some_and(|(name, _)| name.chars().all(|c| c.is_ascii_alphabetic()))));
        for page in [INDEX_HTML, APP_JS, APP_CSS] {
            assert!(!page.contains("http://") && !page.contains("https://") && !page.contains("//cdn"));
        }
        for sink in
            [".innerHTML", ".outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"]
        {
            assert!(!APP_JS.contains(sink), "{sink}");
        }
    }
}
