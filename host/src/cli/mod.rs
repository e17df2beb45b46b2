//! The command line: `osprey serve [--config PATH] [--listen ADDR]`,
//! `osprey check`, `osprey plugin new|check|run` (for plugin authors, `plugin`
//! and `new`),
//! and `osprey client ...` (a client of a running server).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

pub mod new;
pub mod plugin;

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
    /// Validate a config file and print every problem in it, then compile
    /// every plugin it names (a file that is not a component fails here,
    /// not at the first reload).
    Check {
        #[arg(long, default_value = "config/osprey.toml")]
        config: PathBuf,
    },
    /// Tools for plugin authors.
    Plugin {
        #[command(subcommand)]
        command: plugin::PluginCommand,
    },
    /// Talk to a running server: detect, classify, video.
    Client {
        #[command(subcommand)]
        command: crate::client::ClientCommand,
    },
}

/// `osprey check`: the config's own problems (with line and column), then
/// each plugin compiled as `serve` would, every failure printed. Models are
/// not loaded: that is seconds per model and needs ONNX Runtime.
pub fn check(path: &Path) -> anyhow::Result<()> {
    let config = crate::config::load(path)?;
    let engine = crate::plugin::Engine::for_server(&config.server)?;
    let mut compiled = std::collections::HashMap::new();
    let mut failed = Vec::new();
    for p in &config.plugins {
        match engine.compile(&p.name, &p.file) {
            Ok(plugin) => drop(compiled.insert(p.name.clone(), std::sync::Arc::new(crate::plugin::Plugin { policy: p.policy.clone(), ..plugin }))),
            Err(e) => failed.push(e.to_string()),
        }
    }
    if !failed.is_empty() {
        anyhow::bail!("{}: {} of {} plugins cannot be used:\n  {}", path.display(), failed.len(), config.plugins.len(), failed.join("\n  "));
    }
    // Each stage's settings, asked of its plugin (the routes of plugins that all compiled).
    let refused: Vec<String> = config
        .routes
        .iter()
        .filter_map(|r| crate::chain::check_settings(r, &compiled, &engine).err())
        .map(|(at, e)| format!("{at}: {e}"))
        .collect();
    if !refused.is_empty() {
        anyhow::bail!("{}", refused.join("\n"));
    }
    println!("{}: ok ({} plugins compiled, every stage's settings accepted)", path.display(), config.plugins.len());
    Ok(())
}
