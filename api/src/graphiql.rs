//! GraphiQL, served from the binary: the page, its start script and stylesheet (ours), and the
//! production builds of React, ReactDOM and GraphiQL that `api/graphiql/vendor.sh` copied from the
//! npm packages `api/graphiql/package-lock.json` pins (`static/graphiql/vendor/MANIFEST.json` says
//! which file came from where; a test checks the files against it and the lockfile). Nothing is
//! loaded from elsewhere, so it works offline, under a Content-Security-Policy without inline script.
//!
//! Served only while `GRAPHQL_INTROSPECTION` is on (as the page needs the schema).
use std::sync::LazyLock;

use actix_web::{HttpRequest, HttpResponse, http::header, web};
use sha2::{Digest, Sha256};

use crate::http::HttpState;

const PAGE: &str = include_str!("../static/graphiql/index.html");

/// One embedded file: its URL path under `/graphiql/`, content type and bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset { path: "start.js", content_type: "text/javascript; charset=utf-8", body: include_bytes!("../static/graphiql/start.js") },
    Asset { path: "page.css", content_type: "text/css; charset=utf-8", body: include_bytes!("../static/graphiql/page.css") },
    Asset {
        path: "vendor/react.production.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../static/graphiql/vendor/react.production.min.js"),
    },
    Asset {
        path: "vendor/react-dom.production.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../static/graphiql/vendor/react-dom.production.min.js"),
    },
    Asset {
        path: "vendor/graphiql.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../static/graphiql/vendor/graphiql.min.js"),
    },
    Asset {
        path: "vendor/graphiql.min.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../static/graphiql/vendor/graphiql.min.css"),
    },
];

/// Same-origin script, no inline script; GraphiQL's stylesheet embeds its fonts and icons as
/// `data:` URLs. `connect-src 'self'`: the page talks to `/graphql` only.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     font-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Strong validators of the embedded files (the SHA-256 of each body), computed once.
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| ASSETS.iter().map(|a| format!("\"{}\"", sha256_hex(a.body))).collect());

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn secured(mut builder: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    builder
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"));
    builder
}

fn disabled() -> HttpResponse {
    HttpResponse::NotFound().content_type("text/plain; charset=utf-8").body("GraphiQL is disabled (GRAPHQL_INTROSPECTION=false)")
}

/// The GraphiQL page (`GET /graphql` from a browser).
pub fn page(state: &HttpState) -> HttpResponse {
    if !state.graphiql {
        return disabled();
    }
    secured(HttpResponse::Ok()).content_type("text/html; charset=utf-8").insert_header((header::CACHE_CONTROL, "no-cache")).body(PAGE)
}

/// `GET /graphiql/{file}`: the page's script and stylesheet and the vendored assets. Revalidated
/// by ETag, so a browser downloads the 1.5 MB of GraphiQL once per binary.
pub async fn asset(req: HttpRequest, path: web::Path<String>, state: web::Data<HttpState>) -> HttpResponse {
    if !state.graphiql {
        return disabled();
    }
    let wanted = path.into_inner();
    let Some(index) = ASSETS.iter().position(|a| a.path == wanted) else {
        return HttpResponse::NotFound().content_type("text/plain; charset=utf-8").body("no such file");
    };
    let (asset, etag) = (&ASSETS[index], &ETAGS[index]);
    let matches = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut response = if matches { secured(HttpResponse::NotModified()) } else { secured(HttpResponse::Ok()) };
    response.insert_header((header::ETAG, etag.as_str())).insert_header((header::CACHE_CONTROL, "no-cache"));
    if matches { response.finish() } else { response.content_type(asset.content_type).body(asset.body) }
}

#[cfg(test)]
mod tests {
    use std::{collections::HashSet, path::Path};

    use serde_json::Value;

    use super::*;

    fn read_json(path: &Path) -> Value {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Every vendored file is what the lockfile pins: the manifest names each file's package with
    /// the lockfile's version and tarball integrity hash, `package.json` pins exactly those
    /// versions, and the committed (and embedded) bytes have the SHA-256 the manifest recorded when
    /// `vendor.sh` copied them out of the npm-verified tarball. (`vendor.sh --check` re-downloads
    /// and compares, where the registry is reachable.)
    #[test]
    fn vendored_assets_match_the_lockfile() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let lock = read_json(&root.join("graphiql/package-lock.json"));
        let package = read_json(&root.join("graphiql/package.json"));
        let manifest = read_json(&root.join("static/graphiql/vendor/MANIFEST.json"));
        let files = manifest["files"].as_array().expect("manifest files");
        let mut described = HashSet::new();
        for f in files {
            let (file, pkg, version) = (f["file"].as_str().expect("file"), f["package"].as_str().expect("package"), &f["version"]);
            let locked = &lock["packages"][format!("node_modules/{pkg}")];
            assert_eq!(&locked["version"], version, "{file}: the lockfile pins {pkg} {}", locked["version"]);
            assert_eq!(locked["integrity"], f["integrity"], "{file}: tarball integrity differs from the lockfile's");
            assert!(locked["integrity"].as_str().is_some_and(|i| i.starts_with("sha512-")), "{pkg}: no sha512 integrity");
            assert_eq!(&package["dependencies"][pkg], version, "package.json must pin {pkg} exactly");
            let bytes = std::fs::read(root.join("static/graphiql/vendor").join(file)).expect("vendored file");
            assert_eq!(f["bytes"].as_u64(), Some(bytes.len() as u64), "{file}: size");
            assert_eq!(
                f["sha256"].as_str(),
                Some(sha256_hex(&bytes).as_str()),
                "{file}: not the file vendor.sh copied; run api/graphiql/vendor.sh"
            );
            described.insert(format!("vendor/{file}"));
        }
        // What the binary serves is exactly the committed file.
        for a in ASSETS.iter().filter(|a| a.path.starts_with("vendor/")) {
            assert!(described.contains(a.path), "{} is served but not in MANIFEST.json", a.path);
            let on_disk = std::fs::read(root.join("static/graphiql").join(a.path)).expect("file");
            assert!(on_disk == a.body, "{}: the embedded bytes differ from the committed file", a.path);
        }
        // Production builds, and the versions the lockfile names.
        let text = |p: &str| String::from_utf8_lossy(ASSETS.iter().find(|a| a.path == p).expect("asset").body).into_owned();
        assert!(text("vendor/react.production.min.js").contains("react.production.min.js"));
        assert!(text("vendor/react-dom.production.min.js").contains("react-dom.production.min.js"));
        let react_version = lock["packages"]["node_modules/react"]["version"].as_str().expect("react version");
        assert!(text("vendor/react.production.min.js").contains(&format!("\"{react_version}\"")), "React {react_version}");
        assert!(!text("vendor/graphiql.min.js").contains("react.development"), "no development build");
    }

    /// The page loads only same-origin files and runs no inline script (the CSP would block it).
    #[test]
    fn the_page_needs_nothing_from_elsewhere() {
        for attr in ["src=\"", "href=\""] {
            for (i, _) in PAGE.match_indices(attr) {
                let value = &PAGE[i + attr.len()..];
                let same_origin = value.starts_with('/') && !value.starts_with("//");
                assert!(same_origin || value.starts_with("data:"), "the page loads from elsewhere: {}", &value[..value.len().min(60)]);
            }
        }
        let mut rest = PAGE;
        while let Some(i) = rest.find("<script") {
            let tag_end = rest[i..].find('>').map(|e| i + e).expect("a closed tag");
            let tag = &rest[i..tag_end];
            assert!(tag.contains("src=\"/graphiql/"), "inline or foreign script: {tag}");
            assert!(rest[tag_end + 1..].trim_start().starts_with("</script>"), "a script element with content: {tag}");
            rest = &rest[tag_end..];
        }
        assert!(!PAGE.contains("<style"), "inline style");
        for src in
            ["/graphiql/vendor/react.production.min.js", "/graphiql/vendor/graphiql.min.js", "/graphiql/start.js", "/graphiql/page.css"]
        {
            assert!(PAGE.contains(src), "the page does not load {src}");
            assert!(ASSETS.iter().any(|a| format!("/graphiql/{}", a.path) == src), "{src} is not served");
        }
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
    }
}
