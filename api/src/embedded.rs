//! The embedded default (README: Quick start, Configuration): with a SQLite `DATABASE_URL` (the default,
//! `./data/consumption-sync.db`) the process needs no configuration. The directory of the database
//! file is created, and a JWT secret and a `SECRETS_KEY` that are not set in the environment are
//! generated on first start into files next to the database (mode 0600) and read back on later
//! starts — so tokens and encrypted ConnectWise keys stay valid across restarts.
use std::{
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::{ExposeSecret, SecretString};
use sync_core::{Settings, crypto::SecretBox};

/// File of the generated HS256 secret, next to the database.
pub const JWT_SECRET_FILE: &str = "jwt-secret";
/// File of the generated `SECRETS_KEY`, next to the database.
pub const SECRETS_KEY_FILE: &str = "secrets-key";
/// Validity of the development admin token printed at start.
pub const DEV_TOKEN_DAYS: i64 = 30;
/// The tenant of the development admin token (and of `--demo`).
pub const DEV_TENANT: &str = "demo";

/// What [`prepare`] did.
#[derive(Clone, Debug, Default)]
pub struct Embedded {
    /// The directory of the database file (`None` for an in-memory database).
    pub data_dir: Option<PathBuf>,
    /// Key files created by this start (empty on later starts).
    pub generated: Vec<PathBuf>,
    /// Key files read back from an earlier start.
    pub reused: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir { path: PathBuf, source: io::Error },
    #[error("cannot read or create the key file {path}: {source}")]
    KeyFile { path: PathBuf, source: io::Error },
    #[error(
        "the key file {path} is empty or invalid ({reason}); restore it, or delete it to generate a new key (ConnectWise private keys stored under the old SECRETS_KEY must then be entered again)"
    )]
    BadKeyFile { path: PathBuf, reason: String },
}

/// The database file of a SQLite URL (`sqlite://./data/x.db?mode=rwc` → `./data/x.db`), `None`
/// for an in-memory database or another scheme.
pub fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() || path == ":memory:" || query.split('&').any(|kv| kv == "mode=memory") {
        return None;
    }
    Some(PathBuf::from(path))
}

/// Make a SQLite deployment runnable without configuration: create the database's directory and
/// fill in a JWT secret (unless JWT keys are configured) and a `SECRETS_KEY` (unless set) from
/// key files next to the database, generating them on first start. No-op on PostgreSQL.
pub fn prepare(settings: &mut Settings) -> Result<Embedded, EmbeddedError> {
    if settings.is_postgres() {
        return Ok(Embedded::default());
    }
    let Some(file) = sqlite_file(&settings.database_url) else {
        // In memory: nothing survives the process anyway, so keys need not either.
        if !settings.jwt.has_keys() {
            settings.jwt.hs256_secret = Some(SecretString::from(SecretBox::generate_key_base64()));
        }
        if settings.secrets_key.is_none() {
            settings.secrets_key = Some(SecretString::from(SecretBox::generate_key_base64()));
        }
        return Ok(Embedded::default());
    };
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    create_private_dir(&dir).map_err(|source| EmbeddedError::DataDir { path: dir.clone(), source })?;
    let mut out = Embedded { data_dir: Some(dir.clone()), ..Default::default() };
    if !settings.jwt.has_keys() {
        let path = dir.join(JWT_SECRET_FILE);
        let (secret, created) = load_or_create(&path, SecretBox::generate_key_base64)?;
        if secret.len() < 32 {
            return Err(EmbeddedError::BadKeyFile { path, reason: "shorter than 32 characters".into() });
        }
        settings.jwt.hs256_secret = Some(SecretString::from(secret));
        if created { out.generated.push(path) } else { out.reused.push(path) }
    }
    if settings.secrets_key.is_none() {
        let path = dir.join(SECRETS_KEY_FILE);
        let (key, created) = load_or_create(&path, SecretBox::generate_key_base64)?;
        let key = SecretString::from(key);
        if let Err(e) = SecretBox::from_base64(&key) {
            return Err(EmbeddedError::BadKeyFile { path, reason: e.to_string() });
        }
        settings.secrets_key = Some(key);
        if created { out.generated.push(path) } else { out.reused.push(path) }
    }
    Ok(out)
}

/// `mkdir -p` with mode 0700 for the directories it creates: the database holds customer data and
/// the key files sit beside it. An existing directory is left as it is.
fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Read the trimmed contents of `path`, or create it (mode 0600, never overwriting: two processes
/// starting together agree on one key) with `generate()`. Returns the value and whether it was created.
fn load_or_create(path: &Path, generate: impl FnOnce() -> String) -> Result<(String, bool), EmbeddedError> {
    let err = |source| EmbeddedError::KeyFile { path: path.to_path_buf(), source };
    match fs::read_to_string(path) {
        Ok(existing) => {
            warn_if_readable_by_others(path);
            return Ok((existing.trim().to_string(), false));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let value = generate();
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(mut f) => {
            f.write_all(value.as_bytes()).and_then(|()| f.write_all(b"\n")).and_then(|()| f.sync_all()).map_err(err)?;
            Ok((value, true))
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok((fs::read_to_string(path).map_err(err)?.trim().to_string(), false)),
        Err(e) => Err(err(e)),
    }
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(path = %path.display(), "key file is readable by other users; chmod 600 it");
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// A development token: HS256 under `secret`, subject `dev-admin`, tenant [`DEV_TENANT`], role
/// `admin`, valid [`DEV_TOKEN_DAYS`] days.
pub fn dev_admin_token(secret: &SecretString, now: chrono::DateTime<chrono::Utc>) -> Result<String, jsonwebtoken::errors::Error> {
    let now = now.timestamp();
    let claims = serde_json::json!({
        "sub": "dev-admin",
        "tenant": DEV_TENANT,
        "roles": ["admin"],
        "iat": now,
        "exp": now + DEV_TOKEN_DAYS * 86_400,
    });
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.expose_secret().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_file_of_urls() {
        assert_eq!(sqlite_file("sqlite://./data/consumption-sync.db?mode=rwc"), Some(PathBuf::from("./data/consumption-sync.db")));
        assert_eq!(sqlite_file("sqlite:///var/lib/csync/db.sqlite"), Some(PathBuf::from("/var/lib/csync/db.sqlite")));
        assert_eq!(sqlite_file("sqlite:x.db"), Some(PathBuf::from("x.db")));
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("sqlite://file.db?mode=memory"), None);
        assert_eq!(sqlite_file("postgres://h/db"), None);
    }

    #[test]
    fn keys_are_generated_once_with_mode_600_and_reused() {
        let dir = std::env::temp_dir().join(format!("csync-embedded-{}", uuid::Uuid::new_v4().simple()));
        let url = format!("sqlite://{}/sub/db.sqlite?mode=rwc", dir.display());
        let vars = [("DATABASE_URL".to_string(), url)].into_iter().collect();
        let mut first = Settings::from_vars(&vars).expect("settings");
        let e = prepare(&mut first).expect("prepare");
        assert_eq!(e.generated.len(), 2, "{e:?}");
        let sub = dir.join("sub");
        for f in [JWT_SECRET_FILE, SECRETS_KEY_FILE] {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                assert_eq!(fs::metadata(sub.join(f)).expect("file").permissions().mode() & 0o777, 0o600, "{f}");
            }
        }
        let mut second = Settings::from_vars(&vars).expect("settings");
        let e = prepare(&mut second).expect("prepare");
        assert!(e.generated.is_empty() && e.reused.len() == 2, "{e:?}");
        let secret = |s: &Settings| s.jwt.hs256_secret.as_ref().map(|k| k.expose_secret().to_string());
        assert_eq!(secret(&first), secret(&second));
        assert_eq!(
            first.secrets_key.as_ref().map(|k| k.expose_secret().to_string()),
            second.secrets_key.as_ref().map(|k| k.expose_secret().to_string())
        );
        // A damaged key file is refused with a message naming it, not replaced.
        fs::write(sub.join(SECRETS_KEY_FILE), "not a key").expect("write");
        let err = prepare(&mut Settings::from_vars(&vars).expect("settings")).expect_err("bad key").to_string();
        assert!(err.contains(SECRETS_KEY_FILE), "{err}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn configured_keys_are_kept() {
        let dir = std::env::temp_dir().join(format!("csync-embedded-{}", uuid::Uuid::new_v4().simple()));
        let vars = [
            ("DATABASE_URL".to_string(), format!("sqlite://{}/db.sqlite?mode=rwc", dir.display())),
            ("JWT_SECRET".to_string(), "a-configured-secret-that-is-long-enough".to_string()),
        ]
        .into_iter()
        .collect();
        let mut s = Settings::from_vars(&vars).expect("settings");
        let e = prepare(&mut s).expect("prepare");
        assert_eq!(e.generated, vec![dir.join(SECRETS_KEY_FILE)]);
        assert_eq!(
            s.jwt.hs256_secret.as_ref().map(|k| k.expose_secret().to_string()).as_deref(),
            Some("a-configured-secret-that-is-long-enough")
        );
        let _ = fs::remove_dir_all(&dir);
    }
}
