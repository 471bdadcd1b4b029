//! [`PreviewStore`] for [`SqliteStore`].

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{SqliteStore, ms};
use crate::Result;
use crate::preview_store::PreviewStore;

#[async_trait]
impl PreviewStore for SqliteStore {
    async fn preview_public(&self, sandbox_id: &str) -> Result<bool> {
        let public: Option<i64> =
            sqlx::query_scalar("SELECT public FROM previews WHERE sandbox_id = ?")
                .bind(sandbox_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(public.is_some_and(|p| p != 0))
    }

    async fn set_preview_public(
        &self,
        sandbox_id: &str,
        public: bool,
        at: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO previews (sandbox_id, public, updated_at) VALUES (?, ?, ?) \
             ON CONFLICT(sandbox_id) DO UPDATE SET public = excluded.public, \
             updated_at = excluded.updated_at",
        )
        .bind(sandbox_id)
        .bind(i64::from(public))
        .bind(ms(at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
