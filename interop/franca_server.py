"""Start and stop a real `franca` server for the interop tests.

Every server gets its own temporary directory (config, data_dir, log), free TCP ports on
127.0.0.1, and its own database: SQLite inside data_dir, or, when FRANCA_TEST_PG_URL is set, a
fresh PostgreSQL database created through that (admin) URL.
"""

from __future__ import annotations

import os
import pathlib
import secrets
import signal
import socket
import subprocess
import time
import urllib.parse

REPO = pathlib.Path(__file__).resolve().parent.parent
DOMAIN = "localhost"


def franca_bin() -> str:
    return os.environ.get("FRANCA_BIN") or str(REPO / "target" / "release" / "franca")


def free_ports(n: int) -> list[int]:
    """n distinct ports that were free a moment ago (held together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def pg_admin_url() -> str | None:
    url = os.environ.get("FRANCA_TEST_PG_URL", "").strip()
    return url or None


def pg_fresh_database(admin_url: str) -> str:
    """Create an empty database next to the one in admin_url; return its URL."""
    name = "franca_it_%d_%s" % (os.getpid(), secrets.token_hex(4))
    proc = subprocess.run(
        ["psql", admin_url, "-v", "ON_ERROR_STOP=1", "-q", "-c", f'CREATE DATABASE "{name}"'],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"cannot create PostgreSQL database {name}: {proc.stderr.strip()}")
    parts = urllib.parse.urlsplit(admin_url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


def toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


class FrancaServer:
    """One franca process. Use start()/stop(); the log is kept in workdir/server.log."""

    def __init__(
        self,
        workdir: pathlib.Path,
        *,
        limits: dict | None = None,
        extra: str = "",
        domain: str = DOMAIN,
        s2s: bool = False,
        component: bool = False,
    ):
        """`extra` is appended to the configuration as it is. `s2s` and `component` open those
        listeners on free ports (`s2s_port`, `component_port`); `domain` is the served domain."""
        self.domain = domain
        self.s2s_port = free_ports(1)[0] if s2s else None
        self.component_port = free_ports(1)[0] if component else None
        self.workdir = pathlib.Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.workdir / "data"
        self.config_path = self.workdir / "franca.toml"
        self.log_path = self.workdir / "server.log"
        self.c2s_port, self.c2s_tls_port, self.http_port = free_ports(3)
        admin = pg_admin_url()
        if admin:
            self.storage_url = pg_fresh_database(admin)
        else:
            self.storage_url = "sqlite://" + str(self.data_dir / "franca.db")
        self.limits = limits or {}
        self.extra = extra
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.write_config()

    @property
    def cafile(self) -> str:
        """The generated self-signed certificate, trusted by the clients as their only CA."""
        return str(self.data_dir / "cert.pem")

    def write_config(self) -> None:
        lines = [
            "[server]",
            f"domains = [{toml_str(self.domain)}]",
            f"data_dir = {toml_str(str(self.data_dir))}",
            "allow_plaintext = false",
            "",
            "[storage]",
            f"url = {toml_str(self.storage_url)}",
            "",
            "[listen]",
            f'c2s = ["127.0.0.1:{self.c2s_port}"]',
            f'c2s_tls = ["127.0.0.1:{self.c2s_tls_port}"]',
            f'http = ["127.0.0.1:{self.http_port}"]',
            "https = []",
            f's2s = ["127.0.0.1:{self.s2s_port}"]' if self.s2s_port else "s2s = []",
            f'component = ["127.0.0.1:{self.component_port}"]' if self.component_port else "component = []",
            "",
        ]
        if self.limits:
            lines.append("[limits]")
            for k, v in self.limits.items():
                lines.append(f"{k} = {v}")
            lines.append("")
        lines.append(self.extra)
        self.config_path.write_text("\n".join(lines))

    # -- command line -------------------------------------------------------------------------

    def cli(self, *args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            [franca_bin(), "--config", str(self.config_path), *args],
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.workdir,
        )

    def add_user(self, jid: str, password: str) -> None:
        proc = self.cli("user", "add", jid, stdin=password + "\n")
        if proc.returncode != 0:
            raise RuntimeError(
                f"`franca user add {jid}` exited {proc.returncode}: {proc.stderr.strip()} {proc.stdout.strip()}"
            )

    # -- process ------------------------------------------------------------------------------

    def start(self, timeout: float = 60) -> None:
        assert self.proc is None or self.proc.poll() is not None, "server already running"
        self.starts += 1
        log = open(self.log_path, "ab")
        log.write(f"\n===== franca serve (start #{self.starts}) =====\n".encode())
        log.flush()
        env = dict(os.environ)
        env.setdefault("RUST_BACKTRACE", "1")
        self.proc = subprocess.Popen(
            [franca_bin(), "--config", str(self.config_path), "serve"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env=env,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise RuntimeError(f"franca serve exited with {rc} during start-up:\n{self.log_text()}")
            if all(self._port_open(p) for p in (self.c2s_port, self.c2s_tls_port)) and os.path.exists(self.cafile):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"franca serve did not listen within {timeout}s:\n{self.log_text()}")
            time.sleep(0.05)

    @staticmethod
    def _port_open(port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self, timeout: float = 20) -> int | None:
        """SIGTERM, then wait. Returns the exit status (None if it had to be killed)."""
        if self.proc is None:
            return None
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
