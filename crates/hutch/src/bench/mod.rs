//! `hutch bench`: measured numbers, each next to a peer run in the same process on the same
//! machine, so the ratios mean something.

mod api;
mod engine;
mod net;
mod peers;
mod stats;

use clap::{Args, Subcommand};

/// Benchmarks.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Sandbox engine: cold create → first exec, destroy, exec round trip, idle memory; with
    /// `runc run` and `bwrap` doing the same workload for comparison.
    Engine(engine::EngineBenchArgs),
    /// Control plane over HTTP: time-to-interactive (create → exec → output), exec round trip,
    /// sustained create rate, against an in-process server on loopback.
    Api(api::ApiBenchArgs),
    /// Sandbox networking: time a network adds to create, latency the gateway adds to a request.
    Net(net::NetBenchArgs),
}

/// Arguments shared by the benchmarks.
#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    match args.command {
        BenchCommand::Engine(a) => engine::run(a),
        BenchCommand::Api(a) => api::run(a),
        BenchCommand::Net(a) => net::run(a),
    }
}
