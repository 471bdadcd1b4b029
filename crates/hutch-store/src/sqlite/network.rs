//! [`NetworkStore`] for [`SqliteStore`].

use async_trait::async_trait;
use hutch_api::network::{Approval, ApprovalState, EgressEntry, NetworkSpec};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite};

use super::{SqliteStore, i64_of, json, ms, opt_ms, opt_time, time, to_json, u64_col};
use crate::network_store::{ApprovalFilter, Decision, NetworkStore};
use crate::{Error, Result};

const APPROVAL_COLUMNS: &str = "id, sandbox_id, host, path, ports, justification, state, \
     created_at, decided_at, note, granted";

fn egress_from_row(row: &SqliteRow) -> Result<EgressEntry> {
    let seq: i64 = row.try_get("seq")?;
    let id = seq.to_string();
    Ok(EgressEntry {
        seq,
        sandbox_id: row.try_get("sandbox_id")?,
        time: time(row.try_get("time")?, "egress time", &id)?,
        kind: row.try_get("kind")?,
        method: row.try_get("method")?,
        host: row.try_get("host")?,
        port: u16::try_from(row.try_get::<i64, _>("port")?).unwrap_or(0),
        path: row.try_get("path")?,
        status: row
            .try_get::<Option<i64>, _>("status")?
            .and_then(|s| u16::try_from(s).ok()),
        bytes_sent: u64_col(row.try_get("bytes_sent")?),
        bytes_received: u64_col(row.try_get("bytes_received")?),
        decision: if row.try_get::<i64, _>("allowed")? != 0 {
            "allow".into()
        } else {
            "deny".into()
        },
        rule: row.try_get("rule")?,
        reason: row.try_get("reason")?,
    })
}

fn approval_from_row(row: &SqliteRow) -> Result<Approval> {
    let id: String = row.try_get("id")?;
    let state: String = row.try_get("state")?;
    let granted: Option<String> = row.try_get("granted")?;
    Ok(Approval {
        sandbox_id: row.try_get("sandbox_id")?,
        host: row.try_get("host")?,
        path: row.try_get("path")?,
        ports: json(&row.try_get::<String, _>("ports")?, "approval ports", &id)?,
        justification: row.try_get("justification")?,
        state: ApprovalState::parse(&state).ok_or_else(|| Error::Corrupt {
            what: "approval state",
            id: id.clone(),
        })?,
        created_at: time(row.try_get("created_at")?, "approval created_at", &id)?,
        decided_at: opt_time(row.try_get("decided_at")?, "approval decided_at", &id)?,
        note: row.try_get("note")?,
        granted: match granted {
            Some(g) => Some(json(&g, "approval grant", &id)?),
            None => None,
        },
        id,
    })
}

#[async_trait]
impl NetworkStore for SqliteStore {
    async fn insert_egress(&self, entries: &[EgressEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT INTO egress (seq, sandbox_id, time, kind, method, host, port, path, status, \
             bytes_sent, bytes_received, allowed, rule, reason) ",
        );
        q.push_values(entries, |mut b, e| {
            b.push_bind(e.seq)
                .push_bind(e.sandbox_id.clone())
                .push_bind(ms(e.time))
                .push_bind(e.kind.clone())
                .push_bind(e.method.clone())
                .push_bind(e.host.clone())
                .push_bind(i64::from(e.port))
                .push_bind(e.path.clone())
                .push_bind(e.status.map(i64::from))
                .push_bind(i64_of(e.bytes_sent))
                .push_bind(i64_of(e.bytes_received))
                .push_bind(i64::from(e.decision == "allow"))
                .push_bind(e.rule.clone())
                .push_bind(e.reason.clone());
        });
        q.build().execute(&self.pool).await?;
        Ok(())
    }

    async fn max_egress_seq(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COALESCE(MAX(seq), 0) AS m FROM egress")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("m")?)
    }

    async fn list_egress(
        &self,
        sandbox_id: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<EgressEntry>> {
        let rows = sqlx::query(
            "SELECT seq, sandbox_id, time, kind, method, host, port, path, status, bytes_sent, \
             bytes_received, allowed, rule, reason FROM egress WHERE sandbox_id = ? AND seq > ? \
             ORDER BY seq LIMIT ?",
        )
        .bind(sandbox_id)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(egress_from_row).collect()
    }

    async fn delete_egress(&self, sandbox_id: &str) -> Result<u64> {
        let done = sqlx::query("DELETE FROM egress WHERE sandbox_id = ?")
            .bind(sandbox_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn insert_approval(&self, team_id: &str, a: &Approval) -> Result<()> {
        let granted = match &a.granted {
            Some(g) => Some(to_json(g, "approval grant", &a.id)?),
            None => None,
        };
        sqlx::query(
            "INSERT INTO approvals (id, team_id, sandbox_id, host, path, ports, justification, \
             state, created_at, decided_at, note, granted) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&a.id)
        .bind(team_id)
        .bind(&a.sandbox_id)
        .bind(&a.host)
        .bind(&a.path)
        .bind(to_json(&a.ports, "approval ports", &a.id)?)
        .bind(&a.justification)
        .bind(a.state.as_str())
        .bind(ms(a.created_at))
        .bind(opt_ms(a.decided_at))
        .bind(&a.note)
        .bind(granted)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_approval(&self, id: &str) -> Result<Option<(String, Approval)>> {
        let row = sqlx::query(&format!(
            "SELECT team_id, {APPROVAL_COLUMNS} FROM approvals WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(r) => Ok(Some((r.try_get("team_id")?, approval_from_row(&r)?))),
            None => Ok(None),
        }
    }

    async fn list_approvals(&self, filter: &ApprovalFilter) -> Result<Vec<Approval>> {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE 1 = 1"
        ));
        if let Some(team) = &filter.team_id {
            q.push(" AND team_id = ").push_bind(team.clone());
        }
        if let Some(sb) = &filter.sandbox_id {
            q.push(" AND sandbox_id = ").push_bind(sb.clone());
        }
        if let Some(state) = filter.state {
            q.push(" AND state = ").push_bind(state.as_str());
        }
        q.push(" ORDER BY seq DESC");
        if let Some(limit) = filter.limit {
            q.push(" LIMIT ").push_bind(i64::from(limit));
        }
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter().map(approval_from_row).collect()
    }

    async fn decide_approval(&self, id: &str, d: &Decision) -> Result<bool> {
        let granted = match &d.granted {
            Some(g) => Some(to_json(g, "approval grant", id)?),
            None => None,
        };
        let done = sqlx::query(
            "UPDATE approvals SET state = ?, decided_at = ?, note = ?, granted = ? \
             WHERE id = ? AND state = 'pending'",
        )
        .bind(d.state.as_str())
        .bind(ms(d.at))
        .bind(&d.note)
        .bind(granted)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_sandbox_network(&self, id: &str, network: &NetworkSpec) -> Result<bool> {
        let done =
            sqlx::query("UPDATE sandboxes SET network = ? WHERE id = ? AND deleted_at IS NULL")
                .bind(to_json(network, "network", id)?)
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }
}
