//! Connecting and migrating.
use std::time::Duration;

use migration::{MIGRATION_LOCK_KEY, Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, Statement, TransactionTrait};

/// Open a pool. SQLite gets WAL and a busy timeout so the API, the in-process worker and the
/// apalis-sqlite queue (on this same pool) can share it.
pub async fn connect(url: &str, max_connections: u32) -> Result<DatabaseConnection, DbErr> {
    use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
    let mut opt = ConnectOptions::new(url.to_string());
    opt.max_connections(max_connections)
        .min_connections(1)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(10))
        .sqlx_logging(false)
        // Connection options, so every pooled connection gets them (a `PRAGMA` statement would
        // only reach the one connection that happened to run it).
        .map_sqlx_sqlite_opts(|o| {
            o.journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
                .synchronous(SqliteSynchronous::Normal)
        });
    Database::connect(opt).await
}

/// Apply pending migrations. On PostgreSQL under an advisory lock, so that several processes
/// starting together migrate one after the other instead of racing.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    if db.get_database_backend() != DbBackend::Postgres {
        return Migrator::up(db, None).await;
    }
    // A transaction-scoped advisory lock: released by commit or rollback, even if we crash.
    let txn = db.begin().await?;
    txn.execute_raw(Statement::from_sql_and_values(DbBackend::Postgres, "SELECT pg_advisory_xact_lock($1)", [MIGRATION_LOCK_KEY.into()]))
        .await?;
    match Migrator::up(&txn, None).await {
        Ok(()) => txn.commit().await,
        Err(e) => {
            txn.rollback().await?;
            Err(e)
        }
    }
}
