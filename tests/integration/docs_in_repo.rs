//! The product's documentation lives in this repository: no file refers to material outside it
//! (the specification the project started from is not shipped; README and docs/ say it all).
use std::path::{Path, PathBuf};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if path.is_dir() {
            // Build output, git's own files, and vendored third-party assets are not ours.
            if !matches!(name.as_str(), "target" | ".git" | "vendor" | "node_modules" | "data") {
                files(&path, out);
            }
        } else if [".rs", ".md", ".toml", ".graphql", ".html", ".js", ".css", ".sh", ".yml", ".yaml", "run"]
            .iter()
            .any(|ext| name.ends_with(ext))
        {
            out.push(path);
        }
    }
}

#[test]
fn no_file_refers_to_documents_outside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut all = Vec::new();
    files(&root, &mut all);
    assert!(all.len() > 50, "walked the repository: {} files", all.len());
    // Spelled in pieces so that this file does not match itself.
    let outside = [format!("../{}/", "shared"), format!("{} §", "SPEC"), format!("{}.md", "SPEC")];
    let mut found = Vec::new();
    for path in &all {
        let Ok(text) = std::fs::read_to_string(path) else { continue };
        for (n, line) in text.lines().enumerate() {
            if outside.iter().any(|o| line.contains(o.as_str())) {
                found.push(format!("{}:{}: {}", path.strip_prefix(&root).unwrap_or(path).display(), n + 1, line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "references to documents outside the repository:\n{}", found.join("\n"));
}
