//! M7 — cold start: from exec to (a) the c2s port accepting and (b) the first successful login,
//! on a fresh store that holds only the one account (registered in a first boot, stopped).

use super::Env;
use crate::login::{self, Ctx};
use crate::proto::Security;
use crate::sasl::ScramCache;
use crate::server::ServerDir;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct M7 {
    pub port_ms: Vec<f64>,
    pub login_ms: Vec<f64>,
    /// PSS of the server tree right after the first login (KiB).
    pub pss_kib: Vec<u64>,
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
    let mut out = M7 {
        port_ms: Vec::new(),
        login_ms: Vec::new(),
        pss_kib: Vec::new(),
    };
    for _ in 0..runs {
        let t0 = Instant::now();
        let mut r = server.start()?;
        let res = async {
            let port = r
                .wait_port(server.c2s, t0, Duration::from_secs(120))
                .await?;
            loop {
                match login::login(&ctx, "cold1", "cold", false, &mut |_| {}).await {
                    Ok(s) => {
                        let login = t0.elapsed();
                        let mem = crate::procfs::mem(r.pid);
                        s.xmpp.close().await;
                        return Ok::<_, String>((port, login, mem));
                    }
                    Err(e) if t0.elapsed() > Duration::from_secs(120) => return Err(e),
                    Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
        }
        .await;
        r.stop().await;
        let (port, login, mem) = res?;
        eprintln!(
            "  M7 {}: port after {:.1} ms, first login after {:.1} ms",
            env.server.kind.name(),
            port.as_secs_f64() * 1e3,
            login.as_secs_f64() * 1e3
        );
        out.port_ms.push(port.as_secs_f64() * 1e3);
        out.login_ms.push(login.as_secs_f64() * 1e3);
        out.pss_kib.push(mem.pss_kib);
    }
    Ok(out)
}
