//! Team secrets, encrypted at rest: [`Secrets`] is the vault the `/v1/secrets` routes and the
//! egress gateway use.
//!
//! Values are sealed with AES-256-GCM under a subkey derived (HKDF-SHA256) from the secrets key
//! ([`key`]), with a random nonce per write and the team id and name as associated data, so a row
//! copied to another team or name fails to decrypt instead of yielding another team's value.
//! Values never leave through the API, events, errors or logs; server code reads them with
//! [`Secrets::reveal`] and [`Secrets::all_values`].

pub mod crypto;
pub mod key;

use std::sync::Arc;

use chrono::Utc;
use hutch_api::secrets::{
    MAX_SECRET_DESCRIPTION_BYTES, MAX_SECRET_NAME_LEN, MAX_SECRET_VALUE_BYTES, Secret,
    is_valid_secret_name,
};
use hutch_store::{NewEvent, Store, StoredSecret};
use tokio::sync::watch;
use zeroize::Zeroizing;

use crate::config::ServerConfig;
use crate::error::{AppError, AppResult, Error};
use crate::events;

pub use key::{KEY_ENV, KEY_FILE, KeySource, SecretsKey};

/// HKDF label of the key that seals secret values.
const VALUES_LABEL: &str = "hutch/secrets/values/v1";

/// The secrets vault (cheap to clone).
#[derive(Clone)]
pub struct Secrets {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    key: SecretsKey,
    source: KeySource,
    values_key: Zeroizing<[u8; 32]>,
    changes: watch::Sender<u64>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("source", &self.inner.source)
            .finish_non_exhaustive()
    }
}

impl Secrets {
    /// Opens the vault: the key from `config.secrets_key` (`HUTCH_SECRETS_KEY`), else
    /// `<data_dir>/secrets.key` (created on first start, refused when not private or not 32
    /// bytes, and never silently replaced while encrypted secrets exist). Logs, by name, every
    /// stored secret the key cannot decrypt.
    pub async fn open(config: &ServerConfig, store: Arc<dyn Store>) -> Result<Self, Error> {
        let existing = store.count_secrets().await?;
        let (key, source) =
            key::load_or_create(&config.data_dir, config.secrets_key.as_ref(), existing == 0)?;
        match &source {
            KeySource::Configured => tracing::info!("secrets key from {KEY_ENV}"),
            KeySource::File(p) => tracing::info!(path = %p.display(), "secrets key loaded"),
            KeySource::Created(p) => tracing::info!(path = %p.display(), "secrets key created"),
        }
        let secrets = Secrets::with_key(store, key, source)?;
        for (team_id, name) in secrets.unreadable_rows().await? {
            tracing::error!(
                %team_id, %name,
                "secret cannot be decrypted: wrong secrets key ({KEY_ENV} or {KEY_FILE}) or a corrupt row"
            );
        }
        Ok(secrets)
    }

    /// A vault with an explicit key.
    pub fn with_key(
        store: Arc<dyn Store>,
        key: SecretsKey,
        source: KeySource,
    ) -> Result<Self, Error> {
        let values_key = key.derive(VALUES_LABEL)?;
        Ok(Secrets {
            inner: Arc::new(Inner {
                store,
                key,
                source,
                values_key,
                changes: watch::Sender::new(0),
            }),
        })
    }

    /// Where the key came from.
    pub fn key_source(&self) -> &KeySource {
        &self.inner.source
    }

    /// A 32-byte key for another use of the secrets key (e.g. sealing the gateway's CA key with
    /// [`crypto::seal`]), derived with HKDF-SHA256 from `label`. Use a label of your own, like
    /// `"hutch/gateway/ca-key/v1"`; the label of secret values is reserved.
    pub fn derive_key(&self, label: &str) -> Result<Zeroizing<[u8; 32]>, Error> {
        if label == VALUES_LABEL {
            return Err(Error::Crypto(
                "this key derivation label is reserved".into(),
            ));
        }
        self.inner.key.derive(label)
    }

    /// A receiver whose value is bumped on every create, rotate and delete (of any team).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// Creates a secret. 422 on a bad name, value or description; 409 when the team already has
    /// one of that name.
    pub async fn create(
        &self,
        team_id: &str,
        name: &str,
        value: &str,
        description: Option<&str>,
        hosts: &[String],
    ) -> AppResult<Secret> {
        check_name(name)?;
        check_value(value)?;
        let description = check_description(description, value)?;
        let hosts = check_hosts(hosts)?;
        let sealed = self.seal(team_id, name, value)?;
        let now = Utc::now();
        let row = StoredSecret {
            team_id: team_id.to_owned(),
            name: name.to_owned(),
            description,
            hosts,
            nonce: sealed.nonce.to_vec(),
            ciphertext: sealed.ciphertext,
            created_at: now,
            updated_at: now,
        };
        match self.inner.store.insert_secret(&row).await {
            Ok(()) => {}
            Err(hutch_store::Error::Conflict(_)) => {
                return Err(AppError(hutch_api::ApiError::new(
                    hutch_api::ErrorCode::AlreadyExists,
                    format!("secret {name} already exists (PUT /v1/secrets/{name} rotates it)"),
                )));
            }
            Err(e) => return Err(e.into()),
        }
        self.changed(team_id, events::SECRET_CREATED, name).await;
        Ok(to_api(&row))
    }

    /// Replaces a secret's value (new nonce) and, when `description` is given, its description
    /// (`""` clears it). `None` when the team has no secret of that name.
    pub async fn rotate(
        &self,
        team_id: &str,
        name: &str,
        value: &str,
        description: Option<&str>,
        hosts: Option<&[String]>,
    ) -> AppResult<Option<Secret>> {
        check_name(name)?;
        check_value(value)?;
        let new_description = check_description(description, value)?;
        let new_hosts = hosts.map(check_hosts).transpose()?;
        let Some(mut row) = self.inner.store.get_secret(team_id, name).await? else {
            return Ok(None);
        };
        if description.is_some() {
            row.description = new_description;
        }
        if let Some(h) = new_hosts {
            row.hosts = h;
        }
        let sealed = self.seal(team_id, name, value)?;
        row.nonce = sealed.nonce.to_vec();
        row.ciphertext = sealed.ciphertext;
        row.updated_at = Utc::now();
        if !self.inner.store.update_secret(&row).await? {
            return Ok(None);
        }
        self.changed(team_id, events::SECRET_UPDATED, name).await;
        Ok(Some(to_api(&row)))
    }

    /// One secret's metadata.
    pub async fn get(&self, team_id: &str, name: &str) -> AppResult<Option<Secret>> {
        check_name(name)?;
        Ok(self
            .inner
            .store
            .get_secret(team_id, name)
            .await?
            .as_ref()
            .map(to_api))
    }

    /// A team's secrets (metadata), by name.
    pub async fn list(&self, team_id: &str) -> AppResult<Vec<Secret>> {
        let rows = self.inner.store.list_secrets(Some(team_id)).await?;
        Ok(rows.iter().map(to_api).collect())
    }

    /// Deletes a secret; false when the team has none of that name.
    pub async fn delete(&self, team_id: &str, name: &str) -> AppResult<bool> {
        check_name(name)?;
        let deleted = self.inner.store.delete_secret(team_id, name).await?;
        if deleted {
            self.changed(team_id, events::SECRET_DELETED, name).await;
        }
        Ok(deleted)
    }

    /// The value of a team's secret, for server-side use only (the gateway injecting it). `None`
    /// when it does not exist; a 500 naming the secret when it cannot be decrypted (wrong key,
    /// corrupt or moved row).
    pub async fn reveal(&self, team_id: &str, name: &str) -> AppResult<Option<Zeroizing<String>>> {
        let Some(row) = self.inner.store.get_secret(team_id, name).await? else {
            return Ok(None);
        };
        let mut bytes = self.decrypt(&row).map_err(|_| undecryptable(&row))?;
        match String::from_utf8(std::mem::take(&mut *bytes)) {
            Ok(s) => Ok(Some(Zeroizing::new(s))),
            Err(e) => {
                drop(Zeroizing::new(e.into_bytes()));
                Err(undecryptable(&row))
            }
        }
    }

    /// Every secret value of every team as `(team_id, name, value)`, for the DLP scanner (a
    /// registered value leaving a sandbox is a leak). Fails as a whole, naming the secret, when
    /// one cannot be decrypted: a scanner fed a partial list would miss leaks silently.
    pub async fn all_values(&self) -> AppResult<Vec<(String, String, Zeroizing<Vec<u8>>)>> {
        let rows = self.inner.store.list_secrets(None).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let value = self.decrypt(&row).map_err(|_| undecryptable(&row))?;
            out.push((row.team_id, row.name, value));
        }
        Ok(out)
    }

    /// `(team_id, name)` of every stored secret the current key cannot decrypt.
    pub async fn unreadable(&self) -> AppResult<Vec<(String, String)>> {
        Ok(self.unreadable_rows().await?)
    }

    async fn unreadable_rows(&self) -> Result<Vec<(String, String)>, hutch_store::Error> {
        let rows = self.inner.store.list_secrets(None).await?;
        Ok(rows
            .into_iter()
            .filter(|row| self.decrypt(row).is_err())
            .map(|row| (row.team_id, row.name))
            .collect())
    }

    fn seal(&self, team_id: &str, name: &str, value: &str) -> AppResult<crypto::Sealed> {
        crypto::seal(
            &self.inner.values_key,
            &crypto::secret_aad(team_id, name),
            value.as_bytes(),
        )
        .map_err(|e| {
            tracing::error!(error = %e, %team_id, %name, "sealing a secret failed");
            AppError::internal("could not encrypt the secret")
        })
    }

    fn decrypt(&self, row: &StoredSecret) -> Result<Zeroizing<Vec<u8>>, Error> {
        crypto::open(
            &self.inner.values_key,
            &row.nonce,
            &crypto::secret_aad(&row.team_id, &row.name),
            &row.ciphertext,
        )
    }

    async fn changed(&self, team_id: &str, kind: &str, name: &str) {
        self.inner.changes.send_modify(|v| *v = v.wrapping_add(1));
        tracing::info!(%team_id, %name, kind, "secret changed");
        let event = NewEvent {
            team_id: Some(team_id.to_owned()),
            sandbox_id: None,
            kind: kind.to_owned(),
            time: Utc::now(),
            data: serde_json::json!({ "name": name }),
        };
        if let Err(e) = self.inner.store.insert_event(&event).await {
            tracing::warn!(error = %e, kind, "could not record event");
        }
    }
}

fn undecryptable(row: &StoredSecret) -> AppError {
    tracing::error!(
        team_id = %row.team_id, name = %row.name,
        "secret cannot be decrypted: wrong secrets key or a corrupt or moved row"
    );
    AppError::internal(format!(
        "secret {} cannot be decrypted (wrong secrets key, or the stored row was altered)",
        row.name
    ))
}

fn to_api(row: &StoredSecret) -> Secret {
    Secret {
        name: row.name.clone(),
        description: row.description.clone(),
        hosts: row.hosts.clone(),
        created_at: row.created_at,
        updated_at: row.updated_at,
    }
}

/// Allowed hosts: domain patterns (exact or `*.example.com`, never `*`), at most 32.
fn check_hosts(hosts: &[String]) -> AppResult<Vec<String>> {
    if hosts.len() > 32 {
        return Err(AppError::invalid("hosts", "at most 32 hosts"));
    }
    let mut out = Vec::with_capacity(hosts.len());
    for h in hosts {
        let h = h.trim().trim_end_matches('.').to_ascii_lowercase();
        let bare = h.strip_prefix("*.").unwrap_or(&h);
        if !matches!(
            hutch_net::policy::Host::parse(bare),
            Ok(hutch_net::policy::Host::Name(_))
        ) {
            return Err(AppError::invalid(
                "hosts",
                "each host must be a domain name (exact or *.example.com)",
            ));
        }
        out.push(h);
    }
    Ok(out)
}

fn check_name(name: &str) -> AppResult<()> {
    if is_valid_secret_name(name) {
        return Ok(());
    }
    Err(AppError::invalid(
        "name",
        format!(
            "must be 1-{MAX_SECRET_NAME_LEN} characters of A-Z a-z 0-9 _ . -, starting with a \
             letter, a digit or _"
        ),
    ))
}

fn check_value(value: &str) -> AppResult<()> {
    if value.is_empty() {
        return Err(AppError::invalid("value", "must not be empty"));
    }
    if value.len() > MAX_SECRET_VALUE_BYTES {
        return Err(AppError::invalid(
            "value",
            format!("must be at most {MAX_SECRET_VALUE_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// The description to store (`""` → none). Refuses one that holds the value: descriptions are
/// returned in clear.
fn check_description(description: Option<&str>, value: &str) -> AppResult<Option<String>> {
    let Some(d) = description else {
        return Ok(None);
    };
    if d.len() > MAX_SECRET_DESCRIPTION_BYTES {
        return Err(AppError::invalid(
            "description",
            format!("must be at most {MAX_SECRET_DESCRIPTION_BYTES} bytes"),
        ));
    }
    if d.contains(value) {
        return Err(AppError::invalid(
            "description",
            "must not contain the secret's value",
        ));
    }
    Ok((!d.is_empty()).then(|| d.to_owned()))
}
