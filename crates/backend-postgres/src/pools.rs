//! One pool per distinct setting, shared by the store and the directory.

use std::collections::HashMap;

use sqlx::postgres::PgPool;

use crate::PgConfig;

/// One pool per distinct setting: tenants (and a tenant's store and
/// directory) that point at the same database share connections.
#[derive(Default)]
pub struct Pools(HashMap<PgConfig, PgPool>);

impl Pools {
    /// The pool for these settings, made on first use. Needs the tokio
    /// runtime (the pool starts its maintenance task). The error is about
    /// the URL.
    pub fn get(&mut self, config: &PgConfig) -> Result<PgPool, String> {
        if let Some(pool) = self.0.get(config) {
            return Ok(pool.clone());
        }
        let pool = config.pool()?;
        self.0.insert(config.clone(), pool.clone());
        Ok(pool)
    }
}
