//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` attributes.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{
    events, guest, keys, network, ops, ports, sandboxes, secrets, teams, templates,
};

/// Adds the two ways of presenting an API key.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "`Authorization: Bearer hk_…` (or the `X-API-Key` header)",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key_header",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Hutch API",
        description = "Self-hosted sandboxes for AI agents. Every error is \
            `{\"error\":{\"code\",\"message\",\"details\"?}}`; objects of another team are 404.",
        license(name = "Apache-2.0")
    ),
    modifiers(&Security),
    paths(
        ops::healthz, ops::readyz, ops::metrics, ops::openapi_json, ops::docs,
        sandboxes::create, sandboxes::list, sandboxes::get, sandboxes::delete,
        sandboxes::set_timeout, sandboxes::keepalive, sandboxes::pause, sandboxes::resume,
        guest::health, guest::start_process, guest::list_processes, guest::get_process,
        guest::delete_process, guest::wait_process, guest::process_stdin, guest::signal_process,
        guest::process_output, guest::exec,
        guest::create_terminal, guest::list_terminals, guest::get_terminal, guest::delete_terminal,
        guest::terminal_screen, guest::terminal_input, guest::terminal_resize, guest::terminal_attach,
        guest::read_file, guest::write_file, guest::delete_file, guest::list_files, guest::stat_file,
        guest::make_dir, guest::move_file, guest::download_archive, guest::upload_archive,
        guest::watch_files,
        ports::get_access, ports::set_access, ports::preview, ports::connect,
        templates::list, templates::import, templates::delete,
        events::list,
        network::get_network, network::set_network, network::list_egress,
        network::list_approvals, network::get_approval, network::approve, network::deny,
        keys::create, keys::list, keys::revoke,
        teams::create, teams::list,
        secrets::create, secrets::list, secrets::get, secrets::update, secrets::delete,
    ),
    components(schemas(
        hutch_api::ErrorBody, hutch_api::ApiError, hutch_api::ErrorCode,
        hutch_api::sandbox::SandboxState, hutch_api::sandbox::OnTimeout,
        hutch_api::sandbox::NetworkSpec,
        hutch_api::network::AllowRule, hutch_api::network::AllowRuleSpec,
        hutch_api::network::CredentialRule, hutch_api::network::NetworkInfo,
        hutch_api::network::EgressEntry, hutch_api::network::Approval,
        hutch_api::network::ApprovalState, hutch_api::network::ApproveRequest,
        hutch_api::network::DenyRequest, hutch_api::network::AccessRequest,
        hutch_api::terminal::AttachControl,
    )),
    tags(
        (name = "sandboxes", description = "Sandbox lifecycle"),
        (name = "sandbox: processes", description = "Processes inside a sandbox (served by its guest)"),
        (name = "sandbox: terminals", description = "PTY sessions inside a sandbox"),
        (name = "sandbox: files", description = "Files inside a sandbox"),
        (name = "sandbox: ports", description = "Preview URLs and port forwarding"),
        (name = "templates", description = "Root filesystem templates"),
        (name = "events", description = "Lifecycle and audit events"),
        (name = "secrets", description = "Team secrets: write-only values, encrypted at rest"),
        (name = "admin", description = "API keys and teams (admin keys only)"),
        (name = "ops", description = "Health, readiness, metrics, documentation"),
    )
)]
struct ApiDoc;

/// The OpenAPI document of this server.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// `(METHOD, path)` of every documented operation.
pub fn documented_routes() -> Vec<(String, String)> {
    let doc = document();
    let mut out = Vec::new();
    for (path, item) in &doc.paths.paths {
        let ops = [
            ("GET", &item.get),
            ("PUT", &item.put),
            ("POST", &item.post),
            ("DELETE", &item.delete),
            ("OPTIONS", &item.options),
            ("HEAD", &item.head),
            ("PATCH", &item.patch),
            ("TRACE", &item.trace),
        ];
        for (method, op) in ops {
            if op.is_some() {
                out.push((method.to_owned(), path.clone()));
            }
        }
    }
    out
}
