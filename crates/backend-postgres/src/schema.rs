//! The schema: migrations, applying them, and checking a database against them.

use std::fmt;

use popgate_store::StoreError;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPool;

use crate::{PgConfig, db_error, valid_schema_name};

/// This crate's `migrations/`, embedded at build time.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The newest migration this binary knows.
pub fn latest_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// How a database's schema compares with this binary's migrations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SchemaStatus {
    /// Every migration this binary knows is applied.
    Current,
    /// Newer migrations are applied too (a newer popgate migrated it);
    /// they only add, so this binary works on it.
    Ahead { applied: i64, known: i64 },
    /// Migrations are missing: `popgate migrate` has to run first.
    Behind { applied: Option<i64>, known: i64 },
}

impl fmt::Display for SchemaStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemaStatus::Current => write!(f, "schema is current"),
            SchemaStatus::Ahead { applied, known } => write!(
                f,
                "schema is at migration {applied}, newer than this popgate's {known}"
            ),
            SchemaStatus::Behind {
                applied: None,
                known,
            } => write!(
                f,
                "schema has no popgate migrations applied (this popgate needs {known}): run `popgate migrate --config FILE`"
            ),
            SchemaStatus::Behind {
                applied: Some(applied),
                known,
            } => write!(
                f,
                "schema is at migration {applied}, behind this popgate's {known}: run `popgate migrate --config FILE`"
            ),
        }
    }
}

/// Compares the schema on the pool's `search_path` with [`MIGRATOR`].
pub async fn schema_status(pool: &PgPool) -> Result<SchemaStatus, StoreError> {
    let err = |e: sqlx::Error| db_error("checking the schema", &e);
    let known = latest_version();
    // to_regclass honours the search_path, as sqlx's migrator does.
    let has_table: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await
        .map_err(err)?;
    if !has_table {
        return Ok(SchemaStatus::Behind {
            applied: None,
            known,
        });
    }
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(pool)
            .await
            .map_err(err)?;
    let missing = MIGRATOR
        .iter()
        .any(|m| m.migration_type.is_up_migration() && !applied.contains(&m.version));
    let newest = applied.iter().copied().max();
    Ok(match newest {
        _ if missing => SchemaStatus::Behind {
            applied: newest,
            known,
        },
        Some(a) if a > known => SchemaStatus::Ahead { applied: a, known },
        _ => SchemaStatus::Current,
    })
}

/// Creates the schema if needed and applies the pending migrations.
/// Returns the versions applied by this call.
pub async fn migrate(config: &PgConfig) -> Result<Vec<i64>, String> {
    if !valid_schema_name(&config.schema) {
        return Err(format!("invalid schema name {:?}", config.schema));
    }
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(config.connect_timeout)
        .connect_with(config.connect_options()?)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let result = async {
        // The name is checked above: lower-case letters, digits, '_'.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS {}",
            config.schema
        )))
        .execute(&pool)
        .await
        .map_err(|e| format!("cannot create schema {}: {e}", config.schema))?;
        let before: Vec<i64> = match schema_status(&pool).await {
            Ok(SchemaStatus::Behind { applied: None, .. }) => Vec::new(),
            _ => sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&pool)
                .await
                .map_err(|e| format!("cannot read the applied migrations: {e}"))?,
        };
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| format!("migration failed: {e}"))?;
        Ok(MIGRATOR
            .iter()
            .map(|m| m.version)
            .filter(|v| !before.contains(v))
            .collect())
    }
    .await;
    pool.close().await;
    result
}
