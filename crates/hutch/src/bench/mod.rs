//! `hutch bench`: measured numbers, each next to a peer run in the same process on the same
//! machine, so the ratios mean something.

mod engine;
mod peers;
mod stats;

use clap::{Args, Subcommand};

/// Benchmarks.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Sandbox engine: cold create → first exec, destroy, exec round trip, idle memory; with
    /// `runc run` and `bwrap` doing the same workload for comparison.
    Engine(engine::EngineBenchArgs),
}

/// Arguments shared by the benchmarks.
#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.command {
        BenchCommand::Engine(a) => engine::run(a),
    }
}
