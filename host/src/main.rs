//! `osprey`: parse the command line, load the config, bind, serve.

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use osprey::cli::{Cli, Command};
use osprey::plugin::Engine;
use osprey::upstream::{Pools, Remotes};
use osprey::{config, reload, server, snapshot::Snapshot, state::Shared, tls};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let log = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::try_from_env("OSPREY_LOG").unwrap_or_else(|_| "info".into()));
    // The server logs on stdout (scripts read its "listening on" line there);
    // the other commands answer on stdout, so their log goes to stderr.
    match cli.command {
        Command::Serve { .. } => log.init(),
        _ => log.with_writer(std::io::stderr).init(),
    }
    match cli.command {
        Command::Check { config } => osprey::cli::check(&config),
        Command::Plugin { command } => osprey::cli::plugin::run(command),
        Command::Serve { config, listen } => serve(&config, listen),
        Command::Client { command } => std::process::exit(osprey::client::run(command)),
    }
}

fn serve(path: &std::path::Path, listen: Option<std::net::SocketAddr>) -> anyhow::Result<()> {
    osprey::nn::runtime::limit_allocator_arenas();
    let config = config::load(path)?;
    let watch = config.admin.watch;
    let addr = listen.unwrap_or(config.server.listen);
    let tls_settings = config.tls.clone();
    // Compiling plugins and loading models blocks: done before the runtime serves anything.
    osprey::nn::runtime::configure(config.server.pool);
    let engine = Engine::for_server(&config.server)?;
    let runtime = tokio::runtime::Runtime::new().context("start the async runtime")?;
    // The pools come first: remote models ask their nodes for metadata while
    // the snapshot is built (on this thread, which blocks on the runtime).
    let pools = {
        let _inside = runtime.enter();
        Arc::new(Pools::new(&config.upstreams))
    };
    let remotes = Remotes::new(pools.clone(), &config.upstreams);
    let snapshot = Snapshot::build_with(config, &engine, None, &remotes)?;
    runtime.block_on(async {
        let shared = Shared::new_with_pools(snapshot, Some(path.to_path_buf()), pools).await?;
        if watch {
            reload::watch::spawn(shared.clone()).context("start the file watcher")?;
        }
        let tls = tls::start(&tls_settings).await?;
        let listener = bind(addr).await?;
        // Tests and scripts read this line to learn the port when it was 0.
        tracing::info!("listening on {}://{}", if tls.is_some() { "https" } else { "http" }, listener.local_addr()?);
        let redirect = match tls_settings.http_listen {
            Some(a) => Some(bind(a).await?).inspect(|_| tracing::info!("redirecting http://{a} to https")),
            None => None,
        };
        server::serve(server::Endpoint { listener, tls, redirect }, shared, shutdown_signal()).await;
        Ok(())
    })
}

async fn bind(addr: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listen on {addr}"))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
