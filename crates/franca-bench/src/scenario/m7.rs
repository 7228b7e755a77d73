//! M7 — cold start: from exec to (a) the c2s port accepting and (b) the first successful login
//! (auth, bind, roster, initial presence and its answer), twice: on a fresh store that holds
//! only the one account (registered in a first boot, stopped), and on the populated store of
//! [`super::seed`] (100k accounts and 1M stored messages in `quick`/`full`), where each run logs
//! in a different account so every run finds its offline messages still stored.

use super::Env;
use crate::login::{self, Ctx};
use crate::proto::Security;
use crate::sasl::ScramCache;
use crate::server::ServerDir;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct M7 {
    pub port_ms: Vec<f64>,
    pub login_ms: Vec<f64>,
    /// PSS of the server tree right after the first login (KiB).
    pub pss_kib: Vec<u64>,
    /// Messages the first login received before its closing ping was answered (the account's
    /// stored messages, on the populated store): proof that the store was really loaded.
    #[serde(default)]
    pub messages: Vec<u32>,
}

/// M7 on the populated store.
pub async fn run_populated(env: &Env, runs: usize) -> Result<M7, String> {
    let server = env
        .populated
        .as_ref()
        .ok_or("no populated store was prepared for M7")?;
    let ctx = Ctx {
        target: server.target(Security::Plain, &env.mechs),
        source: None,
        tls: crate::tls::connector()?,
        cache: ScramCache::default(),
    };
    // A new account for every run of every round: the first login delivers (and so deletes)
    // that account's offline messages.
    static NEXT: AtomicU32 = AtomicU32::new(1);
    measure(server, &ctx, runs, "populated", |_| {
        format!(
            "{}{}",
            super::seed::PREFIX,
            NEXT.fetch_add(1, Ordering::Relaxed)
        )
    })
    .await
}

pub async fn run(env: &Env, scratch: &Path, runs: usize) -> Result<M7, String> {
    let server = ServerDir::prepare(
        env.server.kind,
        scratch,
        &env.server.franca_bin,
        env.server.core,
    )?;
    let target = server.target(Security::Plain, &env.mechs);
    let ctx = Ctx {
        target,
        source: None,
        tls: crate::tls::connector()?,
        cache: ScramCache::default(),
    };
    // First boot: create the one account.
    {
        let t0 = Instant::now();
        let mut r = server.start()?;
        let res = async {
            r.wait_port(server.c2s, t0, Duration::from_secs(120))
                .await?;
            login::register(&ctx, "cold1").await
        }
        .await;
        r.stop().await;
        res?;
    }
    measure(&server, &ctx, runs, "empty", |_| "cold1".to_owned()).await
}

/// `runs` cold starts of `server`, each ended by a login of `account(run)`.
async fn measure(
    server: &ServerDir,
    ctx: &Ctx,
    runs: usize,
    store: &str,
    account: impl Fn(usize) -> String,
) -> Result<M7, String> {
    let mut out = M7 {
        port_ms: Vec::new(),
        login_ms: Vec::new(),
        pss_kib: Vec::new(),
        messages: Vec::new(),
    };
    for run in 0..runs {
        let user = account(run);
        let t0 = Instant::now();
        let mut r = server.start()?;
        let res = async {
            let port = r
                .wait_port(server.c2s, t0, Duration::from_secs(120))
                .await?;
            loop {
                let mut messages = 0u32;
                let mut count =
                    |stanza: &[u8]| messages += u32::from(crate::xml::name(stanza) == b"message");
                match login::login(ctx, &user, "cold", false, &mut count).await {
                    Ok(s) => {
                        let login = t0.elapsed();
                        let mem = crate::procfs::mem(r.pid);
                        s.xmpp.close().await;
                        return Ok::<_, String>((port, login, mem, messages));
                    }
                    Err(e) if t0.elapsed() > Duration::from_secs(120) => return Err(e),
                    Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
        }
        .await;
        r.stop().await;
        let (port, login, mem, messages) = res?;
        eprintln!(
            "  M7 {} ({store} store): port after {:.1} ms, first login after {:.1} ms \
             ({messages} stored messages received)",
            server.kind.name(),
            port.as_secs_f64() * 1e3,
            login.as_secs_f64() * 1e3
        );
        out.messages.push(messages);
        out.port_ms.push(port.as_secs_f64() * 1e3);
        out.login_ms.push(login.as_secs_f64() * 1e3);
        out.pss_kib.push(mem.pss_kib);
    }
    Ok(out)
}
