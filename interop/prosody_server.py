"""Start and stop a real Prosody (Debian's 0.12) as a second XMPP domain for federation tests.

Each server gets its own temporary directory (config, data, log, pidfile), c2s ports on
127.0.0.1 (the interop clients connect there) and an s2s port on its own loopback address
(127.0.0.2 by default), a MUC component at `conference.<domain>`, and the certificate the test
gives it (see `certs.py`).

Static routes. Prosody 0.12 has no static route table: outgoing s2s connections resolve the
peer with DNS SRV and A/AAAA (`net.resolvers.service`). The tests must not depend on DNS or
edit `/etc/hosts`, so the harness writes a small global plugin, `mod_test_s2s_routes`, into
the server's own plugin directory: it wraps `net.resolvers.service.new`, which mod_s2s calls
for every new outgoing connection, and answers the configured domains with a fixed address
and port (`xmpp-server`, STARTTLS) and nothing for `xmpps-server` (no direct TLS); every other
domain goes to the normal resolver. It is loaded only by these test servers.
"""

from __future__ import annotations

import os
import pathlib
import re
import signal
import socket
import subprocess
import time

from franca_server import free_ports

PROSODY = os.environ.get("PROSODY_BIN", "/usr/bin/prosody")
PROSODYCTL = os.environ.get("PROSODYCTL_BIN", "/usr/bin/prosodyctl")

ROUTES_PLUGIN = """\
-- Static s2s routes for the interop tests (written by interop/prosody_server.py).
-- test_s2s_routes = { ["domain"] = { "address", port } }
module:set_global();

local service = require "net.resolvers.service";
local basic = require "net.resolvers.basic";
local manual = require "net.resolvers.manual";

local routes = module:get_option("test_s2s_routes", {});
local original_new = service.new;

service.new = function (hostname, srv, conn_type, extra)
	local route = routes[hostname];
	if route then
		if srv ~= "xmpp-server" then
			-- No direct-TLS target: the route is a STARTTLS port.
			return manual.new({}, conn_type, extra);
		end
		module:log("debug", "static route for %s: %s port %d", hostname, route[1], route[2]);
		return basic.new(route[1], route[2], conn_type, extra);
	end
	return original_new(hostname, srv, conn_type, extra);
end

function module.unload()
	service.new = original_new;
end
"""


def lua_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ProsodyServer:
    """One Prosody process serving `domain`. Use start()/stop(); the log is workdir/prosody.log.

    cert: a `certs.CertPair` (its `ca` is what clients and, with `trust`, peers verify against).
    trust: a CA file Prosody trusts for peers' certificates (None: the system's, so a
      self-signed peer is not valid and dialback is used).
    secure_auth: `s2s_secure_auth`: peers must present a valid certificate (no dialback).
    routes: {domain: (address, port)} for outgoing s2s.
    bidi: load mod_s2s_bidi (XEP-0288).
    """

    def __init__(
        self,
        workdir: pathlib.Path,
        *,
        domain: str,
        cert,
        trust: pathlib.Path | None = None,
        secure_auth: bool = False,
        routes: dict[str, tuple[str, int]] | None = None,
        s2s_address: str = "127.0.0.2",
        bidi: bool = False,
        extra: str = "",
    ):
        self.domain = domain
        self.muc_domain = f"conference.{domain}"
        self.workdir = pathlib.Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.workdir / "data"
        self.data_dir.mkdir(exist_ok=True)
        self.plugin_dir = self.workdir / "plugins"
        self.plugin_dir.mkdir(exist_ok=True)
        (self.workdir / "certs").mkdir(exist_ok=True)  # Prosody indexes it at start
        self.config_path = self.workdir / "prosody.cfg.lua"
        self.log_path = self.workdir / "prosody.log"
        self.pid_path = self.workdir / "prosody.pid"
        self.cert = cert
        self.trust = trust
        self.secure_auth = secure_auth
        self.routes = dict(routes or {})
        self.s2s_address = s2s_address
        self.bidi = bidi
        self.extra = extra
        self.c2s_port, self.c2s_tls_port, self.s2s_port = free_ports(3)
        self.proc: subprocess.Popen | None = None
        self.write_config()

    @property
    def cafile(self) -> str:
        """What clients trust to verify this server's certificate."""
        return str(self.cert.ca)

    @property
    def s2s_route(self) -> str:
        """`address:port` for the peer's static route to this server."""
        return f"{self.s2s_address}:{self.s2s_port}"

    def add_route(self, domain: str, address: str, port: int) -> None:
        """A static route for outgoing s2s; call before start()."""
        self.routes[domain] = (address, port)
        self.write_config()

    def write_config(self) -> None:
        (self.plugin_dir / "mod_test_s2s_routes.lua").write_text(ROUTES_PLUGIN)
        routes = "; ".join(f"[{lua_str(d)}] = {{ {lua_str(a)}, {p} }}" for d, (a, p) in sorted(self.routes.items()))
        ssl = [f"certificate = {lua_str(str(self.cert.cert))}", f"key = {lua_str(str(self.cert.key))}"]
        if self.trust is not None:
            ssl.append(f"cafile = {lua_str(str(self.trust))}")
        else:
            # No peer is trusted: a directory with no certificates in it.
            empty = self.workdir / "no-trust"
            empty.mkdir(exist_ok=True)
            ssl.append(f"capath = {lua_str(str(empty))}")
        modules = ["roster", "saslauth", "tls", "dialback", "disco", "ping", "posix", "presence",
                   "message", "iq", "version", "time", "test_s2s_routes"]
        if self.bidi:
            modules.append("s2s_bidi")
        d = lambda p: lua_str(str(p))  # noqa: E731
        text = f"""-- Written by interop/prosody_server.py for one test.
run_as_root = true
pidfile = {d(self.pid_path)}
data_path = {d(self.data_dir)}
plugin_paths = {{ {d(self.plugin_dir)} }}
log = {{ debug = {d(self.log_path)} }}
network_backend = "epoll"
certificates = {d(self.workdir / "certs")}
c2s_ports = {{ {self.c2s_port} }}
c2s_interfaces = {{ "127.0.0.1" }}
c2s_direct_tls_ports = {{ {self.c2s_tls_port} }}
c2s_direct_tls_interfaces = {{ "127.0.0.1" }}
s2s_ports = {{ {self.s2s_port} }}
s2s_interfaces = {{ {lua_str(self.s2s_address)} }}
s2s_direct_tls_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
modules_enabled = {{ {"; ".join(lua_str(m) for m in modules)} }}
modules_disabled = {{ "offline" }}
c2s_require_encryption = true
s2s_require_encryption = true
s2s_secure_auth = {"true" if self.secure_auth else "false"}
s2s_timeout = 20
authentication = "internal_hashed"
storage = "internal"
ssl = {{ {"; ".join(ssl)} }}
test_s2s_routes = {{ {routes} }}
unbound = {{ resolvconf = false; hoststxt = false }}
{self.extra}

VirtualHost {lua_str(self.domain)}

Component {lua_str(self.muc_domain)} "muc"
    restrict_room_creation = false
    muc_room_default_public = true
    muc_room_locking = false
"""
        self.config_path.write_text(text)

    # -- command line -------------------------------------------------------------------------

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            [PROSODYCTL, "--config", str(self.config_path), *args],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, cwd=self.workdir,
        )

    def check_config(self) -> str:
        """`prosodyctl check config`: its output (raises when it reports a problem)."""
        proc = self.ctl("check", "config")
        if proc.returncode != 0:
            raise RuntimeError(f"prosodyctl check config exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
        return proc.stdout + proc.stderr

    def add_user(self, jid: str, password: str) -> None:
        user, _, host = jid.partition("@")
        proc = self.ctl("register", user, host, password)
        if proc.returncode != 0:
            raise RuntimeError(f"prosodyctl register {jid} exited {proc.returncode}: {proc.stderr.strip()} {proc.stdout.strip()}")

    # -- process ------------------------------------------------------------------------------

    def start(self, timeout: float = 30) -> None:
        assert self.proc is None or self.proc.poll() is not None, "server already running"
        log = open(self.workdir / "prosody.stdout", "ab")
        self.proc = subprocess.Popen(
            [PROSODY, "--config", str(self.config_path), "-F"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise RuntimeError(f"prosody exited with {rc} during start-up:\n{self.log_text()}")
            if (self._port_open("127.0.0.1", self.c2s_port) and self._port_open("127.0.0.1", self.c2s_tls_port)
                    and self._port_open(self.s2s_address, self.s2s_port)):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"prosody did not listen within {timeout}s:\n{self.log_text()}")
            time.sleep(0.05)

    @staticmethod
    def _port_open(address: str, port: int) -> bool:
        try:
            with socket.create_connection((address, port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self, timeout: float = 15) -> int | None:
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

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        out = []
        for p in (self.workdir / "prosody.stdout", self.log_path):
            try:
                out.append(p.read_text(errors="replace"))
            except FileNotFoundError:
                pass
        return "\n".join(out) or "(no log)"

    def log_has(self, pattern: str) -> bool:
        """Whether a line of the log matches the regular expression."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return False
        return re.search(pattern, text, re.MULTILINE) is not None
