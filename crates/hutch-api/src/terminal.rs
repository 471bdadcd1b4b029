//! Terminals: named PTY sessions that outlive client connections.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Create a terminal session.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTerminal {
    /// Session name (`[A-Za-z0-9_.-]{1,64}`); generated (`t-N`) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Program and arguments; default the user's login shell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default = "default_cols")]
    pub cols: u16,
    #[serde(default = "default_rows")]
    pub rows: u16,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

fn default_cols() -> u16 {
    80
}
fn default_rows() -> u16 {
    24
}

/// A terminal session.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TerminalInfo {
    pub name: String,
    pub pid: i32,
    pub cmd: Vec<String>,
    pub cols: u16,
    pub rows: u16,
    pub created_at: DateTime<Utc>,
    /// False once the program exited (the screen can still be captured).
    pub alive: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// Input for a terminal: literal text and/or named keys, sent in that order.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TerminalInput {
    /// Literal text, sent as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Named keys after the text: `Enter`, `Tab`, `Escape`, `Backspace`, `Up`, `Down`, `Left`,
    /// `Right`, `Home`, `End`, `PageUp`, `PageDown`, `Delete`, `Space`, `C-a` … `C-z`, `M-x`, `F1`–`F12`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
}

/// Resize a terminal.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TerminalResize {
    pub cols: u16,
    pub rows: u16,
}

/// What the terminal shows now.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TerminalScreen {
    pub name: String,
    /// The visible screen, one line per row, trailing blanks trimmed.
    pub text: String,
    /// Lines that scrolled off the top (oldest first), when asked for with `scrollback=N`.
    #[serde(default)]
    pub scrollback: Vec<String>,
    pub cursor_row: u16,
    pub cursor_col: u16,
    pub cols: u16,
    pub rows: u16,
    pub alive: bool,
}

/// Control messages a WebSocket attach client sends as text frames (binary frames are raw input).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AttachControl {
    Resize { cols: u16, rows: u16 },
    Input { data: String },
}
