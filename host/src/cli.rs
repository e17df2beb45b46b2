//! The command line: `osprey serve [--config PATH] [--listen ADDR]`,
//! `osprey check`, and `osprey client ...` (a client of a running server).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "osprey", version, about = "Serve vision models through sandboxed WASM plugin chains")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load the config's models and plugins and serve its routes.
    Serve {
        /// The config file.
        #[arg(long, default_value = "config/osprey.toml")]
        config: PathBuf,
        /// Address to listen on (overrides `[server] listen`); port 0 picks a free port.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Validate a config file and print every problem in it.
    Check {
        #[arg(long, default_value = "config/osprey.toml")]
        config: PathBuf,
    },
    /// Talk to a running server: detect, classify, video.
    Client {
        #[command(subcommand)]
        command: crate::client::ClientCommand,
    },
}
