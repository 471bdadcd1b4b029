//! Ports inside a sandbox: preview URLs (HTTP and WebSocket routed by host name) and port
//! forwarding (TCP over a WebSocket).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Header carrying a sandbox's preview token on preview requests.
pub const PREVIEW_TOKEN_HEADER: &str = "x-hutch-preview-token";

/// Query parameter carrying a preview token (the server answers with a cookie and a redirect
/// that drops it from the URL).
pub const PREVIEW_TOKEN_QUERY: &str = "hutch_preview_token";

/// Cookie carrying a preview token (`HttpOnly`, scoped to one preview host).
pub const PREVIEW_TOKEN_COOKIE: &str = "hutch_preview_token";

/// The `Upgrade` protocol of the guest's raw TCP tunnel (`GET /ports/{port}/connect`).
pub const TCP_TUNNEL_PROTOCOL: &str = "hutch-tcp";

/// Who may open a sandbox's preview URLs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewAccess {
    /// `true`: anyone who knows the URL; `false` (the default): only requests presenting the
    /// sandbox's preview token.
    pub public: bool,
}

/// How to reach one port of a sandbox from a browser.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PreviewInfo {
    /// The sandbox.
    pub sandbox_id: String,
    /// The port inside the sandbox.
    pub port: u16,
    /// `http://{port}-{id}.{preview_domain}[:{port of the API}]/`.
    pub url: String,
    /// The URL with the token as a query parameter: opening it in a browser sets a cookie for
    /// the preview host and redirects to `url`.
    pub url_with_token: String,
    /// The sandbox's preview token (header `X-Hutch-Preview-Token`, query `hutch_preview_token`
    /// or the cookie). Secret: it grants access to every port of the sandbox while previews are
    /// not public.
    pub token: String,
    /// Whether the sandbox's previews are public (no token needed).
    pub public: bool,
}
