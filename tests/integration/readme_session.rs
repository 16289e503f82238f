//! The README's curl session, run as written (issue 16 point 3): the ```sh blocks of the section
//! "A GraphQL session with curl", up to the next heading, run with bash against the real `api`
//! binary started with `--demo` on a temporary data directory. The only change made to the text is
//! the port. The extraction knows nothing about what the session does, so the README can change.
use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::json;

use crate::{
    config_errors::{api_binary, temp_dir},
    embedded::Embedded,
};

const SECTION: &str = "## A GraphQL session with curl";
/// The address the README's commands use (the default `BIND_ADDR`).
const README_ADDRESS: &str = "127.0.0.1:8080";

/// The bodies of the ```sh blocks of the section headed exactly `heading`, up to the next heading
/// of any level (outside code blocks).
pub fn shell_blocks(markdown: &str, heading: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut in_section = false;
    let mut fence: Option<(bool, String)> = None; // (is a sh block, its text so far)
    for line in markdown.lines() {
        if let Some((is_sh, text)) = fence.as_mut() {
            if line.trim_start().starts_with("```") {
                if *is_sh && in_section {
                    blocks.push(std::mem::take(text));
                }
                fence = None;
            } else {
                text.push_str(line);
                text.push('\n');
            }
            continue;
        }
        if let Some(info) = line.trim_start().strip_prefix("```") {
            fence = Some((info.trim() == "sh", String::new()));
        } else if line.starts_with('#') {
            if in_section {
                break;
            }
            in_section = line.trim_end() == heading;
        }
    }
    blocks
}

#[test]
fn shell_blocks_are_those_of_the_section_only() {
    let md = "# T\n```sh\nnot this\n```\n## A\ntext\n```sh\none\n```\n```json\n{}\n```\n```sh\n# a comment\ntwo\n```\n### B\n```sh\nnot this either\n```\n";
    assert_eq!(shell_blocks(md, "## A"), vec!["one\n".to_string(), "# a comment\ntwo\n".to_string()]);
    assert!(shell_blocks(md, "## Missing").is_empty());
}

#[tokio::test]
async fn the_readme_curl_session_runs_verbatim_against_the_demo() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).expect("README.md");
    let blocks = shell_blocks(&readme, SECTION);
    assert!(blocks.len() >= 5, "the README's section {SECTION:?} has {} sh blocks", blocks.len());
    let script = blocks.join("\n");
    assert!(script.contains(README_ADDRESS), "the session should talk to {README_ADDRESS}");
    for tool in ["bash", "curl", "jq"] {
        let found = Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
        assert!(found, "the README's session needs {tool} (apt-get install -y {tool})");
    }

    // The demo on a pinned calendar (its latest closed month is July 2026); the printed summary
    // comes once it has pushed that month to its sandbox ConnectWise.
    let dir = temp_dir("readme");
    let clock_start = integration_tests::test_epoch().to_rfc3339();
    let demo = Embedded::start_with(&dir, &[("CLOCK_START", &clock_start)], &["--demo"]);
    demo.wait_for("See it at", Duration::from_secs(120));
    let address = demo.graphql.trim_start_matches("http://").trim_end_matches("/graphql").to_string();
    assert!(address.starts_with("127.0.0.1:"), "{address}");

    // The README's commands run from the repository's root, where `cargo run --release` built
    // `target/release/api` and keeps `./data`: the same layout here, with the binary under test.
    std::fs::create_dir_all(dir.join("target/release")).expect("target/release");
    std::os::unix::fs::symlink(api_binary(), dir.join("target/release/api")).expect("symlink the api binary");
    let script = script.replace(README_ADDRESS, &address);
    let (stdout_path, stderr_path) = (dir.join("session.out"), dir.join("session.err"));
    let mut bash = Command::new("bash");
    bash.arg("-c").arg(format!("set -euo pipefail\n{script}")).current_dir(&dir).env_clear();
    for key in ["PATH", "HOME", "LANG"] {
        if let Ok(v) = std::env::var(key) {
            bash.env(key, v);
        }
    }
    // The same calendar for the tokens `api token` signs.
    bash.env("CLOCK_START", &clock_start)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"));
    let mut child = bash.spawn().expect("bash");
    let deadline = Instant::now() + Duration::from_secs(240);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for bash") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    let err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(status.is_some_and(|s| s.success()), "the README's session failed ({status:?}):\n--- stdout\n{out}\n--- stderr\n{err}");
    eprintln!("the README's session printed {} lines", out.lines().count());

    // What the session did, read back through the API.
    let state = demo
        .gql(
            "{ connectWiseSettings { consumptionSyncEnabled }
               syncRuns(first: 1) { edges { node { id dryRun status customerIds
                 pushes(first: 10) { edges { node { status skipReason method quantity customer { accountName } } } } } } } }",
            json!({}),
        )
        .await;
    assert_eq!(state["connectWiseSettings"]["consumptionSyncEnabled"], true, "the demo keeps sync on: {state}");
    let run = &state["syncRuns"]["edges"][0]["node"];
    assert_eq!((run["dryRun"].clone(), run["status"].clone()), (json!(true), json!("SUCCEEDED")), "{state}");
    assert_eq!(run["customerIds"].as_array().map(Vec::len), Some(1), "{state}");
    let pushes = run["pushes"]["edges"].as_array().cloned().unwrap_or_default();
    assert!(!pushes.is_empty(), "{state}");
    for p in &pushes {
        let p = &p["node"];
        assert_eq!((p["status"].as_str(), p["skipReason"].as_str()), (Some("SKIPPED"), Some("DRY_RUN")), "{p}");
        assert_eq!(p["customer"]["accountName"], "Wingtip Realty", "{p}");
    }
    // The late report of 400 users on the 15th is the month's peak under MAXIMUM.
    assert!(pushes.iter().any(|p| p["node"]["method"] == "MAXIMUM" && p["node"]["quantity"] == 400), "{pushes:?}");
    assert!(out.contains("\"skipReason\": \"DRY_RUN\""), "the session shows its pushes:\n{out}");
    assert!(out.contains("\"trigger\": \"SCHEDULED\""), "the session shows the demo's monthly run:\n{out}");
    assert_eq!(demo.stop(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
