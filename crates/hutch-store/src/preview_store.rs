//! [`PreviewStore`]: per-sandbox preview settings.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::Result;

/// Persistence for preview access. A supertrait of [`crate::Store`].
#[async_trait]
pub trait PreviewStore: Send + Sync {
    /// Whether a sandbox's previews are public (`false` when never set: previews need the
    /// sandbox's preview token by default).
    async fn preview_public(&self, sandbox_id: &str) -> Result<bool>;
    /// Makes a sandbox's previews public or token-protected.
    async fn set_preview_public(
        &self,
        sandbox_id: &str,
        public: bool,
        at: DateTime<Utc>,
    ) -> Result<()>;
}
