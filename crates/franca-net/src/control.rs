//! The local control socket: how the `franca user …` CLI, a separate process writing to the same
//! database, tells a running server to act on what it changed — today, to end the sessions of a
//! removed account (RFC 6120 §4.9.3.12: the stream is closed with `<not-authorized/>`). Without
//! it a deleted user would stay connected until they log out.
//!
//! A Unix domain socket at `data_dir/franca.sock`, mode 0600, and peers must run as the server's
//! user (or root), checked with `SO_PEERCRED`. The protocol is one command per line and one
//! reply line per command:
//!
//! ```text
//! kick user@domain\n   ->  ok\n  |  error <reason>\n
//! ping\n               ->  ok\n
//! ```
//!
//! Lines are at most [`MAX_LINE`] bytes, at most [`MAX_CONNECTIONS`] clients are served at once,
//! and an idle client is dropped after [`IDLE_TIMEOUT`].

use franca_core::Server;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

/// File name of the socket inside `data_dir`.
pub const SOCKET_NAME: &str = "franca.sock";
/// Longest command line accepted, newline included (a JID is at most 3071 bytes, RFC 7622 §3.1).
pub const MAX_LINE: usize = 4096;
/// Clients served at once; more are answered `error busy` and closed.
pub const MAX_CONNECTIONS: usize = 8;
/// A client silent this long is disconnected; also bounds each write.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`notify_kick`] waits for the server's answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the control socket of the server using `data_dir` lives.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}

/// A bound control socket. Dropping it removes the socket file (if it is still ours).
pub struct ControlListener {
    listener: UnixListener,
    path: PathBuf,
    /// (device, inode) of the socket file we created.
    file_id: (u64, u64),
    /// Our effective uid (the owner of the socket file we created).
    uid: u32,
}

impl std::fmt::Debug for ControlListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlListener")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Bind the control socket at `path`: a stale socket left by a server that is gone is removed
/// first; a live one (another server on the same `data_dir`) is an `AddrInUse` error, and a
/// non-socket file at `path` is never deleted.
pub async fn bind(path: &Path) -> io::Result<ControlListener> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
        Ok(meta) if meta.file_type().is_socket() => match UnixStream::connect(path).await {
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "another server is listening on {}; is franca already running on this data_dir?",
                        path.display()
                    ),
                ));
            }
            Err(_) => {
                tracing::debug!("removing stale control socket {}", path.display());
                std::fs::remove_file(path)?;
            }
        },
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let meta = std::fs::symlink_metadata(path)?;
    Ok(ControlListener {
        listener,
        path: path.to_owned(),
        file_id: (meta.dev(), meta.ino()),
        uid: meta.uid(),
    })
}

/// Serve the control socket at `path` until the task is dropped. Errors (the socket cannot be
/// bound) are logged: the server runs without it, and the CLI then reports that it could not
/// reach the server.
pub async fn serve(path: PathBuf, server: Arc<Server>) {
    match bind(&path).await {
        Ok(listener) => listener.run(server).await,
        Err(e) => tracing::warn!(
            "control socket {} unavailable (the CLI cannot end sessions of removed users): {e}",
            path.display()
        ),
    }
}

impl ControlListener {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accept and serve clients forever.
    pub async fn run(self, server: Arc<Server>) {
        tracing::debug!("control socket listening on {}", self.path.display());
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("control socket accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let allowed = stream
                .peer_cred()
                .map(|c| c.uid() == self.uid || c.uid() == 0)
                .unwrap_or(false);
            if !allowed {
                tracing::warn!("control socket: refused a client running as another user");
                let _ = stream.try_write(b"error permission denied\n");
                continue;
            }
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                let _ = stream.try_write(b"error busy\n");
                continue;
            };
            let server = server.clone();
            tokio::spawn(async move {
                handle(stream, &server).await;
                drop(permit);
            });
        }
    }
}

impl Drop for ControlListener {
    fn drop(&mut self) {
        // Only remove the file if it is still the socket we created (a newer server may have
        // replaced it).
        let ours = std::fs::symlink_metadata(&self.path)
            .map(|m| (m.dev(), m.ino()) == self.file_id)
            .unwrap_or(false);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Read one line of at most [`MAX_LINE`] bytes. `Ok(None)` at end of input; an overlong line
/// is `InvalidData`. The newline (and a preceding `\r`) is stripped.
async fn read_line<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    buf: &mut Vec<u8>,
) -> io::Result<Option<()>> {
    buf.clear();
    let limit = u64::try_from(MAX_LINE).unwrap_or(u64::MAX);
    let n = (&mut *reader).take(limit).read_until(b'\n', buf).await?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    } else if buf.len() >= MAX_LINE {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
    }
    Ok(Some(()))
}

async fn handle(stream: UnixStream, server: &Arc<Server>) {
    let (r, mut w) = stream.into_split();
    let mut reader = BufReader::with_capacity(1024, r);
    let mut line = Vec::new();
    loop {
        let reply = match tokio::time::timeout(IDLE_TIMEOUT, read_line(&mut reader, &mut line))
            .await
        {
            Err(_) | Ok(Ok(None)) => return,
            Ok(Err(e)) if e.kind() == io::ErrorKind::InvalidData => {
                let _ =
                    tokio::time::timeout(IDLE_TIMEOUT, w.write_all(b"error line too long\n")).await;
                return;
            }
            Ok(Err(_)) => return,
            Ok(Ok(Some(()))) => command(server, &line).await,
        };
        match tokio::time::timeout(IDLE_TIMEOUT, w.write_all(reply.as_bytes())).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
}

/// Execute one command line; returns the reply line.
async fn command(server: &Arc<Server>, line: &[u8]) -> String {
    let Ok(line) = std::str::from_utf8(line) else {
        return "error command is not UTF-8\n".into();
    };
    let (verb, arg) = line.trim().split_once(' ').unwrap_or((line.trim(), ""));
    match verb {
        "ping" => "ok\n".into(),
        "kick" => {
            let user = match jid::Jid::new(arg.trim()) {
                Ok(j) if j.node().is_some() => j.to_bare(),
                Ok(_) => return "error not an account JID\n".into(),
                Err(e) => return format!("error invalid JID: {}\n", one_line(&e.to_string())),
            };
            let n = server.sessions.resources(&user).len();
            server.kick_user(&user, "account removed").await;
            tracing::info!(%user, sessions = n, "ended sessions on request of the control socket");
            "ok\n".into()
        }
        "remove" => {
            let user = match jid::BareJid::new(arg.trim()) {
                Ok(j) if j.node().is_some() => j,
                Ok(_) => return "error not an account JID\n".into(),
                Err(e) => return format!("error invalid JID: {}\n", one_line(&e.to_string())),
            };
            match server.remove_user(&user).await {
                Ok(()) => {
                    tracing::info!(%user, "account removed on request of the control socket");
                    "ok\n".into()
                }
                Err(franca_store::StoreError::UnknownUser(_)) => "error unknown user\n".into(),
                Err(e) => format!("error {}\n", one_line(&e.to_string())),
            }
        }
        "" => "error empty command\n".into(),
        _ => "error unknown command\n".into(),
    }
}

fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

/// CLI side: ask the server running on `data_dir` to end every session of `jid` (a bare JID).
/// `Ok(true)` when the server did; `Ok(false)` when no server is running (no socket, or a stale
/// one); `Err` when the server answered with an error or the exchange failed.
pub async fn notify_kick(data_dir: &Path, jid: &str) -> Result<bool, io::Error> {
    ask(data_dir, "kick", jid).await
}

/// CLI side: ask the server running on `data_dir` to delete the account `jid`, so it can end
/// the sessions and tell contacts first. `Ok(false)` when no server is running (the CLI then
/// deletes from storage itself); `Err` carries the server's refusal (e.g. `unknown user`).
pub async fn notify_remove(data_dir: &Path, jid: &str) -> Result<bool, io::Error> {
    ask(data_dir, "remove", jid).await
}

async fn ask(data_dir: &Path, verb: &str, jid: &str) -> Result<bool, io::Error> {
    if jid.is_empty() || jid.contains(['\r', '\n']) || jid.len() + 6 > MAX_LINE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a valid JID for the control socket",
        ));
    }
    let path = socket_path(data_dir);
    let stream = match UnixStream::connect(&path).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(false);
        }
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("control socket {}: {e}", path.display()),
            ));
        }
    };
    let exchange = async {
        let (r, mut w) = stream.into_split();
        w.write_all(format!("{verb} {jid}\n").as_bytes()).await?;
        let mut reader = BufReader::new(r);
        let mut line = Vec::new();
        match read_line(&mut reader, &mut line).await? {
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the control socket without answering",
            )),
            Some(()) => {
                let reply = String::from_utf8_lossy(&line);
                match reply.split_once(' ').unwrap_or((&reply, "")) {
                    ("ok", _) => Ok(true),
                    ("error", why) => Err(io::Error::other(why.trim().to_owned())),
                    _ => Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("unexpected reply from the server: {reply}"),
                    )),
                }
            }
        }
    };
    tokio::time::timeout(REPLY_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the server did not answer on the control socket",
            ))
        })
}

#[cfg(test)]
pub(crate) mod test_support {
    use franca_core::{Config, Modules, Server};
    use std::sync::Arc;

    /// A server on an in-memory store with no modules.
    pub(crate) async fn test_server() -> Arc<Server> {
        let store = franca_store::open("sqlite::memory:")
            .await
            .expect("in-memory store");
        Server::new(Config::default(), store, Modules::new())
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::test_server;
    use super::*;
    use franca_core::Outbound;
    use franca_proto::errors::StreamError;

    async fn ask(path: &Path, request: &[u8]) -> String {
        let mut s = UnixStream::connect(path).await.expect("connect");
        s.write_all(request).await.expect("write");
        let mut out = Vec::new();
        let mut buf = [0u8; 256];
        // Read until a newline or EOF.
        loop {
            let n = s.read(&mut buf).await.expect("read");
            out.extend_from_slice(&buf[..n]);
            if n == 0 || out.ends_with(b"\n") {
                break;
            }
        }
        String::from_utf8(out).expect("utf-8")
    }

    #[tokio::test]
    async fn kick_ends_sessions_through_the_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = test_server().await;
        assert!(
            !notify_kick(dir.path(), "alice@localhost")
                .await
                .expect("no server")
        );

        let path = socket_path(dir.path());
        let listener = bind(&path).await.expect("bind");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let task = tokio::spawn(listener.run(server.clone()));

        let mut bound = server
            .bind("alice@localhost/phone".parse().expect("jid"))
            .await;
        let _other = server.bind("bob@localhost/pc".parse().expect("jid")).await;
        assert_eq!(server.sessions.count(), 2);

        assert!(
            notify_kick(dir.path(), "alice@localhost")
                .await
                .expect("kick")
        );
        match bound.rx.recv().await {
            Outbound::Close(StreamError::NotAuthorized, Some(text)) => {
                assert_eq!(text, "account removed")
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(server.sessions.count(), 1, "bob is still online");
        // Kicking someone offline is fine.
        assert!(
            notify_kick(dir.path(), "nobody@localhost")
                .await
                .expect("kick")
        );

        // A second server on the same data_dir is refused, and leaves the socket alone.
        let err = bind(&path).await.expect_err("in use");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(
            notify_kick(dir.path(), "bob@localhost")
                .await
                .expect("still served")
        );

        // Stopping the server removes the socket.
        task.abort();
        let _ = task.await;
        assert!(!path.exists());
        assert!(
            !notify_kick(dir.path(), "bob@localhost")
                .await
                .expect("gone")
        );
    }

    #[tokio::test]
    async fn protocol_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = socket_path(dir.path());
        let task = tokio::spawn(serve(path.clone(), test_server().await));
        while !path.exists() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(ask(&path, b"ping\n").await, "ok\n");
        assert_eq!(ask(&path, b"bogus\n").await, "error unknown command\n");
        assert_eq!(ask(&path, b"\n").await, "error empty command\n");
        assert_eq!(
            ask(&path, b"kick localhost\n").await,
            "error not an account JID\n"
        );
        assert!(
            ask(&path, b"kick a@b@c\n")
                .await
                .starts_with("error invalid JID")
        );
        assert_eq!(
            ask(&path, b"kick \xff\n").await,
            "error command is not UTF-8\n"
        );
        let long = vec![b'a'; MAX_LINE * 2];
        assert_eq!(ask(&path, &long).await, "error line too long\n");
        // Several commands on one connection.
        let mut s = UnixStream::connect(&path).await.expect("connect");
        s.write_all(b"ping\r\nping\n").await.expect("write");
        let mut buf = [0u8; 6];
        s.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"ok\nok\n");
        // A JID with a newline cannot smuggle a second command.
        let err = notify_kick(dir.path(), "a@b\nkick c@d")
            .await
            .expect_err("newline");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        task.abort();
    }

    #[tokio::test]
    async fn stale_socket_is_replaced_and_files_are_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = socket_path(dir.path());
        // A socket file nobody listens on (a crashed server).
        drop(std::os::unix::net::UnixListener::bind(&path).expect("std bind"));
        assert!(path.exists());
        assert!(!notify_kick(dir.path(), "a@localhost").await.expect("stale"));
        let listener = bind(&path).await.expect("replaces stale socket");
        drop(listener);
        assert!(!path.exists());

        // A regular file is never deleted.
        std::fs::write(&path, "keep me").expect("write");
        let err = bind(&path).await.expect_err("not a socket");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "keep me");
    }
}
