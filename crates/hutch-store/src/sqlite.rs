//! [`SqliteStore`]: the embedded default backend.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hutch_api::sandbox::{ApiKey, Event, NetworkSpec, OnTimeout, SandboxState, Team};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};

mod network;
mod preview;

use crate::{Error, EventFilter, NewEvent, Result, SandboxFilter, SandboxRecord, Store, StoredKey};

/// Columns of a sandbox row, in the order [`sandbox_from_row`] reads them.
const SANDBOX_COLUMNS: &str = "seq, id, team_id, template, state, cpus, memory_mb, pids, \
     timeout_s, on_timeout, env, metadata, network, created_at, started_at, expires_at, reason";

const KEY_COLUMNS: &str = "id, team_id, name, admin, prefix, created_at, revoked_at";

/// A [`Store`] backed by one SQLite file (WAL, busy timeout, foreign keys on).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `path` and applies the embedded migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        // The database holds sandbox env values and key hashes: owner-only, like the rest of
        // the data dir (SQLite gives the -wal/-shm files the database file's mode).
        for suffix in ["", "-wal", "-shm"] {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            if let Err(e) =
                std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                && e.kind() != std::io::ErrorKind::NotFound
            {
                return Err(Error::Database(sqlx::Error::Io(e)));
            }
        }
        Ok(SqliteStore { pool })
    }

    /// Closes the pool (waits for connections to be returned).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn opt_ms(t: Option<DateTime<Utc>>) -> Option<i64> {
    t.map(ms)
}

fn time(v: i64, what: &'static str, id: &str) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_millis(v).ok_or_else(|| Error::Corrupt {
        what,
        id: id.to_owned(),
    })
}

fn opt_time(v: Option<i64>, what: &'static str, id: &str) -> Result<Option<DateTime<Utc>>> {
    v.map(|v| time(v, what, id)).transpose()
}

fn json<T: serde::de::DeserializeOwned>(s: &str, what: &'static str, id: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|_| Error::Corrupt {
        what,
        id: id.to_owned(),
    })
}

fn to_json<T: serde::Serialize>(v: &T, what: &'static str, id: &str) -> Result<String> {
    serde_json::to_string(v).map_err(|_| Error::Corrupt {
        what,
        id: id.to_owned(),
    })
}

fn on_timeout_str(v: OnTimeout) -> &'static str {
    match v {
        OnTimeout::Kill => "kill",
        OnTimeout::Pause => "pause",
    }
}

fn u64_col(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Maps a unique-constraint violation to [`Error::Conflict`].
fn conflict(e: sqlx::Error, what: &str) -> Error {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => Error::Conflict(what.to_owned()),
        _ => Error::Database(e),
    }
}

fn sandbox_from_row(row: &SqliteRow) -> Result<SandboxRecord> {
    let id: String = row.try_get("id")?;
    let state: String = row.try_get("state")?;
    let on_timeout: String = row.try_get("on_timeout")?;
    Ok(SandboxRecord {
        seq: row.try_get("seq")?,
        team_id: row.try_get("team_id")?,
        template: row.try_get("template")?,
        state: SandboxState::parse(&state).ok_or_else(|| Error::Corrupt {
            what: "state",
            id: id.clone(),
        })?,
        cpus: row.try_get("cpus")?,
        memory_mb: u64_col(row.try_get("memory_mb")?),
        pids: u64_col(row.try_get("pids")?),
        timeout_s: u64_col(row.try_get("timeout_s")?),
        on_timeout: match on_timeout.as_str() {
            "pause" => OnTimeout::Pause,
            "kill" => OnTimeout::Kill,
            _ => {
                return Err(Error::Corrupt {
                    what: "on_timeout",
                    id,
                });
            }
        },
        env: json(&row.try_get::<String, _>("env")?, "env", &id)?,
        metadata: json(&row.try_get::<String, _>("metadata")?, "metadata", &id)?,
        network: json::<NetworkSpec>(&row.try_get::<String, _>("network")?, "network", &id)?,
        created_at: time(row.try_get("created_at")?, "created_at", &id)?,
        started_at: opt_time(row.try_get("started_at")?, "started_at", &id)?,
        expires_at: opt_time(row.try_get("expires_at")?, "expires_at", &id)?,
        reason: row.try_get("reason")?,
        id,
    })
}

fn key_from_row(row: &SqliteRow) -> Result<ApiKey> {
    let id: String = row.try_get("id")?;
    Ok(ApiKey {
        team_id: row.try_get("team_id")?,
        name: row.try_get("name")?,
        admin: row.try_get("admin")?,
        prefix: row.try_get("prefix")?,
        created_at: time(row.try_get("created_at")?, "created_at", &id)?,
        revoked_at: opt_time(row.try_get("revoked_at")?, "revoked_at", &id)?,
        id,
    })
}

fn team_from_row(row: &SqliteRow) -> Result<Team> {
    let id: String = row.try_get("id")?;
    Ok(Team {
        name: row.try_get("name")?,
        created_at: time(row.try_get("created_at")?, "created_at", &id)?,
        id,
    })
}

fn event_from_row(row: &SqliteRow) -> Result<Event> {
    let id: i64 = row.try_get("id")?;
    let data: String = row.try_get("data")?;
    Ok(Event {
        id,
        kind: row.try_get("type")?,
        sandbox_id: row.try_get("sandbox_id")?,
        time: time(row.try_get("time")?, "time", &id.to_string())?,
        data: json(&data, "data", &id.to_string())?,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn create_team(&self, team: &Team) -> Result<()> {
        sqlx::query("INSERT INTO teams (id, name, created_at) VALUES (?, ?, ?)")
            .bind(&team.id)
            .bind(&team.name)
            .bind(ms(team.created_at))
            .execute(&self.pool)
            .await
            .map_err(|e| conflict(e, "team"))?;
        Ok(())
    }

    async fn get_team(&self, id: &str) -> Result<Option<Team>> {
        let row = sqlx::query("SELECT id, name, created_at FROM teams WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(team_from_row).transpose()
    }

    async fn list_teams(&self) -> Result<Vec<Team>> {
        let rows = sqlx::query("SELECT id, name, created_at FROM teams ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(team_from_row).collect()
    }

    async fn create_key(&self, key: &StoredKey) -> Result<()> {
        let k = &key.key;
        sqlx::query(
            "INSERT INTO api_keys (id, team_id, name, admin, prefix, hash, created_at, revoked_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&k.id)
        .bind(&k.team_id)
        .bind(&k.name)
        .bind(k.admin)
        .bind(&k.prefix)
        .bind(&key.hash)
        .bind(ms(k.created_at))
        .bind(opt_ms(k.revoked_at))
        .execute(&self.pool)
        .await
        .map_err(|e| conflict(e, "api key"))?;
        Ok(())
    }

    async fn key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>> {
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE hash = ?"
        ))
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn get_key(&self, id: &str) -> Result<Option<ApiKey>> {
        let row = sqlx::query(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn list_keys(&self, team_id: Option<&str>) -> Result<Vec<ApiKey>> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE (?1 IS NULL OR team_id = ?1) \
             ORDER BY created_at, id"
        ))
        .bind(team_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key_from_row).collect()
    }

    async fn revoke_key(&self, id: &str, at: DateTime<Utc>) -> Result<bool> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
                .bind(ms(at))
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn count_keys(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64_col(n))
    }

    async fn insert_sandbox(&self, sb: &SandboxRecord) -> Result<i64> {
        let done = sqlx::query(
            "INSERT INTO sandboxes (id, team_id, template, state, cpus, memory_mb, pids, \
             timeout_s, on_timeout, env, metadata, network, created_at, started_at, expires_at, \
             reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&sb.id)
        .bind(&sb.team_id)
        .bind(&sb.template)
        .bind(sb.state.as_str())
        .bind(sb.cpus)
        .bind(i64_of(sb.memory_mb))
        .bind(i64_of(sb.pids))
        .bind(i64_of(sb.timeout_s))
        .bind(on_timeout_str(sb.on_timeout))
        .bind(to_json(&sb.env, "env", &sb.id)?)
        .bind(to_json(&sb.metadata, "metadata", &sb.id)?)
        .bind(to_json(&sb.network, "network", &sb.id)?)
        .bind(ms(sb.created_at))
        .bind(opt_ms(sb.started_at))
        .bind(opt_ms(sb.expires_at))
        .bind(&sb.reason)
        .execute(&self.pool)
        .await
        .map_err(|e| conflict(e, "sandbox"))?;
        Ok(done.last_insert_rowid())
    }

    async fn get_sandbox(&self, id: &str) -> Result<Option<SandboxRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {SANDBOX_COLUMNS} FROM sandboxes WHERE id = ? AND deleted_at IS NULL"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(sandbox_from_row).transpose()
    }

    async fn list_sandboxes(&self, filter: &SandboxFilter) -> Result<Vec<SandboxRecord>> {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
            "SELECT {SANDBOX_COLUMNS} FROM sandboxes WHERE deleted_at IS NULL"
        ));
        if let Some(team) = &filter.team_id {
            q.push(" AND team_id = ").push_bind(team.clone());
        }
        if !filter.states.is_empty() {
            q.push(" AND state IN (");
            let mut sep = q.separated(", ");
            for s in &filter.states {
                sep.push_bind(s.as_str());
            }
            q.push(")");
        }
        for (k, v) in &filter.metadata {
            q.push(" AND EXISTS (SELECT 1 FROM json_each(sandboxes.metadata) WHERE key = ")
                .push_bind(k.clone())
                .push(" AND value = ")
                .push_bind(v.clone())
                .push(")");
        }
        if let Some(before) = filter.before_seq {
            q.push(" AND seq < ").push_bind(before);
        }
        q.push(" ORDER BY seq DESC");
        if let Some(limit) = filter.limit {
            q.push(" LIMIT ").push_bind(i64::from(limit));
        }
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter().map(sandbox_from_row).collect()
    }

    async fn set_sandbox_state(
        &self,
        id: &str,
        from: &[SandboxState],
        to: SandboxState,
        reason: Option<&str>,
    ) -> Result<bool> {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new("UPDATE sandboxes SET state = ");
        q.push_bind(to.as_str());
        q.push(", reason = ").push_bind(reason.map(str::to_owned));
        if matches!(to, SandboxState::Stopped | SandboxState::Error) {
            q.push(", expires_at = NULL");
        }
        q.push(" WHERE id = ").push_bind(id.to_owned());
        q.push(" AND deleted_at IS NULL");
        if !from.is_empty() {
            q.push(" AND state IN (");
            let mut sep = q.separated(", ");
            for s in from {
                sep.push_bind(s.as_str());
            }
            q.push(")");
        }
        let done = q.build().execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn mark_sandbox_running(
        &self,
        id: &str,
        started_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE sandboxes SET state = 'running', started_at = ?, expires_at = ?, reason = NULL \
             WHERE id = ? AND state = 'starting' AND deleted_at IS NULL",
        )
        .bind(ms(started_at))
        .bind(ms(expires_at))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn set_sandbox_expiry(
        &self,
        id: &str,
        timeout_s: u64,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE sandboxes SET timeout_s = ?, expires_at = ? WHERE id = ? AND deleted_at IS NULL",
        )
        .bind(i64_of(timeout_s))
        .bind(opt_ms(expires_at))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_sandbox(&self, id: &str, at: DateTime<Utc>) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE sandboxes SET deleted_at = ?, state = 'stopped', expires_at = NULL, \
             reason = COALESCE(reason, 'deleted') WHERE id = ? AND deleted_at IS NULL",
        )
        .bind(ms(at))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn expire_sandbox(
        &self,
        id: &str,
        now: DateTime<Utc>,
        to: SandboxState,
        reason: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE sandboxes SET state = ?, reason = ?, \
             expires_at = CASE WHEN ? = 'stopped' THEN NULL ELSE expires_at END \
             WHERE id = ? AND state = 'running' AND deleted_at IS NULL \
             AND expires_at IS NOT NULL AND expires_at <= ?",
        )
        .bind(to.as_str())
        .bind(reason)
        .bind(to.as_str())
        .bind(id)
        .bind(ms(now))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn expired_sandboxes(&self, now: DateTime<Utc>) -> Result<Vec<SandboxRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {SANDBOX_COLUMNS} FROM sandboxes WHERE deleted_at IS NULL \
             AND state = 'running' AND expires_at IS NOT NULL AND expires_at <= ? ORDER BY expires_at"
        ))
        .bind(ms(now))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(sandbox_from_row).collect()
    }

    async fn count_live_sandboxes(&self, team_id: &str) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sandboxes WHERE deleted_at IS NULL AND team_id = ? \
             AND state IN ('starting', 'running', 'paused')",
        )
        .bind(team_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(u64_col(n))
    }

    async fn count_sandboxes_by_state(&self) -> Result<HashMap<SandboxState, u64>> {
        let rows = sqlx::query(
            "SELECT state, COUNT(*) AS n FROM sandboxes WHERE deleted_at IS NULL GROUP BY state",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = HashMap::new();
        for row in rows {
            let state: String = row.try_get("state")?;
            let n: i64 = row.try_get("n")?;
            if let Some(s) = SandboxState::parse(&state) {
                out.insert(s, u64_col(n));
            }
        }
        Ok(out)
    }

    async fn template_usage(&self) -> Result<BTreeMap<String, u64>> {
        let rows = sqlx::query(
            "SELECT template, COUNT(*) AS n FROM sandboxes WHERE deleted_at IS NULL \
             AND state IN ('starting', 'running', 'paused') GROUP BY template",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = BTreeMap::new();
        for row in rows {
            let template: String = row.try_get("template")?;
            let n: i64 = row.try_get("n")?;
            out.insert(template, u64_col(n));
        }
        Ok(out)
    }

    async fn insert_event(&self, event: &NewEvent) -> Result<i64> {
        let data = to_json(&event.data, "data", &event.kind)?;
        let done = sqlx::query(
            "INSERT INTO events (team_id, sandbox_id, type, time, data) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&event.team_id)
        .bind(&event.sandbox_id)
        .bind(&event.kind)
        .bind(ms(event.time))
        .bind(data)
        .execute(&self.pool)
        .await?;
        Ok(done.last_insert_rowid())
    }

    async fn list_events(&self, filter: &EventFilter) -> Result<Vec<Event>> {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT id, team_id, sandbox_id, type, time, data FROM events WHERE 1 = 1",
        );
        if let Some(team) = &filter.team_id {
            q.push(" AND team_id = ").push_bind(team.clone());
        }
        if let Some(sb) = &filter.sandbox_id {
            q.push(" AND sandbox_id = ").push_bind(sb.clone());
        }
        if let Some(kind) = &filter.kind {
            q.push(" AND type = ").push_bind(kind.clone());
        }
        if let Some(before) = filter.before {
            q.push(" AND id < ").push_bind(before);
        }
        q.push(" ORDER BY id DESC");
        if let Some(limit) = filter.limit {
            q.push(" LIMIT ").push_bind(i64::from(limit));
        }
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter().map(event_from_row).collect()
    }

    // Secrets.
    async fn insert_secret(&self, s: &crate::StoredSecret) -> Result<()> {
        sqlx::query(
            "INSERT INTO secrets (team_id, name, description, hosts, nonce, ciphertext, created_at, \
             updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&s.team_id)
        .bind(&s.name)
        .bind(&s.description)
        .bind(to_json(&s.hosts, "secret hosts", &s.name)?)
        .bind(&s.nonce)
        .bind(&s.ciphertext)
        .bind(ms(s.created_at))
        .bind(ms(s.updated_at))
        .execute(&self.pool)
        .await
        .map_err(|e| conflict(e, "secret"))?;
        Ok(())
    }

    async fn update_secret(&self, s: &crate::StoredSecret) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE secrets SET description = ?, hosts = ?, nonce = ?, ciphertext = ?, \
             updated_at = ? WHERE team_id = ? AND name = ?",
        )
        .bind(&s.description)
        .bind(to_json(&s.hosts, "secret hosts", &s.name)?)
        .bind(&s.nonce)
        .bind(&s.ciphertext)
        .bind(ms(s.updated_at))
        .bind(&s.team_id)
        .bind(&s.name)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn get_secret(&self, team_id: &str, name: &str) -> Result<Option<crate::StoredSecret>> {
        let row = sqlx::query(&format!(
            "SELECT {SECRET_COLUMNS} FROM secrets WHERE team_id = ? AND name = ?"
        ))
        .bind(team_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(secret_from_row).transpose()
    }

    async fn list_secrets(&self, team_id: Option<&str>) -> Result<Vec<crate::StoredSecret>> {
        let rows = sqlx::query(&format!(
            "SELECT {SECRET_COLUMNS} FROM secrets WHERE (?1 IS NULL OR team_id = ?1) \
             ORDER BY team_id, name"
        ))
        .bind(team_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(secret_from_row).collect()
    }

    async fn delete_secret(&self, team_id: &str, name: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM secrets WHERE team_id = ? AND name = ?")
            .bind(team_id)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn count_secrets(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM secrets")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64_col(n))
    }
}

const SECRET_COLUMNS: &str =
    "team_id, name, description, hosts, nonce, ciphertext, created_at, updated_at";

fn secret_from_row(row: &SqliteRow) -> Result<crate::StoredSecret> {
    let team_id: String = row.try_get("team_id")?;
    let name: String = row.try_get("name")?;
    let id = format!("{team_id}/{name}");
    Ok(crate::StoredSecret {
        description: row.try_get("description")?,
        hosts: json(&row.try_get::<String, _>("hosts")?, "secret hosts", &id)?,
        nonce: row.try_get("nonce")?,
        ciphertext: row.try_get("ciphertext")?,
        created_at: time(row.try_get("created_at")?, "created_at", &id)?,
        updated_at: time(row.try_get("updated_at")?, "updated_at", &id)?,
        team_id,
        name,
    })
}
