//! The command line: `osprey serve [--config PATH] [--listen ADDR]`,
//! `osprey check`, and `osprey client ...` (a client of a running server).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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
        command: PluginCommand,
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
    let failed: Vec<String> = config
        .plugins
        .iter()
        .filter_map(|p| engine.compile(&p.name, &p.file).err().map(|e| e.to_string()))
        .collect();
    if !failed.is_empty() {
        anyhow::bail!("{}: {} of {} plugins cannot be used:\n  {}", path.display(), failed.len(), config.plugins.len(), failed.join("\n  "));
    }
    println!("{}: ok ({} plugins compiled)", path.display(), config.plugins.len());
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Does a component fit the world this host runs? Exports, imports and
    /// WIT version, with its size, compile time and sandbox cost; exits
    /// non-zero, saying why and what to do, when it does not fit.
    Check {
        /// The component (.wasm).
        file: PathBuf,
    },
}

pub fn plugin(command: PluginCommand) -> anyhow::Result<()> {
    match command {
        PluginCommand::Check { file } => plugin_check(&file),
    }
}

fn plugin_check(file: &Path) -> anyhow::Result<()> {
    use crate::plugin::inspect;
    let bytes = std::fs::read(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let limits = crate::plugin::SandboxLimits::default();
    let engine = crate::plugin::Engine::new(limits)?;
    let r = inspect::inspect(&engine, &bytes).map_err(|why| anyhow::anyhow!("{}: {why}", file.display()))?;
    let verdict = match &r.problem {
        None => format!("fits osprey:plugin@{}", inspect::wit_version()),
        Some(_) => format!("does NOT fit osprey:plugin@{}", inspect::wit_version()),
    };
    println!("{}: {verdict}", file.display());
    println!("  size      {:.1} KiB, sha256 {}", r.bytes as f64 / 1024.0, r.sha256);
    println!("  compile   {} ms (once per build: servers keep the compiled copy)", r.compile.as_millis());
    println!("  exports   {}", r.exports.join(", "));
    println!("  imports   {}", r.imports.join(", "));
    println!(
        "  sandbox   {} linear memories (largest starts at {:.1} MiB, capped at {} MiB by plugin_memory_mib), {} tables",
        r.memories,
        r.initial_memory_bytes as f64 / f64::from(1 << 20),
        limits.memory_bytes >> 20,
        r.tables
    );
    match r.problem {
        None => Ok(()),
        Some(why) => anyhow::bail!("{}: {why}", file.display()),
    }
}
