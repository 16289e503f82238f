//! GraphiQL offline (issue 16 point 1): the browser resolves nothing but 127.0.0.1, so the page
//! works only if everything it needs is served by the binary. Without a token it says what to do;
//! after signing in on the dashboard in the same tab the header is prefilled and a query runs; a
//! changed Authorization header fetches the schema again. No Content-Security-Policy violation.
use super::*;

/// Collects CSP violations from the first moment of every page (before the page's own scripts).
const CSP_RECORDER: &str = "window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', (e) => window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`));";

/// The headers editor: of the editor tools (variables, then headers) the last one not marked
/// `hidden` (GraphiQL keeps its CodeMirror 5 instances on their wrappers).
const HEADERS_EDITOR: &str =
    "const editors = [...document.querySelectorAll('.graphiql-editor-tool .CodeMirror')].filter((e) => !e.closest('.hidden'));
return editors.length ? editors[editors.length - 1].CodeMirror : null;";

async fn bar_state(c: &Client) -> TestResult<(String, String)> {
    let bar = c.find(Locator::Id("auth-bar")).await?;
    Ok((bar.attr("data-state").await?.unwrap_or_default(), bar.text().await?))
}

async fn wait_for_bar(c: &Client, state: &str, containing: &str) -> TestResult<String> {
    eventually(&format!("the GraphiQL bar to say {state} ({containing})"), 20, || async {
        let (s, text) = bar_state(c).await?;
        Ok((s == state && text.contains(containing)).then_some(text))
    })
    .await
}

async fn set_headers(c: &Client, text: &str) -> TestResult {
    let script = format!("const cm = (() => {{ {HEADERS_EDITOR} }})(); if (!cm) return false; cm.setValue(arguments[0]); return true;");
    eventually("the headers editor", 10, || async { Ok(js(c, &script, vec![json!(text)]).await?.as_bool().filter(|b| *b)) })
        .await
        .map(|_| ())
}

async fn graphiql_flow(c: &Client, browser: &BrowserProcesses, app: &TestApp, tenant: &str) -> TestResult {
    cdp(c, browser, "Page.addScriptToEvaluateOnNewDocument", json!({"source": CSP_RECORDER})).await?;

    // No token: GraphiQL renders (offline) and says what to do.
    c.goto(&format!("{}/graphql", app.address)).await?;
    c.wait().at_most(Duration::from_secs(20)).for_element(Locator::Css(".graphiql-container")).await?;
    let hint = wait_for_bar(c, "missing", "No token").await?;
    assert!(hint.contains("Authorization") && hint.contains("api token"), "{hint}");
    screenshot(c, "graphiql-no-token.png").await?;

    // Sign in on the dashboard; its GraphiQL link opens GraphiQL in this tab with the token.
    sign_in(c, &app.address, &token(tenant, &["operator"]), tenant).await?;
    click(c, "the dashboard's GraphiQL link", "a[href=\"/graphql\"]").await?;
    c.wait().at_most(Duration::from_secs(20)).for_element(Locator::Css(".graphiql-container")).await?;
    let ok = wait_for_bar(c, "ok", "dashboard's token").await?;
    assert!(ok.contains(tenant) && ok.contains("operator"), "{ok}");
    let headers = eventually("the prefilled headers", 10, || async {
        let v = js(c, &format!("const cm = (() => {{ {HEADERS_EDITOR} }})(); return cm ? cm.getValue() : null;"), vec![]).await?;
        if v.is_null() {
            let debug = js(c, "return [...document.querySelectorAll('.CodeMirror')].map((e) => `${e.parentElement.className}|${e.closest('section') ? e.closest('section').className : '-'}|${!!e.CodeMirror}|${e.getClientRects().length}|${e.offsetParent ? 'p' : 'no-p'}`).join('; ');", vec![]).await?;
            return Err(format!("no visible headers editor: {debug}").into());
        }
        match v.as_str().filter(|t| t.contains("Bearer ")) {
            Some(t) => Ok(Some(t.to_string())),
            None => Err(format!("headers editor holds {v}").into()),
        }
    })
    .await?;
    assert!(headers.contains("\"Authorization\""), "{headers}");

    // Run the default query ({ me … }): the answer names the tenant.
    click(c, "the run button", ".graphiql-execute-button").await?;
    let answer = eventually("the query's answer", 20, || async {
        let v =
            js(c, "const cm = document.querySelector('.result-window .CodeMirror'); return cm ? cm.CodeMirror.getValue() : '';", vec![])
                .await?;
        Ok(v.as_str().filter(|t| t.contains("tenantId")).map(str::to_string))
    })
    .await?;
    assert!(answer.contains(&format!("\"tenantId\": \"{tenant}\"")) && answer.contains("workersAlive"), "{answer}");
    screenshot(c, "graphiql.png").await?;

    // A changed Authorization header fetches the schema again: a bad token is refused, another
    // tenant's viewer token is taken.
    set_headers(c, "{\"Authorization\": \"Bearer not-a-token\"}").await?;
    let refused = wait_for_bar(c, "rejected", "rejected the token").await?;
    assert!(!refused.contains(tenant), "{refused}");
    let other = "graphiql-other";
    set_headers(c, &format!("{{\"Authorization\": \"Bearer {}\"}}", token(other, &["viewer"]))).await?;
    let accepted = wait_for_bar(c, "ok", "Token accepted").await?;
    assert!(accepted.contains(other) && accepted.contains("viewer"), "{accepted}");

    // Everything came from the app; nothing was refused by the page's CSP.
    let resources = js(c, "return performance.getEntriesByType('resource').map((e) => e.name);", vec![]).await?;
    let resources: Vec<String> = serde_json::from_value(resources)?;
    assert!(resources.iter().any(|r| r.ends_with("/graphiql/vendor/graphiql.min.js")), "{resources:?}");
    assert!(resources.iter().all(|r| r.starts_with(&app.address) || r.starts_with("data:")), "loaded from elsewhere: {resources:?}");
    let violations = js(c, "return window.__cspViolations || ['no recorder'];", vec![]).await?;
    assert_eq!(violations, json!([]), "CSP violations on the GraphiQL page");
    Ok(())
}

#[tokio::test]
async fn graphiql_works_offline_with_the_dashboard_token_and_refetches_the_schema() {
    let Some((driver, chromium)) = browser_tools() else { return };
    let app = spawn_app().await;
    let (guard, client) = open_browser(&driver, &chromium).await.expect("start chromedriver and Chromium");
    let outcome = graphiql_flow(&client, &guard, &app, "acme-graphiql").await;
    if outcome.is_err() {
        let _ = screenshot(&client, "graphiql-failure.png").await;
    }
    let _ = client.close().await;
    drop(guard);
    outcome.expect("the GraphiQL flow");
    app.shutdown().await;
}
