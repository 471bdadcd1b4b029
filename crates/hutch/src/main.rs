//! `hutch`: one binary for every role. `hutch server` runs the control plane, `hutch guest` is
//! PID 1 inside each sandbox, `hutch bench` measures, and every other verb is the CLI.

mod bench;
mod cli;
mod guest_cmd;
mod server_cmd;

use clap::{Parser, Subcommand};

/// Hutch: self-hosted sandboxes for AI agents.
#[derive(Parser)]
#[command(name = "hutch", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane: the /v1 API, the local sandbox runtime and its background loops.
    Server(server_cmd::ServerArgs),
    /// Run the in-sandbox guest daemon (PID 1 of every sandbox, or standalone in any Linux box).
    Guest(guest_cmd::GuestArgs),
    /// Benchmarks: `hutch bench engine` (vs runc and bwrap) and `hutch bench api`.
    Bench(bench::BenchArgs),
    /// Client commands (talk to a Hutch server over its /v1 API).
    #[command(flatten)]
    Cli(cli::CliCommand),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Server(args) => server_cmd::run(args),
        Command::Guest(args) => guest_cmd::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Cli(cmd) => cli::run(cmd),
    };
    if let Err(e) = result {
        eprintln!("hutch: {e:#}");
        std::process::exit(1);
    }
}
