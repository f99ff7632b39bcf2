//! What the coordinator asks of PostgreSQL per task: statements (pg_stat_statements'
//! `calls`, BEGIN and COMMIT included) and transactions (pg_stat_database's commits and
//! rollbacks), read on the coordinator's database server.
//!
//! The bench connects to the server's `postgres` database, so its own statements are not
//! counted with the coordinator's database. pg_stat_statements is counted as statements
//! finish; pg_stat_database only when a backend flushes its figures, which an idle backend
//! may put off for 10 s (PostgreSQL 15 and later): [`SETTLE`] is waited before each
//! reading of transactions.

use super::error::BenchError;
use std::time::Duration;

/// How long an idle backend may hold its transaction counts before it reports them.
pub(super) const SETTLE: Duration = Duration::from_secs(11);

/// A connection for reading the statistics of the coordinator's database.
pub(super) struct PgStats {
    client: postgres::Client,
    dbname: String,
}

fn db_error(what: &'static str) -> impl FnOnce(postgres::Error) -> BenchError {
    move |source| BenchError::Database { what, source }
}

impl PgStats {
    /// Connects to `url`'s server (database `postgres`) and makes sure pg_stat_statements
    /// can be read.
    pub(super) fn connect(url: &str) -> Result<PgStats, BenchError> {
        let mut config: postgres::Config = url.parse().map_err(db_error("--db is not a PostgreSQL URL"))?;
        let dbname = config.get_dbname().unwrap_or("postgres").to_string();
        config.dbname("postgres").connect_timeout(Duration::from_secs(5)).application_name("mito-bench");
        let mut client = config.connect(postgres::NoTls).map_err(db_error("cannot connect to --db's server"))?;
        client.batch_execute("SET statement_timeout = '30s'").map_err(db_error("cannot set a statement timeout"))?;
        client.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements").map_err(db_error(
            "pg_stat_statements is not available (start PostgreSQL with shared_preload_libraries=pg_stat_statements)",
        ))?;
        let mut s = PgStats { client, dbname };
        s.statements()?;
        Ok(s)
    }

    /// Forgets the statements counted so far.
    pub(super) fn reset_statements(&mut self) -> Result<(), BenchError> {
        self.client
            .execute("SELECT pg_stat_statements_reset()", &[])
            .map_err(db_error("cannot reset pg_stat_statements (the bench needs a superuser)"))?;
        Ok(())
    }

    /// Statements run in the coordinator's database since the last reset.
    pub(super) fn statements(&mut self) -> Result<u64, BenchError> {
        let row = self
            .client
            .query_one(
                "SELECT coalesce(sum(s.calls), 0)::int8 FROM pg_stat_statements s
                 JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = $1",
                &[&self.dbname],
            )
            .map_err(db_error("cannot read pg_stat_statements"))?;
        Ok(row.get::<_, i64>(0).max(0) as u64)
    }

    /// Transactions committed or rolled back in the coordinator's database, as reported.
    pub(super) fn transactions(&mut self) -> Result<u64, BenchError> {
        // A fresh snapshot: within a transaction the statistics would not change.
        self.client
            .batch_execute("SELECT pg_stat_clear_snapshot()")
            .map_err(db_error("cannot read pg_stat_database"))?;
        let row = self
            .client
            .query_one(
                "SELECT coalesce(sum(xact_commit + xact_rollback), 0)::int8 FROM pg_stat_database WHERE datname = $1",
                &[&self.dbname],
            )
            .map_err(db_error("cannot read pg_stat_database"))?;
        Ok(row.get::<_, i64>(0).max(0) as u64)
    }
}
