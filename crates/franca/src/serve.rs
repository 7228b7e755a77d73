//! `franca serve`: wire storage, TLS, modules, the router and the listeners together, log what
//! listens where, and shut down cleanly on SIGTERM/SIGINT (every stream gets
//! `<system-shutdown/>` and storage is flushed before the process exits).

use franca_core::{Config, Server};
use franca_net::c2s::{C2sContext, PreAuthHandler};
use franca_net::limits::{ConnectionLimiter, LoginLimiter};
use franca_proto::c2s::C2sConfig;
use franca_xml::Limits;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

pub async fn run(config: Config, config_path: Option<PathBuf>) -> Result<(), String> {
    init_logging();
    // Installed first, so a SIGTERM during start-up is a clean shutdown, not the default kill.
    let mut terminate =
        signal(SignalKind::terminate()).map_err(|e| format!("cannot listen for SIGTERM: {e}"))?;
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(|e| format!("cannot listen for SIGINT: {e}"))?;
    match &config_path {
        Some(p) => tracing::info!("configuration: {}", p.display()),
        None => tracing::info!("no configuration file: zero-config defaults"),
    }
    let data_dir = &config.server.data_dir;
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create data directory {}: {e}", data_dir.display()))?;

    let url = config.storage_url();
    let store = franca_store::open(&url)
        .await
        .map_err(|e| format!("storage: {e}"))?;
    tracing::info!("storage: {}", crate::redact(&url));

    let tls = Arc::new(franca_net::tls::load(&config).map_err(|e| format!("TLS: {e}"))?);
    tracing::info!(
        "TLS certificate: {}{}",
        tls.cert_file.display(),
        if tls.self_signed {
            " (self-signed, generated for the served domains)"
        } else {
            ""
        }
    );
    let metrics = franca_net::http::install_metrics();

    let modules = franca_im::load(&config);
    tracing::info!("modules: {}", modules.names().join(", "));
    let session_features = modules.iter().flat_map(|m| m.stream_features()).collect();
    let stream = Arc::new(C2sConfig {
        domains: config.server.domains.clone(),
        allow_plaintext: config.server.allow_plaintext,
        limits: Limits {
            max_stanza_bytes: config.limits.max_stanza_bytes,
            max_depth: config.limits.max_depth,
            max_attrs: config.limits.max_attributes,
        },
        register_feature: franca_im::register::stream_feature(&config),
        session_features,
        fast: config.fast.enabled,
        bind2_features: modules
            .iter()
            .flat_map(|m| m.bind2_features())
            .map(|ns| (*ns).to_owned())
            .collect(),
    });
    let limits = config.limits.clone();
    let listen = config.listen.clone();
    let server = Server::new(config, store.clone(), modules);
    // Modules load what they keep in memory (persistent rooms) before anyone connects.
    server.start_modules().await;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // RFC 6120 federation: outbound whenever policy lets a stanza go out (closed: bounced with
    // the policy's text), inbound on the `s2s` listeners. Set before any connection is
    // accepted, so no stanza meets a server without it.
    let federation = franca_s2s::S2s::new(
        &server.config,
        Arc::new(franca_s2s::policy::AccountFlag::new(store.clone())),
        shutdown_rx.clone(),
    )
    .map_err(|e| format!("s2s: {e}"))?;
    server.federation.set(federation.clone());
    let preauth: PreAuthHandler = Arc::new(|server, ip, iq| {
        Box::pin(async move { franca_im::register::preauth(&server, ip, iq).await })
    });
    let ctx = Arc::new(C2sContext {
        server: server.clone(),
        stream,
        tls,
        logins: Arc::new(LoginLimiter::new(
            limits.max_failed_logins,
            Duration::from_secs(limits.lockout_seconds),
        )),
        connections: Arc::new(ConnectionLimiter::new(limits.max_connections_per_ip)),
        preauth,
        shutdown: shutdown_rx.clone(),
    });
    let connections = ctx.connections.clone();

    let c2s = franca_net::bind_all("c2s", &listen.c2s)
        .await
        .map_err(|e| e.to_string())?;
    let c2s_tls = franca_net::bind_all("c2s_tls", &listen.c2s_tls)
        .await
        .map_err(|e| e.to_string())?;
    let http = franca_net::bind_all("http", &listen.http)
        .await
        .map_err(|e| e.to_string())?;
    let https = franca_net::bind_all("https", &listen.https)
        .await
        .map_err(|e| e.to_string())?;
    let multiplex = franca_net::bind_all("multiplex", &listen.multiplex)
        .await
        .map_err(|e| e.to_string())?;
    let s2s = franca_net::bind_all("s2s", &listen.s2s)
        .await
        .map_err(|e| e.to_string())?;
    let mut tasks = Vec::new();
    for l in c2s {
        log_listener("c2s (STARTTLS, RFC 6120)", &l);
        tasks.push(tokio::spawn(franca_net::accept_c2s(
            l,
            ctx.clone(),
            connections.clone(),
            false,
        )));
    }
    for l in c2s_tls {
        log_listener("c2s (direct TLS, XEP-0368)", &l);
        tasks.push(tokio::spawn(franca_net::accept_c2s(
            l,
            ctx.clone(),
            connections.clone(),
            true,
        )));
    }
    for l in http {
        log_listener("HTTP (/health, /metrics, /xmpp-websocket)", &l);
        let mut rx = shutdown_rx.clone();
        tasks.push(tokio::spawn({
            let server = server.clone();
            let metrics = metrics.clone();
            let ctx = ctx.clone();
            async move {
                let stop = async move {
                    let _ = rx.changed().await;
                };
                let c2s = Some(ctx.clone());
                if let Err(e) = franca_net::http::serve(l, server, metrics, c2s, stop).await {
                    tracing::error!("HTTP listener failed: {e}");
                }
            }
        }));
    }
    for l in https {
        log_listener("HTTPS (the HTTP endpoints over TLS; wss://)", &l);
        let app = franca_net::http::router(server.clone(), metrics.clone(), Some(ctx.clone()));
        tasks.push(tokio::spawn({
            let ctx = ctx.clone();
            async move {
                if let Err(e) = franca_net::https::serve(l, ctx, app).await {
                    tracing::error!("HTTPS listener failed: {e}");
                }
            }
        }));
    }
    for l in multiplex {
        log_listener("multiplex (XMPP and HTTPS on one TLS port, by ALPN)", &l);
        let app = franca_net::http::router(server.clone(), metrics.clone(), Some(ctx.clone()));
        tasks.push(tokio::spawn({
            let ctx = ctx.clone();
            async move {
                if let Err(e) = franca_net::multiplex::serve(l, ctx, app).await {
                    tracing::error!("multiplex listener failed: {e}");
                }
            }
        }));
    }
    if !server.config.component.is_empty() {
        // XEP-0114: opened only when components are configured.
        let listeners = franca_net::bind_all("component", &listen.component)
            .await
            .map_err(|e| e.to_string())?;
        let config = franca_proto::component::ComponentConfig {
            secrets: server
                .config
                .component
                .iter()
                .map(|c| (c.domain.clone(), c.secret.clone()))
                .collect(),
            limits: ctx.stream.limits,
        };
        let components = Arc::new(franca_net::component::ComponentContext::new(
            server.clone(),
            config,
            shutdown_rx.clone(),
        ));
        for l in listeners {
            log_listener("component (XEP-0114)", &l);
            tasks.push(tokio::spawn(franca_net::component::accept(
                l,
                components.clone(),
            )));
        }
    }
    for l in &s2s {
        log_listener("s2s (RFC 6120 server-to-server)", l);
    }
    tasks.extend(federation.listen(&server, s2s));
    let control_path = server.config.server.data_dir.join("franca.sock");
    tokio::spawn(franca_net::control::serve(control_path, server.clone()));

    let domains = server.config.server.domains.join(", ");
    tracing::info!("serving {domains}");
    match server.store.list_users(None).await {
        Ok(users) if users.is_empty() => {
            let first = server
                .config
                .server
                .domains
                .first()
                .cloned()
                .unwrap_or_default();
            let cfg = config_path
                .as_ref()
                .map(|p| format!(" --config {}", p.display()))
                .unwrap_or_default();
            tracing::info!(
                "no accounts yet; add the first one with: franca{cfg} user add admin@{first}  \
                 (or: cargo run --release --{cfg} user add admin@{first})"
            );
        }
        Ok(users) => tracing::info!("{} accounts", users.len()),
        Err(e) => tracing::warn!("cannot count accounts: {e}"),
    }

    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    tracing::info!("shutting down: closing every stream with <system-shutdown/>");
    let _ = shutdown_tx.send(true);
    // Give streams a moment to close and their sessions to run their last hooks (unavailable
    // presence, last activity) before storage is closed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server.sessions.count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for t in &tasks {
        t.abort();
    }
    // Modules store what they held back (pending last activity) while storage is still open.
    for m in server.modules.iter() {
        m.shutdown(&server).await;
    }
    server.store.close().await;
    let _ = std::fs::remove_file(server.config.server.data_dir.join("franca.sock"));
    tracing::info!("stopped");
    Ok(())
}

fn log_listener(kind: &str, l: &tokio::net::TcpListener) {
    match l.local_addr() {
        Ok(addr) => tracing::info!("{kind} listening on {addr}"),
        Err(e) => tracing::warn!("{kind} listener has no address: {e}"),
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
}
