//! HTTP routes. [`table`] is the single list of (method, path, handler) the router is built from
//! and the OpenAPI contract test enumerates.

pub mod events;
pub mod guest;
pub mod keys;
pub mod network;
pub mod ops;
pub mod ports;
pub mod sandboxes;
pub mod secrets;
pub mod teams;
pub mod templates;

use axum::routing::{MethodRouter, delete, get, post, put};
use http::Method;

use crate::state::AppState;

/// One route: method, path template (axum and OpenAPI share the `{param}` syntax) and handler.
pub struct RouteDef {
    /// HTTP method.
    pub method: Method,
    /// Path template.
    pub path: &'static str,
    /// Handler.
    pub handler: MethodRouter<AppState>,
}

fn r(method: Method, path: &'static str, handler: MethodRouter<AppState>) -> RouteDef {
    RouteDef {
        method,
        path,
        handler,
    }
}

/// Every route of the server.
pub fn table() -> Vec<RouteDef> {
    use Method as M;
    vec![
        // Ops (no auth).
        r(M::GET, "/healthz", get(ops::healthz)),
        r(M::GET, "/readyz", get(ops::readyz)),
        r(M::GET, "/metrics", get(ops::metrics)),
        r(M::GET, "/v1/openapi.json", get(ops::openapi_json)),
        r(M::GET, "/docs", get(ops::docs)),
        // Sandboxes.
        r(M::POST, "/v1/sandboxes", post(sandboxes::create)),
        r(M::GET, "/v1/sandboxes", get(sandboxes::list)),
        r(M::GET, "/v1/sandboxes/{id}", get(sandboxes::get)),
        r(M::DELETE, "/v1/sandboxes/{id}", delete(sandboxes::delete)),
        r(
            M::POST,
            "/v1/sandboxes/{id}/timeout",
            post(sandboxes::set_timeout),
        ),
        r(
            M::POST,
            "/v1/sandboxes/{id}/keepalive",
            post(sandboxes::keepalive),
        ),
        r(M::POST, "/v1/sandboxes/{id}/pause", post(sandboxes::pause)),
        r(
            M::POST,
            "/v1/sandboxes/{id}/resume",
            post(sandboxes::resume),
        ),
        // Proxied to the guest.
        r(M::GET, "/v1/sandboxes/{id}/health", get(guest::health)),
        r(
            M::POST,
            "/v1/sandboxes/{id}/processes",
            post(guest::start_process),
        ),
        r(
            M::GET,
            "/v1/sandboxes/{id}/processes",
            get(guest::list_processes),
        ),
        r(
            M::GET,
            "/v1/sandboxes/{id}/processes/{pid}",
            get(guest::get_process),
        ),
        r(
            M::DELETE,
            "/v1/sandboxes/{id}/processes/{pid}",
            delete(guest::delete_process),
        ),
        r(
            M::POST,
            "/v1/sandboxes/{id}/processes/{pid}/wait",
            post(guest::wait_process),
        ),
        r(
            M::POST,
            "/v1/sandboxes/{id}/processes/{pid}/stdin",
            post(guest::process_stdin),
        ),
        r(
            M::POST,
            "/v1/sandboxes/{id}/processes/{pid}/signal",
            post(guest::signal_process),
        ),
        r(
            M::GET,
            "/v1/sandboxes/{id}/processes/{pid}/output",
            get(guest::process_output),
        ),
        r(M::POST, "/v1/sandboxes/{id}/exec", post(guest::exec)),
        r(
            M::POST,
            "/v1/sandboxes/{id}/terminals",
            post(guest::create_terminal),
        ),
        r(
            M::GET,
            "/v1/sandboxes/{id}/terminals",
            get(guest::list_terminals),
        ),
        r(
            M::GET,
            "/v1/sandboxes/{id}/terminals/{name}",
            get(guest::get_terminal),
        ),
        r(
            M::DELETE,
            "/v1/sandboxes/{id}/terminals/{name}",
            delete(guest::delete_terminal),
        ),
        r(
            M::GET,
            "/v1/sandboxes/{id}/terminals/{name}/screen",
            get(guest::terminal_screen),
        ),
        r(
            M::POST,
            "/v1/sandboxes/{id}/terminals/{name}/input",
            post(guest::terminal_input),
        ),
        r(
            M::POST,
            "/v1/sandboxes/{id}/terminals/{name}/resize",
            post(guest::terminal_resize),
        ),
        r(
            M::GET,
            "/v1/sandboxes/{id}/terminals/{name}/attach",
            get(guest::terminal_attach),
        ),
        r(M::GET, "/v1/sandboxes/{id}/files", get(guest::read_file)),
        r(M::PUT, "/v1/sandboxes/{id}/files", put(guest::write_file)),
        r(
            M::DELETE,
            "/v1/sandboxes/{id}/files",
            delete(guest::delete_file),
        ),
        r(
            M::GET,
            "/v1/sandboxes/{id}/files/list",
            get(guest::list_files),
        ),
        r(
            M::GET,
            "/v1/sandboxes/{id}/files/stat",
            get(guest::stat_file),
        ),
        r(
            M::POST,
            "/v1/sandboxes/{id}/files/mkdir",
            post(guest::make_dir),
        ),
        r(
            M::POST,
            "/v1/sandboxes/{id}/files/move",
            post(guest::move_file),
        ),
        r(
            M::GET,
            "/v1/sandboxes/{id}/files/archive",
            get(guest::download_archive),
        ),
        r(
            M::PUT,
            "/v1/sandboxes/{id}/files/archive",
            put(guest::upload_archive),
        ),
        r(
            M::GET,
            "/v1/sandboxes/{id}/files/watch",
            get(guest::watch_files),
        ),
        // Previews and port forwarding.
        r(
            M::GET,
            "/v1/sandboxes/{id}/previews",
            get(ports::get_access),
        ),
        r(
            M::PUT,
            "/v1/sandboxes/{id}/previews",
            put(ports::set_access),
        ),
        r(
            M::GET,
            "/v1/sandboxes/{id}/ports/{port}/preview",
            get(ports::preview),
        ),
        r(
            M::GET,
            "/v1/sandboxes/{id}/ports/{port}/connect",
            get(ports::connect),
        ),
        // Network, egress log, access requests.
        r(
            M::GET,
            "/v1/sandboxes/{id}/network",
            get(network::get_network),
        ),
        r(
            M::PUT,
            "/v1/sandboxes/{id}/network",
            put(network::set_network),
        ),
        r(
            M::GET,
            "/v1/sandboxes/{id}/egress",
            get(network::list_egress),
        ),
        r(M::GET, "/v1/approvals", get(network::list_approvals)),
        r(M::GET, "/v1/approvals/{id}", get(network::get_approval)),
        r(
            M::POST,
            "/v1/approvals/{id}/approve",
            post(network::approve),
        ),
        r(M::POST, "/v1/approvals/{id}/deny", post(network::deny)),
        // Templates.
        r(M::GET, "/v1/templates", get(templates::list)),
        r(M::POST, "/v1/templates", post(templates::import)),
        r(M::DELETE, "/v1/templates/{name}", delete(templates::delete)),
        // Events.
        r(M::GET, "/v1/events", get(events::list)),
        // Admin.
        r(M::POST, "/v1/keys", post(keys::create)),
        r(M::GET, "/v1/keys", get(keys::list)),
        r(M::DELETE, "/v1/keys/{id}", delete(keys::revoke)),
        r(M::POST, "/v1/teams", post(teams::create)),
        r(M::GET, "/v1/teams", get(teams::list)),
        // Secrets.
        r(M::POST, "/v1/secrets", post(secrets::create)),
        r(M::GET, "/v1/secrets", get(secrets::list)),
        r(M::GET, "/v1/secrets/{name}", get(secrets::get)),
        r(M::PUT, "/v1/secrets/{name}", put(secrets::update)),
        r(M::DELETE, "/v1/secrets/{name}", delete(secrets::delete)),
    ]
}

/// `(METHOD, path)` of every route, for the OpenAPI contract test.
pub fn route_list() -> Vec<(String, String)> {
    table()
        .into_iter()
        .map(|r| (r.method.to_string(), r.path.to_owned()))
        .collect()
}
