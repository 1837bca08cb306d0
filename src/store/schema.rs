//! The schema: embedded append-only migrations, `PRAGMA user_version`, the connection's
//! pragmas, and the checks that refuse a database newer than this binary, foreign or missing
//! tables. Must not: change a migration that has shipped (append a new one).

use super::*;

/// Embedded migrations, in order; index + 1 is the schema version each produces.
pub(super) const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_signatures.sql"),
    include_str!("migrations/0003_credentials.sql"),
    include_str!("migrations/0004_run_machine_id.sql"),
    include_str!("migrations/0005_seal.sql"),
];

/// The first schema version whose baselines carry a seal.
pub(super) const SEALED_SINCE: i64 = 5;

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

impl Store {
    /// Whether the baseline at `path` predates seals (a schema older than version 5), read
    /// without changing it (a writer's open would migrate it). `false` when it cannot tell:
    /// [`Store::open`] then reports why.
    pub fn predates_seal(path: &Path) -> bool {
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|c| c.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0)))
            .is_ok_and(|v| v > 0 && v < SEALED_SINCE)
    }

    pub(super) fn pragmas(&mut self, write: bool) -> Result<()> {
        let r = if write {
            self.conn.execute_batch(
                "PRAGMA journal_mode=WAL; PRAGMA foreign_keys=ON; PRAGMA synchronous=FULL;",
            )
        } else {
            self.conn.execute_batch("PRAGMA foreign_keys=ON;")
        };
        r.map_err(|e| self.db_err("not a usable SQLite database", e))
    }

    pub(super) fn user_version(&self) -> Result<i64> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.db_err("not a usable SQLite database", e))
    }

    pub(super) fn migrate(&mut self) -> Result<()> {
        let from = self.user_version()?;
        if from >= SCHEMA_VERSION {
            return Ok(());
        }
        let tx = self.conn.transaction().map_err(|e| Error::Db {
            path: bytes(&self.path),
            what: "migrate".into(),
            source: e,
        })?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(from as usize) {
            tx.execute_batch(sql).map_err(|e| Error::Db {
                path: bytes(&self.path),
                what: format!("apply migration {}", i + 1),
                source: e,
            })?;
        }
        tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
            .and_then(|()| tx.commit())
            .map_err(|e| Error::Db {
                path: bytes(&self.path),
                what: "migrate".into(),
                source: e,
            })
    }

    pub(super) fn check_schema(&mut self, write: bool) -> Result<()> {
        let v = self.user_version()?;
        let path = bytes(&self.path);
        let schema_err = |what: String| Error::DbSchema {
            path: path.clone(),
            what,
        };
        if v > SCHEMA_VERSION {
            return Err(schema_err(format!(
                "baseline schema version {v} is newer than this kmsentry understands ({SCHEMA_VERSION}); upgrade kmsentry"
            )));
        }
        if v == 0 {
            return Err(schema_err(
                "not a kmsentry baseline (no schema version); expected a database made by `kmsentry baseline init`".into(),
            ));
        }
        // The tables this version must have come first: a foreign database that happens to
        // carry a small user_version must read as foreign, not as "older".
        self.require_tables(v, &path)?;
        if v < SCHEMA_VERSION {
            if !write && v < SEALED_SINCE {
                return Err(schema_err(format!(
                    "this baseline (schema version {v}) was written before baselines carried a seal (a digest of \
                     all their rows), so kmsentry cannot show that it is intact; re-create it from a trusted state \
                     with `kmsentry baseline init --force`, or re-record and seal it with a full \
                     `kmsentry baseline update` (it accepts the live state, so review what it lists)"
                )));
            }
            if !write {
                return Err(schema_err(format!(
                    "baseline schema version {v} is older than {SCHEMA_VERSION}; run `kmsentry baseline update` to upgrade it"
                )));
            }
            self.migrate()?;
            self.require_tables(SCHEMA_VERSION, &path)?;
            if v < SEALED_SINCE {
                // Nothing to check the old rows against: only a full update may proceed, and
                // it re-records every entry before sealing (see `baseline update`).
                self.sealed = false;
                self.legacy = true;
            }
        }
        Ok(())
    }

    pub(super) fn require_tables(&self, version: i64, path: &[u8]) -> Result<()> {
        const BY_VERSION: [&[&str]; 5] = [
            &["runs", "entries", "xattrs", "accepted"],
            &["signatures"],
            &["credentials"],
            // 0004: a column of `runs`, no new table.
            &[],
            &["seal"],
        ];
        let wanted = BY_VERSION
            .iter()
            .take(version.clamp(0, SCHEMA_VERSION) as usize);
        for table in wanted.flat_map(|t| t.iter()) {
            let found: Option<String> = self
                .conn
                .query_row(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?1",
                    [table],
                    |r| r.get(0),
                )
                .optional()
                .map_err(|e| self.db_err("read schema", e))?;
            if found.is_none() {
                return Err(Error::DbSchema {
                    path: path.to_vec(),
                    what: format!("not a kmsentry baseline: table `{table}` is missing"),
                });
            }
        }
        Ok(())
    }

    /// Open an in-memory database with the current schema (tests).
    pub fn open_in_memory() -> Result<Store> {
        let conn = Connection::open_in_memory().map_err(|e| Error::Db {
            path: b":memory:".to_vec(),
            what: "open".into(),
            source: e,
        })?;
        let mut s = Store {
            conn,
            path: PathBuf::from(":memory:"),
            install_to: None,
            sealed: false,
            checked: std::cell::Cell::new(false),
            legacy: false,
        };
        s.pragmas(false)?;
        s.migrate()?;
        Ok(s)
    }

    /// The schema as SQL text, for the golden schema test.
    pub fn schema_sql(&self) -> Result<String> {
        let mut st = self
            .conn
            .prepare("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY type, name")
            .map_err(|e| self.db_err("read schema", e))?;
        let rows = st
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| self.db_err("read schema", e))?;
        let mut out = String::new();
        for r in rows {
            out.push_str(&r.map_err(|e| self.db_err("read schema", e))?);
            out.push_str(";\n");
        }
        Ok(out)
    }
}
