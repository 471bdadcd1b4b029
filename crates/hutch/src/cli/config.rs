//! Client configuration: `~/.config/hutch/config.toml` and `hutch login`.
//!
//! Precedence, per setting: `--url`/`--api-key` flags, then `HUTCH_URL`/`HUTCH_API_KEY` (clap
//! merges these two), then the config file, then the default URL.

use std::io::{IsTerminal, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use serde::{Deserialize, Serialize};

use super::client::Client;

/// The server URL used when nothing else names one.
pub const DEFAULT_URL: &str = "http://127.0.0.1:7070";

/// Contents of the config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileConfig {
    /// Base URL of the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
}

/// The connection settings a command uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Base URL without a trailing slash.
    pub url: String,
    /// API key, if any.
    pub api_key: Option<String>,
}

/// Merge flag/env values (already merged by clap) with the config file.
pub fn resolve(url: Option<String>, api_key: Option<String>, file: FileConfig) -> Resolved {
    let url = non_empty(url)
        .or(non_empty(file.url))
        .unwrap_or_else(|| DEFAULT_URL.to_owned());
    let api_key = non_empty(api_key).or(non_empty(file.api_key));
    Resolved {
        url: normalize_url(&url),
        api_key,
    }
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// Trim trailing slashes and add `http://` when no scheme is given.
pub fn normalize_url(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    }
}

/// Path of the config file: `$HUTCH_CLI_CONFIG`, else `$XDG_CONFIG_HOME/hutch/config.toml`, else
/// `~/.config/hutch/config.toml`.
pub fn config_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HUTCH_CLI_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|p| !p.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })?;
    Some(base.join("hutch").join("config.toml"))
}

/// Parse a config file's text.
pub fn parse_file(text: &str) -> anyhow::Result<FileConfig> {
    Ok(toml::from_str(text)?)
}

/// Load the config file; a missing file is an empty config.
pub fn load_file() -> anyhow::Result<FileConfig> {
    let Some(path) = config_path() else {
        return Ok(FileConfig::default());
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            parse_file(&text).with_context(|| format!("invalid config file {}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileConfig::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Write the config file with mode 0600 (its directory 0700).
pub fn save_file(cfg: &FileConfig) -> anyhow::Result<PathBuf> {
    let Some(path) = config_path() else {
        bail!("cannot find a config directory: set HOME")
    };
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let text = toml::to_string(cfg)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    // An existing file keeps its mode on open: tighten it.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(text.as_bytes())?;
    Ok(path)
}

/// `hutch login`.
#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Server URL to save [default: the current one, else http://127.0.0.1:7070].
    #[arg(long, env = "HUTCH_URL", value_name = "URL")]
    pub url: Option<String>,
    /// API key to save; read from stdin when not given.
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
}

/// Check the URL and key against the server, then save them.
pub async fn login(args: LoginArgs) -> anyhow::Result<()> {
    let file = load_file()?;
    let key = match non_empty(args.key) {
        Some(k) => k,
        None => read_key()?,
    };
    let resolved = resolve(args.url, Some(key.clone()), file);
    let client = Client::new(resolved.clone())?;
    client
        .get_json::<serde_json::Value>("/v1/sandboxes", &[("limit", "1".to_owned())])
        .await
        .context("login failed")?;
    let path = save_file(&FileConfig {
        url: Some(resolved.url.clone()),
        api_key: Some(key),
    })?;
    eprintln!(
        "Logged in to {} (saved to {})",
        resolved.url,
        path.display()
    );
    Ok(())
}

fn read_key() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    let mut text = String::new();
    if stdin.is_terminal() {
        eprint!("API key: ");
        std::io::stderr().flush()?;
        read_line_quietly(&mut text)?;
        eprintln!();
    } else {
        stdin.lock().read_to_string(&mut text)?;
    }
    let key = text.trim().to_owned();
    if key.is_empty() {
        bail!("no API key given (pass --key or write it to stdin)");
    }
    Ok(key)
}

/// Read a line from the terminal on stdin without echoing it.
pub(crate) fn read_line_quietly(text: &mut String) -> anyhow::Result<()> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin).ok();
    if let Some(saved) = &saved {
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &quiet);
    }
    let res = stdin.read_line(text);
    if let Some(saved) = &saved {
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, saved);
    }
    res?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(url: Option<&str>, key: Option<&str>) -> FileConfig {
        FileConfig {
            url: url.map(Into::into),
            api_key: key.map(Into::into),
        }
    }

    #[test]
    fn precedence() {
        // Nothing anywhere: the default URL, no key.
        let r = resolve(None, None, FileConfig::default());
        assert_eq!(
            r,
            Resolved {
                url: DEFAULT_URL.into(),
                api_key: None
            }
        );
        // The file fills in what flags/env do not give.
        let r = resolve(None, None, file(Some("http://f:1/"), Some("kf")));
        assert_eq!(
            r,
            Resolved {
                url: "http://f:1".into(),
                api_key: Some("kf".into())
            }
        );
        // Flags/env win, per setting.
        let r = resolve(
            Some("http://e:2".into()),
            None,
            file(Some("http://f:1"), Some("kf")),
        );
        assert_eq!(
            r,
            Resolved {
                url: "http://e:2".into(),
                api_key: Some("kf".into())
            }
        );
        let r = resolve(
            None,
            Some("ke".into()),
            file(Some("http://f:1"), Some("kf")),
        );
        assert_eq!(
            r,
            Resolved {
                url: "http://f:1".into(),
                api_key: Some("ke".into())
            }
        );
        // Empty values count as unset.
        let r = resolve(Some("".into()), Some(" ".into()), file(None, Some("kf")));
        assert_eq!(
            r,
            Resolved {
                url: DEFAULT_URL.into(),
                api_key: Some("kf".into())
            }
        );
    }

    #[test]
    fn urls() {
        assert_eq!(normalize_url("localhost:7070"), "http://localhost:7070");
        assert_eq!(normalize_url("http://h:1//"), "http://h:1");
        assert_eq!(normalize_url("https://h/base/"), "https://h/base");
    }

    #[test]
    fn file_format() {
        let cfg = parse_file("url = \"http://h:1\"\napi_key = \"hk_x\"\n").unwrap();
        assert_eq!(cfg, file(Some("http://h:1"), Some("hk_x")));
        assert_eq!(parse_file("").unwrap(), FileConfig::default());
        assert!(parse_file("url = 3").is_err());
        let text = toml::to_string(&cfg).unwrap();
        assert_eq!(parse_file(&text).unwrap(), cfg);
    }
}
