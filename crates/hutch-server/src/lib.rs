//! The Hutch control plane: the `/v1` REST API, authentication, the store, and the background
//! loops (reaper, reconciler) around the sandbox engine.
//!
//! The `hutch` binary calls [`ServerConfig::load`] and then [`run`]. Tests use [`spawn`] (an
//! ephemeral port, background loops, a handle to stop) or [`build_app`] (just the router).

pub mod auth;
pub mod config;
pub mod docs_page;
pub mod error;
pub mod events;
pub mod extract;
pub mod ids;
pub mod metrics;
pub mod network;
pub mod openapi;
pub mod previews;
pub mod proxy;
pub mod reaper;
pub mod reconcile;
pub mod routes;
pub mod secrets;
pub mod state;
pub mod tunnel;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{Method, Uri};
use chrono::Utc;
use hutch_api::sandbox::Team;
use hutch_sandbox::{Engine, EngineConfig};
use hutch_store::{SqliteStore, Store};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::{ConfigOverrides, ServerConfig};
pub use error::{AppError, Error};
pub use state::AppState;

/// How long in-flight requests (streams, WebSockets) get after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The running background parts of an app built by [`build_app`].
pub struct AppHandle {
    /// The shared state.
    pub state: AppState,
    /// The admin key created on first start (`None` when keys already existed). It is also in
    /// `<data_dir>/admin.key`.
    pub admin_key: Option<String>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl AppHandle {
    /// Stops the background loops. Sandboxes keep running.
    pub async fn shutdown(self) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Opens the store and the engine, creates the base template and the first admin key,
/// reconciles store and runtime, starts the reaper and the reconciler, and returns the router.
pub async fn build_app(config: ServerConfig) -> Result<(Router, AppHandle), Error> {
    config.validate()?;
    let data_dir = config.data_dir.clone();
    create_private_dir(&data_dir)?;

    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&data_dir.join("hutch.db")).await?);
    let hasher = auth::KeyHasher::load_or_create(&data_dir)?;
    let secrets = secrets::Secrets::open(&config, Arc::clone(&store)).await?;
    let engine_cfg = EngineConfig {
        data_dir: data_dir.clone(),
        guest_exe: config.guest_exe.clone(),
    };
    let engine = tokio::task::spawn_blocking(move || -> Result<Engine, Error> {
        let engine = Engine::new(engine_cfg)?;
        engine.templates().ensure_base()?;
        Ok(engine)
    })
    .await
    .map_err(|e| Error::Config {
        message: format!("engine start-up panicked: {e}"),
    })??;

    let ca_key = secrets
        .derive_key(network::CA_KEY_LABEL)
        .map_err(|e| Error::Config {
            message: format!("gateway CA key: {e}"),
        })?;
    let network = network::Network::new(
        &config.network,
        &data_dir,
        tokio::runtime::Handle::current(),
        store.clone(),
        Some(&ca_key),
    )?;
    engine.set_network_hook(Arc::new(network::Hook(network.clone())));
    let state = AppState::new(
        config.clone(),
        store,
        Arc::new(engine),
        hasher,
        metrics::Metrics::new(),
        network,
        secrets,
    );
    let admin_key = bootstrap(&state).await?;

    match reconcile::startup(&state).await {
        Ok(r) => tracing::info!(
            exited = r.exited.len(),
            orphans = r.orphans.len(),
            "reconciled"
        ),
        Err(e) => tracing::warn!(error = ?e.0, "start-up reconciliation failed"),
    }
    network::dlp::refresh(&state).await;
    if let Err(e) = network::restore(&state).await {
        tracing::warn!(error = ?e.0, "restoring sandbox networks failed");
    }

    let stop = CancellationToken::new();
    let tasks = vec![
        tokio::spawn(reaper::run(
            state.clone(),
            Duration::from_millis(config.reaper_interval_ms),
            stop.clone(),
        )),
        tokio::spawn(reconcile::run(
            state.clone(),
            Duration::from_millis(config.reconcile_interval_ms),
            stop.clone(),
        )),
        tokio::spawn(network::dlp::run(state.clone(), stop.clone())),
    ];
    let router = router(state.clone());
    Ok((
        router,
        AppHandle {
            state,
            admin_key,
            stop,
            tasks,
        },
    ))
}

/// The axum router for `state` (no background loops).
pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    for r in routes::table() {
        router = router.route(r.path, r.handler);
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        // Outermost: preview hosts never reach the API routes.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            previews::route_by_host,
        ))
        .with_state(state)
}

async fn not_found(method: Method, uri: Uri) -> AppError {
    AppError::not_found(format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> axum::response::Response {
    use axum::response::IntoResponse;
    let body = hutch_api::ApiError::new(
        hutch_api::ErrorCode::BadRequest,
        format!("method {method} is not allowed on {}", uri.path()),
    )
    .into_body();
    (axum::http::StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response()
}

fn create_private_dir(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(Error::io(format!("creating {}", dir.display())))
}

/// First start: a default team and an admin key (returned, and written 0600 to
/// `<data_dir>/admin.key`).
async fn bootstrap(state: &AppState) -> Result<Option<String>, Error> {
    if state.store().count_keys().await? > 0 {
        return Ok(None);
    }
    let team = match state.store().list_teams().await?.into_iter().next() {
        Some(t) => t,
        None => {
            let t = Team {
                id: ids::team_id(),
                name: "default".into(),
                created_at: Utc::now(),
            };
            state.store().create_team(&t).await?;
            t
        }
    };
    let created = auth::create_key(state.store(), state.hasher(), &team.id, "admin", true).await?;
    auth::write_private(
        &state.config().data_dir.join("admin.key"),
        format!("{}\n", created.key).as_bytes(),
    )?;
    tracing::info!(team_id = %team.id, key_id = %created.meta.id, "created the default team and admin key");
    Ok(Some(created.key))
}

/// A server started by [`spawn`].
pub struct Running {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The admin key created on first start, if any.
    pub admin_key: Option<String>,
    /// The shared state.
    pub state: AppState,
    stop: CancellationToken,
    server: JoinHandle<()>,
    handle: AppHandle,
}

impl Running {
    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving and the background loops; sandboxes keep running.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, self.server).await;
        // With no sandbox left, drop the (empty) cgroup parent too; the next start recreates it.
        self.state.engine().release_cgroup_parent();
        self.handle.shutdown().await;
    }
}

/// Builds the app and serves it on `config.listen` (port 0 picks a free port) in a task.
pub async fn spawn(config: ServerConfig) -> Result<Running, Error> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(Error::io(format!("binding {}", config.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(Error::io("reading the bound address"))?;
    let (router, handle) = build_app(config).await?;
    let stop = CancellationToken::new();
    let stop2 = stop.clone();
    let server = tokio::spawn(async move {
        // No Nagle delay: streamed responses (previews, tunnels, WebSockets) write small pieces
        // that would otherwise wait for the client's delayed ACK (40 ms).
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let serve = axum::serve(listener, router).with_graceful_shutdown(stop2.cancelled_owned());
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "server failed");
        }
    });
    Ok(Running {
        addr,
        admin_key: handle.admin_key.clone(),
        state: handle.state.clone(),
        stop,
        server,
        handle,
    })
}

/// Runs `hutch server` until SIGINT or SIGTERM. On first start prints `Admin API key: hk_…` to
/// stdout. Shutting down leaves sandboxes running (the next start reattaches to them).
pub async fn run(config: ServerConfig) -> anyhow::Result<()> {
    let key_file = config.data_dir.join("admin.key");
    let running = spawn(config).await?;
    println!(
        "Hutch is listening on http://{}  (API docs: http://{}/docs)",
        running.addr, running.addr
    );
    match &running.admin_key {
        Some(key) => println!(
            "Admin API key: {key}  (also saved 0600 in {})",
            key_file.display()
        ),
        None => println!(
            "Admin API key: see {} (created on first start)",
            key_file.display()
        ),
    }
    tracing::info!(addr = %running.addr, "hutch server listening");
    shutdown_signal().await;
    tracing::info!("shutting down; sandboxes keep running");
    running.stop().await;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// `(METHOD, path)` of every route, for contract tests.
pub fn route_list() -> Vec<(String, String)> {
    routes::route_list()
}
