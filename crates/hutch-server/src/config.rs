//! Server configuration: defaults, then an optional TOML file, then `HUTCH_*` environment
//! variables, then command-line overrides (each layer wins over the previous one).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::Error;

/// Configuration of `hutch server`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Address the API listens on (default `127.0.0.1:7070`).
    pub listen: SocketAddr,
    /// Where the database, keys, templates and sandboxes live (default `/var/lib/hutch`).
    pub data_dir: PathBuf,
    /// Largest timeout a sandbox may ask for, in seconds (default 86400).
    pub max_timeout_s: u64,
    /// Timeout of a sandbox that does not ask for one, in seconds (default 300).
    pub default_timeout_s: u64,
    /// Log as JSON lines instead of human-readable text (the binary sets up tracing).
    pub log_json: bool,
    /// The executable run as PID 1 in sandboxes (default: the running executable).
    pub guest_exe: Option<PathBuf>,
    /// How often the reaper looks for expired sandboxes, in milliseconds (default 1000).
    pub reaper_interval_ms: u64,
    /// How often the reconciler compares the store with the runtime, in milliseconds (default 5000).
    pub reconcile_interval_ms: u64,
    /// Most sandboxes a team may have starting, running or paused at once (default 100).
    pub max_sandboxes_per_team: u64,
    /// Sandbox networking and the egress gateway.
    pub network: crate::network::NetworkConfig,
    /// Domain of preview URLs: `{port}-{sandbox id}.{preview_domain}` on the API listener is
    /// routed to that port in the sandbox (default `preview.localhost`).
    pub preview_domain: String,
    /// The secrets key from `HUTCH_SECRETS_KEY` (never from the TOML file); `None` uses
    /// `<data_dir>/secrets.key`. Its `Debug` output is redacted.
    pub secrets_key: Option<crate::secrets::SecretsKey>,
    /// The TOML file the configuration was read from, if any.
    pub config_file: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            data_dir: PathBuf::from("/var/lib/hutch"),
            max_timeout_s: 86_400,
            default_timeout_s: 300,
            log_json: false,
            guest_exe: None,
            reaper_interval_ms: 1000,
            reconcile_interval_ms: 5000,
            max_sandboxes_per_team: 100,
            network: crate::network::NetworkConfig::default(),
            preview_domain: crate::previews::DEFAULT_DOMAIN.to_owned(),
            secrets_key: None,
            config_file: None,
        }
    }
}

/// Values that override the file and the environment, typically from command-line flags.
/// `None` leaves the lower layer's value.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigOverrides {
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--max-timeout`.
    pub max_timeout_s: Option<u64>,
    /// `--default-timeout`.
    pub default_timeout_s: Option<u64>,
    /// `--log-json`.
    pub log_json: Option<bool>,
    /// `--guest-exe`.
    pub guest_exe: Option<PathBuf>,
    /// Reaper period in milliseconds.
    pub reaper_interval_ms: Option<u64>,
    /// Reconciler period in milliseconds.
    pub reconcile_interval_ms: Option<u64>,
    /// `--max-sandboxes-per-team`.
    pub max_sandboxes_per_team: Option<u64>,
    /// Domain of preview URLs.
    pub preview_domain: Option<String>,
    /// The `[network]` table (replaces the defaults as a whole).
    pub network: Option<crate::network::NetworkConfig>,
    /// `HUTCH_NETWORK_POOL`: the sandbox address pool alone.
    #[serde(skip)]
    pub network_pool: Option<String>,
    /// `HUTCH_SECRETS_KEY` (not accepted in the TOML file: keep keys out of config files).
    #[serde(skip)]
    pub secrets_key: Option<crate::secrets::SecretsKey>,
}

impl ConfigOverrides {
    fn apply(self, cfg: &mut ServerConfig) {
        let ConfigOverrides {
            listen,
            data_dir,
            max_timeout_s,
            default_timeout_s,
            log_json,
            guest_exe,
            reaper_interval_ms,
            reconcile_interval_ms,
            max_sandboxes_per_team,
            network,
            network_pool,
            preview_domain,
            secrets_key,
        } = self;
        if let Some(v) = secrets_key {
            cfg.secrets_key = Some(v);
        }
        if let Some(v) = network {
            cfg.network = v;
        }
        if let Some(v) = network_pool {
            cfg.network.pool = v;
        }
        if let Some(v) = listen {
            cfg.listen = v;
        }
        if let Some(v) = data_dir {
            cfg.data_dir = v;
        }
        if let Some(v) = max_timeout_s {
            cfg.max_timeout_s = v;
        }
        if let Some(v) = default_timeout_s {
            cfg.default_timeout_s = v;
        }
        if let Some(v) = log_json {
            cfg.log_json = v;
        }
        if let Some(v) = guest_exe {
            cfg.guest_exe = Some(v);
        }
        if let Some(v) = reaper_interval_ms {
            cfg.reaper_interval_ms = v;
        }
        if let Some(v) = reconcile_interval_ms {
            cfg.reconcile_interval_ms = v;
        }
        if let Some(v) = max_sandboxes_per_team {
            cfg.max_sandboxes_per_team = v;
        }
        if let Some(v) = preview_domain {
            cfg.preview_domain = crate::previews::normalize_domain(&v);
        }
    }
}

/// Environment variables read by [`ServerConfig::load`], with the field each sets.
pub const ENV_VARS: &[(&str, &str)] = &[
    ("HUTCH_LISTEN", "listen"),
    ("HUTCH_DATA_DIR", "data_dir"),
    ("HUTCH_MAX_TIMEOUT_S", "max_timeout_s"),
    ("HUTCH_DEFAULT_TIMEOUT_S", "default_timeout_s"),
    ("HUTCH_LOG_JSON", "log_json"),
    ("HUTCH_GUEST_EXE", "guest_exe"),
    ("HUTCH_REAPER_INTERVAL_MS", "reaper_interval_ms"),
    ("HUTCH_MAX_SANDBOXES_PER_TEAM", "max_sandboxes_per_team"),
    ("HUTCH_RECONCILE_INTERVAL_MS", "reconcile_interval_ms"),
    ("HUTCH_PREVIEW_DOMAIN", "preview_domain"),
    ("HUTCH_NETWORK_POOL", "network.pool"),
    ("HUTCH_SECRETS_KEY", "secrets_key"),
];

impl ServerConfig {
    /// Loads the configuration: defaults < `file` (TOML, same field names as [`ConfigOverrides`])
    /// < `HUTCH_*` environment variables < `overrides`. Validates the result.
    pub fn load(file: Option<&Path>, overrides: ConfigOverrides) -> Result<Self, Error> {
        Self::load_with_env(file, std::env::vars(), overrides)
    }

    /// [`ServerConfig::load`] with an explicit environment (for tests).
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: ConfigOverrides,
    ) -> Result<Self, Error> {
        let mut cfg = ServerConfig::default();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
                message: format!("cannot read {}: {e}", path.display()),
            })?;
            let from_file: ConfigOverrides = toml::from_str(&text).map_err(|e| Error::Config {
                message: format!("{}: {e}", path.display()),
            })?;
            from_file.apply(&mut cfg);
            cfg.config_file = Some(path.to_path_buf());
        }
        env_overrides(env)?.apply(&mut cfg);
        overrides.apply(&mut cfg);
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks that the values make sense together.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |message: &str| {
            Err(Error::Config {
                message: message.to_owned(),
            })
        };
        if self.max_timeout_s == 0 {
            return bad("max_timeout_s must be at least 1");
        }
        if self.default_timeout_s == 0 || self.default_timeout_s > self.max_timeout_s {
            return bad("default_timeout_s must be between 1 and max_timeout_s");
        }
        if self.reaper_interval_ms == 0 || self.reconcile_interval_ms == 0 {
            return bad("background intervals must be at least 1 ms");
        }
        if !crate::previews::is_valid_domain(&self.preview_domain) {
            return bad("preview_domain must be a host name such as preview.example.com");
        }
        Ok(())
    }
}

fn env_overrides(
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<ConfigOverrides, Error> {
    fn parse<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, Error> {
        value.trim().parse().map_err(|_| Error::Config {
            message: format!("invalid value for {name}"),
        })
    }
    let mut o = ConfigOverrides::default();
    for (name, value) in env {
        match name.as_str() {
            "HUTCH_LISTEN" => o.listen = Some(parse(&name, &value)?),
            "HUTCH_DATA_DIR" => o.data_dir = Some(PathBuf::from(value)),
            "HUTCH_MAX_TIMEOUT_S" => o.max_timeout_s = Some(parse(&name, &value)?),
            "HUTCH_MAX_SANDBOXES_PER_TEAM" => {
                o.max_sandboxes_per_team = Some(parse(&name, &value)?)
            }
            "HUTCH_DEFAULT_TIMEOUT_S" => o.default_timeout_s = Some(parse(&name, &value)?),
            "HUTCH_LOG_JSON" => {
                o.log_json = Some(matches!(value.trim(), "1" | "true" | "yes" | "on"));
            }
            "HUTCH_GUEST_EXE" => o.guest_exe = Some(PathBuf::from(value)),
            "HUTCH_REAPER_INTERVAL_MS" => o.reaper_interval_ms = Some(parse(&name, &value)?),
            "HUTCH_RECONCILE_INTERVAL_MS" => o.reconcile_interval_ms = Some(parse(&name, &value)?),
            "HUTCH_PREVIEW_DOMAIN" => o.preview_domain = Some(value),
            "HUTCH_NETWORK_POOL" => o.network_pool = Some(value.trim().to_owned()),
            "HUTCH_SECRETS_KEY" => {
                o.secrets_key = Some(crate::secrets::SecretsKey::parse(&value)?);
            }
            _ => {}
        }
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_override_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hutch.toml");
        std::fs::write(
            &file,
            "listen = \"0.0.0.0:8000\"\nmax_timeout_s = 100\ndefault_timeout_s = 50\n",
        )
        .unwrap();
        let env = vec![
            ("HUTCH_DATA_DIR".to_string(), "/tmp/x".to_string()),
            ("HUTCH_MAX_TIMEOUT_S".to_string(), "200".to_string()),
            ("HUTCH_LOG_JSON".to_string(), "true".to_string()),
            ("OTHER".to_string(), "ignored".to_string()),
        ];
        let cfg = ServerConfig::load_with_env(
            Some(&file),
            env,
            ConfigOverrides {
                max_timeout_s: Some(300),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(cfg.listen, "0.0.0.0:8000".parse().unwrap());
        assert_eq!(cfg.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(cfg.max_timeout_s, 300);
        assert_eq!(cfg.default_timeout_s, 50);
        assert!(cfg.log_json);
        assert_eq!(cfg.config_file.as_deref(), Some(file.as_path()));
    }

    #[test]
    fn defaults_and_errors() {
        let cfg =
            ServerConfig::load_with_env(None, Vec::new(), ConfigOverrides::default()).unwrap();
        assert_eq!(cfg, ServerConfig::default());
        let bad = vec![("HUTCH_LISTEN".to_string(), "nope".to_string())];
        assert!(ServerConfig::load_with_env(None, bad, ConfigOverrides::default()).is_err());
        let over = ConfigOverrides {
            default_timeout_s: Some(10),
            max_timeout_s: Some(5),
            ..Default::default()
        };
        assert!(ServerConfig::load_with_env(None, Vec::new(), over).is_err());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "unknown_key = 1\n").unwrap();
        assert!(
            ServerConfig::load_with_env(Some(&file), Vec::new(), ConfigOverrides::default())
                .is_err()
        );
    }
}
