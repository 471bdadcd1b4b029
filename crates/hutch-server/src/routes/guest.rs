//! Sandbox-scoped routes served by the sandbox's guest (`/v1/sandboxes/{id}/…`).
//!
//! Each route has its own handler (so it is documented in OpenAPI) and every handler delegates to
//! [`crate::proxy::proxy`] after authentication.

use axum::extract::{Request, State};
use axum::response::Response;
#[allow(unused_imports)]
use hutch_api::{
    ErrorBody,
    files::{FileInfo, FileList, MakeDir, MoveFile, WatchEvent},
    health::GuestHealth,
    process::{ProcessEvent, ProcessInfo, RunResult, SignalRequest, StartProcess, StdinWrite},
    terminal::{CreateTerminal, TerminalInfo, TerminalInput, TerminalResize, TerminalScreen},
};

use crate::auth::Caller;
use crate::proxy::proxy;
use crate::state::AppState;

/// Defines a handler that proxies to the guest, with its OpenAPI attribute.
macro_rules! proxied {
    ($(#[$attr:meta])* $name:ident) => {
        $(#[$attr])*
        pub async fn $name(
            State(state): State<AppState>,
            caller: Caller,
            req: Request,
        ) -> Response {
            proxy(state, caller, req).await
        }
    };
}

proxied! {
    /// Health and resource usage of the sandbox's guest.
    #[utoipa::path(get, path = "/v1/sandboxes/{id}/health", tag = "sandbox: processes",
        params(("id" = String, Path, description = "Sandbox id")),
        responses((status = 200, description = "Guest health", body = GuestHealth),
                  (status = 404, description = "No such sandbox", body = ErrorBody),
                  (status = 409, description = "Sandbox paused or stopped", body = ErrorBody)),
        security(("api_key" = [])))]
    health
}

proxied! {
    /// Start a process. With `?stream=ndjson|sse` (or an `Accept` of `application/x-ndjson` or
    /// `text/event-stream`) the response is the stream of `ProcessEvent`s until it exits.
    #[utoipa::path(post, path = "/v1/sandboxes/{id}/processes", tag = "sandbox: processes",
        params(("id" = String, Path, description = "Sandbox id"),
               ("stream" = Option<String>, Query, description = "`ndjson` or `sse` to stream events")),
        request_body = StartProcess,
        responses((status = 201, description = "Started", body = ProcessInfo),
                  (status = 200, description = "Event stream: NDJSON lines (or SSE with stream=sse)", body = ProcessEvent,
                   content_type = "application/x-ndjson"),
                  (status = 409, description = "Sandbox paused or stopped", body = ErrorBody)),
        security(("api_key" = [])))]
    start_process
}

proxied! {
    /// List processes.
    #[utoipa::path(get, path = "/v1/sandboxes/{id}/processes", tag = "sandbox: processes",
        params(("id" = String, Path, description = "Sandbox id"),
               ("state" = Option<String>, Query, description = "`running` or `exited`"),
               ("tag" = Option<String>, Query, description = "Only processes with this tag")),
        responses((status = 200, description = "Processes", body = Vec<ProcessInfo>)),
        security(("api_key" = [])))]
    list_processes
}

proxied! {
    /// One process.
    #[utoipa::path(get, path = "/v1/sandboxes/{id}/processes/{pid}", tag = "sandbox: processes",
        params(("id" = String, Path, description = "Sandbox id"),
               ("pid" = String, Path, description = "Process id (`p-N`)")),
        responses((status = 200, description = "The process", body = ProcessInfo),
                  (status = 404, description = "No such process", body = ErrorBody)),
        security(("api_key" = [])))]
    get_process
}

proxied! {
    /// Kill a process (if running) and forget it.
    #[utoipa::path(delete, path = "/v1/sandboxes/{id}/processes/{pid}", tag = "sandbox: processes",
        params(("id" = String, Path, description = "Sandbox id"),
               ("pid" = String, Path, description = "Process id")),
        responses((status = 204, description = "Removed"),
                  (status = 404, description = "No such process", body = ErrorBody)),
        security(("api_key" = [])))]
    delete_process
}

proxied! {
    /// Wait until a process exits (or `timeout_ms` passes).
    #[utoipa::path(post, path = "/v1/sandboxes/{id}/processes/{pid}/wait", tag = "sandbox: processes",
        params(("id" = String, Path, description = "Sandbox id"),
               ("pid" = String, Path, description = "Process id"),
               ("timeout_ms" = Option<u64>, Query, description = "Give up after this long")),
        responses((status = 200, description = "The process", body = ProcessInfo),
                  (status = 504, description = "Still running", body = ErrorBody)),
        security(("api_key" = [])))]
    wait_process
}

proxied! {
    /// Write to a process's stdin.
    #[utoipa::path(post, path = "/v1/sandboxes/{id}/processes/{pid}/stdin", tag = "sandbox: processes",
        params(("id" = String, Path, description = "Sandbox id"),
               ("pid" = String, Path, description = "Process id")),
        request_body = StdinWrite,
        responses((status = 204, description = "Written"),
                  (status = 409, description = "Stdin closed", body = ErrorBody)),
        security(("api_key" = [])))]
    process_stdin
}

proxied! {
    /// Send a signal to a process group.
    #[utoipa::path(post, path = "/v1/sandboxes/{id}/processes/{pid}/signal", tag = "sandbox: processes",
        params(("id" = String, Path, description = "Sandbox id"),
               ("pid" = String, Path, description = "Process id")),
        request_body = SignalRequest,
        responses((status = 204, description = "Sent"),
                  (status = 422, description = "Unknown signal", body = ErrorBody)),
        security(("api_key" = [])))]
    signal_process
}

proxied! {
    /// A process's output: replay from `offset`, optionally following (`stream=ndjson|sse`).
    #[utoipa::path(get, path = "/v1/sandboxes/{id}/processes/{pid}/output", tag = "sandbox: processes",
        params(("id" = String, Path, description = "Sandbox id"),
               ("pid" = String, Path, description = "Process id"),
               ("offset" = Option<u64>, Query, description = "Start at this byte offset"),
               ("stream" = Option<String>, Query, description = "`ndjson` or `sse` to follow")),
        responses((status = 200, description = "Output events", body = Vec<ProcessEvent>)),
        security(("api_key" = [])))]
    process_output
}

proxied! {
    /// Run a command to completion and return its output.
    #[utoipa::path(post, path = "/v1/sandboxes/{id}/exec", tag = "sandbox: processes",
        params(("id" = String, Path, description = "Sandbox id"),
               ("max_output" = Option<u64>, Query, description = "Output bytes to collect")),
        request_body = StartProcess,
        responses((status = 200, description = "Finished", body = RunResult),
                  (status = 409, description = "Sandbox paused or stopped", body = ErrorBody)),
        security(("api_key" = [])))]
    exec
}

proxied! {
    /// Create a terminal (PTY session).
    #[utoipa::path(post, path = "/v1/sandboxes/{id}/terminals", tag = "sandbox: terminals",
        params(("id" = String, Path, description = "Sandbox id")),
        request_body = CreateTerminal,
        responses((status = 201, description = "Created", body = TerminalInfo),
                  (status = 409, description = "Name taken", body = ErrorBody)),
        security(("api_key" = [])))]
    create_terminal
}

proxied! {
    /// List terminals.
    #[utoipa::path(get, path = "/v1/sandboxes/{id}/terminals", tag = "sandbox: terminals",
        params(("id" = String, Path, description = "Sandbox id")),
        responses((status = 200, description = "Terminals", body = Vec<TerminalInfo>)),
        security(("api_key" = [])))]
    list_terminals
}

proxied! {
    /// One terminal.
    #[utoipa::path(get, path = "/v1/sandboxes/{id}/terminals/{name}", tag = "sandbox: terminals",
        params(("id" = String, Path, description = "Sandbox id"),
               ("name" = String, Path, description = "Terminal name")),
        responses((status = 200, description = "The terminal", body = TerminalInfo),
                  (status = 404, description = "No such terminal", body = ErrorBody)),
        security(("api_key" = [])))]
    get_terminal
}

proxied! {
    /// Close a terminal (kills its program).
    #[utoipa::path(delete, path = "/v1/sandboxes/{id}/terminals/{name}", tag = "sandbox: terminals",
        params(("id" = String, Path, description = "Sandbox id"),
               ("name" = String, Path, description = "Terminal name")),
        responses((status = 204, description = "Closed"),
                  (status = 404, description = "No such terminal", body = ErrorBody)),
        security(("api_key" = [])))]
    delete_terminal
}

proxied! {
    /// What the terminal shows now.
    #[utoipa::path(get, path = "/v1/sandboxes/{id}/terminals/{name}/screen", tag = "sandbox: terminals",
        params(("id" = String, Path, description = "Sandbox id"),
               ("name" = String, Path, description = "Terminal name"),
               ("scrollback" = Option<u32>, Query, description = "Lines of scrollback to include")),
        responses((status = 200, description = "The screen", body = TerminalScreen)),
        security(("api_key" = [])))]
    terminal_screen
}

proxied! {
    /// Send text and keys to a terminal.
    #[utoipa::path(post, path = "/v1/sandboxes/{id}/terminals/{name}/input", tag = "sandbox: terminals",
        params(("id" = String, Path, description = "Sandbox id"),
               ("name" = String, Path, description = "Terminal name")),
        request_body = TerminalInput,
        responses((status = 204, description = "Sent"),
                  (status = 422, description = "Unknown key", body = ErrorBody)),
        security(("api_key" = [])))]
    terminal_input
}

proxied! {
    /// Resize a terminal.
    #[utoipa::path(post, path = "/v1/sandboxes/{id}/terminals/{name}/resize", tag = "sandbox: terminals",
        params(("id" = String, Path, description = "Sandbox id"),
               ("name" = String, Path, description = "Terminal name")),
        request_body = TerminalResize,
        responses((status = 204, description = "Resized")),
        security(("api_key" = [])))]
    terminal_resize
}

proxied! {
    /// Attach to a terminal over WebSocket (binary frames: raw I/O; text frames: `AttachControl`).
    #[utoipa::path(get, path = "/v1/sandboxes/{id}/terminals/{name}/attach", tag = "sandbox: terminals",
        params(("id" = String, Path, description = "Sandbox id"),
               ("name" = String, Path, description = "Terminal name")),
        responses((status = 101, description = "Switching to WebSocket"),
                  (status = 404, description = "No such terminal", body = ErrorBody)),
        security(("api_key" = [])))]
    terminal_attach
}

proxied! {
    /// Read a file (raw bytes).
    #[utoipa::path(get, path = "/v1/sandboxes/{id}/files", tag = "sandbox: files",
        params(("id" = String, Path, description = "Sandbox id"),
               ("path" = String, Query, description = "Absolute path in the sandbox")),
        responses((status = 200, description = "File contents", content_type = "application/octet-stream"),
                  (status = 404, description = "No such file", body = ErrorBody)),
        security(("api_key" = [])))]
    read_file
}

proxied! {
    /// Write a file (raw bytes; parents are created).
    #[utoipa::path(put, path = "/v1/sandboxes/{id}/files", tag = "sandbox: files",
        params(("id" = String, Path, description = "Sandbox id"),
               ("path" = String, Query, description = "Absolute path in the sandbox"),
               ("mode" = Option<String>, Query, description = "Permission bits (octal)")),
        request_body(content = Vec<u8>, content_type = "application/octet-stream"),
        responses((status = 201, description = "Written", body = FileInfo)),
        security(("api_key" = [])))]
    write_file
}

proxied! {
    /// Delete a file or directory.
    #[utoipa::path(delete, path = "/v1/sandboxes/{id}/files", tag = "sandbox: files",
        params(("id" = String, Path, description = "Sandbox id"),
               ("path" = String, Query, description = "Absolute path in the sandbox"),
               ("recursive" = Option<bool>, Query, description = "Delete directories with their contents")),
        responses((status = 204, description = "Deleted"),
                  (status = 404, description = "No such file", body = ErrorBody)),
        security(("api_key" = [])))]
    delete_file
}

proxied! {
    /// List a directory.
    #[utoipa::path(get, path = "/v1/sandboxes/{id}/files/list", tag = "sandbox: files",
        params(("id" = String, Path, description = "Sandbox id"),
               ("path" = String, Query, description = "Directory")),
        responses((status = 200, description = "Entries", body = FileList)),
        security(("api_key" = [])))]
    list_files
}

proxied! {
    /// Metadata of one file.
    #[utoipa::path(get, path = "/v1/sandboxes/{id}/files/stat", tag = "sandbox: files",
        params(("id" = String, Path, description = "Sandbox id"),
               ("path" = String, Query, description = "Path")),
        responses((status = 200, description = "Metadata", body = FileInfo)),
        security(("api_key" = [])))]
    stat_file
}

proxied! {
    /// Create a directory and its parents.
    #[utoipa::path(post, path = "/v1/sandboxes/{id}/files/mkdir", tag = "sandbox: files",
        params(("id" = String, Path, description = "Sandbox id")),
        request_body = MakeDir,
        responses((status = 201, description = "Created", body = FileInfo)),
        security(("api_key" = [])))]
    make_dir
}

proxied! {
    /// Move or rename a file.
    #[utoipa::path(post, path = "/v1/sandboxes/{id}/files/move", tag = "sandbox: files",
        params(("id" = String, Path, description = "Sandbox id")),
        request_body = MoveFile,
        responses((status = 200, description = "Moved", body = FileInfo),
                  (status = 409, description = "Target exists", body = ErrorBody)),
        security(("api_key" = [])))]
    move_file
}

proxied! {
    /// Download a directory as a tar archive.
    #[utoipa::path(get, path = "/v1/sandboxes/{id}/files/archive", tag = "sandbox: files",
        params(("id" = String, Path, description = "Sandbox id"),
               ("path" = String, Query, description = "Directory to archive")),
        responses((status = 200, description = "tar stream", content_type = "application/x-tar")),
        security(("api_key" = [])))]
    download_archive
}

proxied! {
    /// Upload a tar (or tar.gz) archive and unpack it into a directory.
    #[utoipa::path(put, path = "/v1/sandboxes/{id}/files/archive", tag = "sandbox: files",
        params(("id" = String, Path, description = "Sandbox id"),
               ("path" = String, Query, description = "Directory to unpack into")),
        request_body(content = Vec<u8>, content_type = "application/x-tar"),
        responses((status = 204, description = "Unpacked")),
        security(("api_key" = [])))]
    upload_archive
}

proxied! {
    /// Watch a directory for changes (Server-Sent Events of `WatchEvent`).
    #[utoipa::path(get, path = "/v1/sandboxes/{id}/files/watch", tag = "sandbox: files",
        params(("id" = String, Path, description = "Sandbox id"),
               ("path" = String, Query, description = "Directory to watch"),
               ("recursive" = Option<bool>, Query, description = "Watch subdirectories too")),
        responses((status = 200, description = "SSE stream", body = WatchEvent, content_type = "text/event-stream")),
        security(("api_key" = [])))]
    watch_files
}
