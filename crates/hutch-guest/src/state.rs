//! Shared guest state.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hutch_api::process::StartProcess;

use crate::config::GuestConfig;
use crate::error::GuestError;
use crate::process::{ProcessTable, Started};
use crate::terminal::TerminalTable;
use crate::users::UserDb;

/// Everything the handlers share: configuration, processes and terminals.
#[derive(Clone, Debug)]
pub struct GuestState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: GuestConfig,
    started: Instant,
    users: UserDb,
    processes: ProcessTable,
    terminals: TerminalTable,
}

impl GuestState {
    /// Fresh state for a guest with `config`.
    pub fn new(config: GuestConfig) -> Self {
        GuestState {
            inner: Arc::new(Inner {
                config,
                started: Instant::now(),
                users: UserDb::default(),
                processes: ProcessTable::default(),
                terminals: TerminalTable::default(),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &GuestConfig {
        &self.inner.config
    }

    /// Time since the state was created.
    pub fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    /// The sandbox's users.
    pub fn users(&self) -> &UserDb {
        &self.inner.users
    }

    /// The process table.
    pub fn processes(&self) -> &ProcessTable {
        &self.inner.processes
    }

    /// The terminal sessions.
    pub fn terminals(&self) -> &TerminalTable {
        &self.inner.terminals
    }

    /// Start a process with the guest's environment and users.
    pub async fn start_process(
        &self,
        req: StartProcess,
        blocking_consumer: bool,
    ) -> Result<Started, GuestError> {
        self.inner
            .processes
            .start(
                req,
                &self.inner.config.env,
                &self.inner.users,
                blocking_consumer,
            )
            .await
    }

    /// SIGTERM every child (processes and terminals), SIGKILL what is left after `grace`.
    pub async fn shutdown(&self, grace: Duration) {
        tokio::join!(
            self.inner.processes.terminate_all(grace),
            self.inner.terminals.terminate_all(grace)
        );
    }
}
