//! Small helpers for the hand-written, portable SQL of the engine and the consumption service.
//!
//! Statements are written once with `$N` placeholders: PostgreSQL takes them natively and sqlx's
//! SQLite driver binds `$N` by number too, so the same text runs on both. What differs per backend
//! (arrays vs. JSON lists, `UNNEST` vs. chunked `VALUES`, row locks) is isolated here.
use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, QueryResult, SqliteTransactionMode, Statement, TransactionOptions,
    TransactionTrait, Value,
};

/// Bind parameters per statement stay below this (PostgreSQL allows 65,535, SQLite 32,766).
pub(crate) const MAX_BIND_PARAMS: usize = 30_000;

pub(crate) fn is_pg<C: ConnectionTrait>(c: &C) -> bool {
    c.get_database_backend() == DbBackend::Postgres
}

pub(crate) fn stmt<C: ConnectionTrait>(c: &C, sql: &str, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(c.get_database_backend(), sql, values)
}

pub(crate) async fn exec<C: ConnectionTrait>(c: &C, sql: &str, values: Vec<Value>) -> Result<u64, DbErr> {
    Ok(c.execute_raw(stmt(c, sql, values)).await?.rows_affected())
}

pub(crate) async fn query<C: ConnectionTrait>(c: &C, sql: &str, values: Vec<Value>) -> Result<Vec<QueryResult>, DbErr> {
    c.query_all_raw(stmt(c, sql, values)).await
}

/// A write transaction. On SQLite it takes the write lock up front (`BEGIN IMMEDIATE`): a deferred
/// transaction that reads first and writes later fails with `SQLITE_BUSY` when another writer
/// committed in between, instead of waiting on the busy timeout.
pub(crate) async fn begin_write(db: &DatabaseConnection) -> Result<sea_orm::DatabaseTransaction, DbErr> {
    if db.get_database_backend() == DbBackend::Sqlite {
        db.begin_with_options(TransactionOptions { sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate), ..Default::default() })
            .await
    } else {
        db.begin().await
    }
}

/// `FOR UPDATE` where row locks exist (SQLite serialises writers through `BEGIN IMMEDIATE` instead).
pub(crate) fn for_update<C: ConnectionTrait>(c: &C) -> &'static str {
    if is_pg(c) { " FOR UPDATE" } else { "" }
}

/// `column IN <the list bound at $param>`: an array on PostgreSQL, a JSON array on SQLite; one bind
/// parameter whatever the length, so long lists never hit the parameter limit.
pub(crate) fn in_list<C: ConnectionTrait>(c: &C, column: &str, param: usize) -> String {
    if is_pg(c) { format!("{column} = ANY(${param})") } else { format!("{column} IN (SELECT value FROM json_each(${param}))") }
}

/// The value to bind for [`in_list`] with integer ids.
pub(crate) fn i64_list<C: ConnectionTrait>(c: &C, ids: &[i64]) -> Value {
    if is_pg(c) { Value::from(ids.to_vec()) } else { Value::from(serde_json::to_string(ids).unwrap_or_else(|_| "[]".into())) }
}

/// The value to bind for [`in_list`] with strings.
pub(crate) fn text_list<C: ConnectionTrait>(c: &C, items: &[String]) -> Value {
    if is_pg(c) { Value::from(items.to_vec()) } else { Value::from(serde_json::to_string(items).unwrap_or_else(|_| "[]".into())) }
}

/// One column of a [`RowSet`]. Nullable columns travel to PostgreSQL as a value array plus a null
/// mask, because sea-query's array binding cannot carry NULL elements.
pub(crate) enum Col {
    I64(Vec<i64>),
    OptI64(Vec<Option<i64>>),
    I32(Vec<i32>),
    Text(Vec<String>),
    OptText(Vec<Option<String>>),
    Bool(Vec<bool>),
    Date(Vec<NaiveDate>),
    OptDate(Vec<Option<NaiveDate>>),
    /// JSON documents (stored as `JSONB` on PostgreSQL, text on SQLite).
    OptJson(Vec<Option<serde_json::Value>>),
    #[allow(dead_code)]
    Ts(Vec<DateTime<Utc>>),
    OptTs(Vec<Option<DateTime<Utc>>>),
}

impl Col {
    fn len(&self) -> usize {
        match self {
            Col::I64(v) => v.len(),
            Col::OptI64(v) => v.len(),
            Col::I32(v) => v.len(),
            Col::Text(v) => v.len(),
            Col::OptText(v) => v.len(),
            Col::Bool(v) => v.len(),
            Col::Date(v) => v.len(),
            Col::OptDate(v) => v.len(),
            Col::OptJson(v) => v.len(),
            Col::Ts(v) => v.len(),
            Col::OptTs(v) => v.len(),
        }
    }

    /// The value of row `i` as a scalar bind parameter (SQLite path).
    fn scalar(&self, i: usize) -> Value {
        match self {
            Col::I64(v) => Value::from(v[i]),
            Col::OptI64(v) => Value::from(v[i]),
            Col::I32(v) => Value::from(v[i]),
            Col::Text(v) => Value::from(v[i].clone()),
            Col::OptText(v) => Value::from(v[i].clone()),
            Col::Bool(v) => Value::from(v[i]),
            Col::Date(v) => Value::from(v[i]),
            Col::OptDate(v) => Value::from(v[i]),
            Col::OptJson(v) => Value::from(v[i].as_ref().map(|j| j.to_string())),
            Col::Ts(v) => Value::from(v[i]),
            Col::OptTs(v) => Value::from(v[i]),
        }
    }

    /// `(array values, PostgreSQL element type, has a null mask)` (PostgreSQL path).
    fn arrays(&self) -> (Vec<Value>, &'static str, bool) {
        fn mask<T>(v: &[Option<T>]) -> Value {
            Value::from(v.iter().map(Option::is_none).collect::<Vec<bool>>())
        }
        match self {
            Col::I64(v) => (vec![Value::from(v.clone())], "int8", false),
            Col::OptI64(v) => (vec![Value::from(v.iter().map(|x| x.unwrap_or(0)).collect::<Vec<i64>>()), mask(v)], "int8", true),
            Col::I32(v) => (vec![Value::from(v.clone())], "int4", false),
            Col::Text(v) => (vec![Value::from(v.clone())], "text", false),
            Col::OptText(v) => {
                (vec![Value::from(v.iter().map(|x| x.clone().unwrap_or_default()).collect::<Vec<String>>()), mask(v)], "text", true)
            }
            Col::Bool(v) => (vec![Value::from(v.clone())], "bool", false),
            Col::Date(v) => (vec![Value::from(v.clone())], "date", false),
            Col::OptDate(v) => {
                // Any date PostgreSQL accepts; masked out anyway.
                let filler = NaiveDate::from_ymd_opt(2000, 1, 1).unwrap_or_default();
                (vec![Value::from(v.iter().map(|x| x.unwrap_or(filler)).collect::<Vec<NaiveDate>>()), mask(v)], "date", true)
            }
            Col::OptJson(v) => {
                let texts: Vec<String> = v.iter().map(|x| x.as_ref().map(|j| j.to_string()).unwrap_or_default()).collect();
                (vec![Value::from(texts), mask(v)], "text", true)
            }
            Col::Ts(v) => (vec![Value::from(v.clone())], "timestamptz", false),
            Col::OptTs(v) => {
                let filler = DateTime::<Utc>::UNIX_EPOCH;
                (vec![Value::from(v.iter().map(|x| x.unwrap_or(filler)).collect::<Vec<DateTime<Utc>>>()), mask(v)], "timestamptz", true)
            }
        }
    }

    fn is_json(&self) -> bool {
        matches!(self, Col::OptJson(_))
    }
}

/// Rows to write or join set-based: `UNNEST` of typed arrays on PostgreSQL (one statement, a
/// handful of bind parameters whatever the row count), chunked multi-row `VALUES` on SQLite.
pub(crate) struct RowSet {
    names: Vec<&'static str>,
    cols: Vec<Col>,
}

impl RowSet {
    pub(crate) fn new() -> Self {
        RowSet { names: Vec::new(), cols: Vec::new() }
    }

    pub(crate) fn col(mut self, name: &'static str, col: Col) -> Self {
        self.names.push(name);
        self.cols.push(col);
        self
    }

    pub(crate) fn len(&self) -> usize {
        self.cols.first().map(Col::len).unwrap_or(0)
    }

    pub(crate) fn column_list(&self) -> String {
        self.names.join(", ")
    }

    /// CTE definitions `name(cols) AS (…)` with their bind values, numbered from `$first_param`; one
    /// per statement to run. Empty when there are no rows.
    pub(crate) fn ctes(&self, backend: DbBackend, name: &str, first_param: usize) -> Vec<(String, Vec<Value>)> {
        let n = self.len();
        if n == 0 {
            return Vec::new();
        }
        let cols = self.column_list();
        if backend == DbBackend::Postgres {
            let mut values = Vec::new();
            let mut args = Vec::new();
            let mut aliases = Vec::new();
            let mut selects = Vec::new();
            for (name, col) in self.names.iter().zip(&self.cols) {
                let (vals, ty, masked) = col.arrays();
                let mut it = vals.into_iter();
                if let Some(v) = it.next() {
                    values.push(v);
                    args.push(format!("${}::{ty}[]", first_param + values.len() - 1));
                    aliases.push(format!("u_{name}"));
                }
                let mut expr = format!("u_{name}");
                if masked && let Some(m) = it.next() {
                    values.push(m);
                    args.push(format!("${}::bool[]", first_param + values.len() - 1));
                    aliases.push(format!("n_{name}"));
                    expr = format!("CASE WHEN n_{name} THEN NULL ELSE u_{name} END");
                }
                if col.is_json() {
                    expr = format!("CAST({expr} AS JSONB)");
                }
                selects.push(expr);
            }
            let sql =
                format!("{name}({cols}) AS (SELECT {} FROM UNNEST({}) AS u({}))", selects.join(", "), args.join(", "), aliases.join(", "));
            return vec![(sql, values)];
        }
        let width = self.cols.len().max(1);
        let per_chunk = (MAX_BIND_PARAMS.saturating_sub(first_param) / width).max(1);
        let mut out = Vec::new();
        let mut start = 0;
        while start < n {
            let end = (start + per_chunk).min(n);
            let mut values = Vec::with_capacity((end - start) * width);
            let mut rows = Vec::with_capacity(end - start);
            for i in start..end {
                let mut ph = Vec::with_capacity(width);
                for col in &self.cols {
                    values.push(col.scalar(i));
                    ph.push(format!("${}", first_param + values.len() - 1));
                }
                rows.push(format!("({})", ph.join(", ")));
            }
            out.push((format!("{name}({cols}) AS (VALUES {})", rows.join(", ")), values));
            start = end;
        }
        out
    }
}

/// `INSERT INTO table (rows' columns, constant columns) SELECT …` for every row of `rows`, in as few
/// statements as the backend allows. `consts` are bound once per statement as `$1…$k`; `suffix` may
/// hold `ON CONFLICT …` and/or `RETURNING …` (then the returned rows of all statements are given back).
pub(crate) async fn insert_rows<C: ConnectionTrait>(
    c: &C,
    table: &str,
    rows: &RowSet,
    consts: &[(&str, Value)],
    suffix: &str,
) -> Result<Vec<QueryResult>, DbErr> {
    let mut out = Vec::new();
    let mut target_cols = rows.names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut select_cols = rows.names.iter().map(|s| format!("r.{s}")).collect::<Vec<_>>();
    for (i, (name, _)) in consts.iter().enumerate() {
        target_cols.push(name.to_string());
        select_cols.push(format!("${}", i + 1));
    }
    for (cte, values) in rows.ctes(c.get_database_backend(), "r", consts.len() + 1) {
        // `WHERE TRUE`: SQLite needs it to parse `INSERT … SELECT … ON CONFLICT` unambiguously.
        let sql = format!(
            "WITH {cte} INSERT INTO {table} ({}) SELECT {} FROM r WHERE TRUE {suffix}",
            target_cols.join(", "),
            select_cols.join(", ")
        );
        let mut all: Vec<Value> = consts.iter().map(|(_, v)| v.clone()).collect();
        all.extend(values);
        if suffix.contains("RETURNING") {
            out.extend(query(c, &sql, all).await?);
        } else {
            exec(c, &sql, all).await?;
        }
    }
    Ok(out)
}

/// One audit entry for [`audit_many`].
pub(crate) struct AuditRow {
    pub tenant_id: i64,
    pub actor: String,
    pub action: &'static str,
    pub entity_type: &'static str,
    pub entity_id: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
    pub detail: Option<serde_json::Value>,
}

/// Many audit entries in one multi-row insert (set-based counterpart of `crate::audit::record`).
pub(crate) async fn audit_many<C: ConnectionTrait>(c: &C, at: DateTime<Utc>, entries: Vec<AuditRow>) -> Result<(), DbErr> {
    if entries.is_empty() {
        return Ok(());
    }
    let n = entries.len();
    let (mut tenant, mut actor, mut action, mut etype, mut eid) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut before, mut after, mut detail) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    for e in entries {
        tenant.push(e.tenant_id);
        actor.push(e.actor);
        action.push(e.action.to_string());
        etype.push(e.entity_type.to_string());
        eid.push(e.entity_id);
        before.push(e.before);
        after.push(e.after);
        detail.push(e.detail);
    }
    let rows = RowSet::new()
        .col("tenant_id", Col::I64(tenant))
        .col("actor", Col::Text(actor))
        .col("action", Col::Text(action))
        .col("entity_type", Col::Text(etype))
        .col("entity_id", Col::Text(eid))
        .col("before", Col::OptJson(before))
        .col("after", Col::OptJson(after))
        .col("detail", Col::OptJson(detail));
    insert_rows(c, "audit_log", &rows, &[("at", Value::from(at))], "").await?;
    Ok(())
}
