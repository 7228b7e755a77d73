"""XEP-0114 components with a real gateway: Debian's biboumi (IRC gateway) connects to Franca's
component port for `irc.localhost`, Debian's ngircd is the IRC server, and a Franca user on
slixmpp talks with a plain IRC client (a raw socket) in `#test`.

Every daemon gets its own config file in the test's temporary directory, free ports on
127.0.0.1, and is started without forking and stopped by its PID. biboumi tries the IRC ports
6697/6670/6667 by default, so the user first sets the IRC server's ports with biboumi's own
XEP-0050 `configure` command on `127.0.0.1@irc.localhost` (stored in biboumi's SQLite file).
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import socket
import subprocess
import time

import pytest

from conftest import USERS
from franca_server import FrancaServer, franca_bin, free_ports
from xmpp_client import Client, run

BIBOUMI = os.environ.get("BIBOUMI_BIN", "/usr/bin/biboumi")
NGIRCD = os.environ.get("NGIRCD_BIN", "/usr/sbin/ngircd")
GATEWAY = "irc.localhost"
SECRET = "biboumi-component-secret"
IRC_HOST = "127.0.0.1"
CHANNEL = f"#test%{IRC_HOST}@{GATEWAY}"
A = "alice@localhost"

pytestmark = pytest.mark.skipif(
    not (os.access(BIBOUMI, os.X_OK) and os.access(NGIRCD, os.X_OK)),
    reason="biboumi and ngircd are not installed (scripts/test installs them)",
)


def wait_port(port: int, proc: subprocess.Popen, what: str, log: pathlib.Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not listen on {port}:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)


class Daemon:
    """A child process with its log file, stopped by PID with SIGTERM (then SIGKILL)."""

    def __init__(self, name: str, argv: list[str], workdir: pathlib.Path):
        self.name = name
        self.log = workdir / f"{name}.log"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, cwd=workdir)

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_ngircd(workdir: pathlib.Path, port: int) -> Daemon:
    """ngircd on 127.0.0.1:port only: no PAM, ident or DNS lookups, no TLS, no fork, no pidfile
    (started as root it runs as `nobody`, which could not write one in the test's directory);
    it is stopped by the PID of the child process."""
    conf = workdir / "ngircd.conf"
    conf.write_text(f"""[Global]
    Name = irc.test.local
    Info = Franca interop IRC server
    AdminInfo1 = Franca interop test
    AdminInfo2 = loopback only
    AdminEMail = root@localhost
    Listen = 127.0.0.1
    Ports = {port}
    MotdPhrase = Franca interop test
    PidFile =
[Limits]
    MaxConnectionsIP = 0
    PingTimeout = 120
    PongTimeout = 20
[Options]
    PAM = no
    Ident = no
    DNS = no
    RequireAuthPing = no
    SyslogFacility = local1
""")
    d = Daemon("ngircd", [NGIRCD, "--nodaemon", "--passive", "--config", str(conf)], workdir)
    wait_port(port, d.proc, "ngircd", d.log)
    return d


def start_biboumi(workdir: pathlib.Path, component_port: int) -> Daemon:
    """biboumi for irc.localhost, connected to Franca's component port; identd off."""
    conf_dir = workdir / "biboumi"
    conf_dir.mkdir(exist_ok=True)
    conf = conf_dir / "biboumi.cfg"
    conf.write_text("\n".join([
        f"hostname={GATEWAY}",
        f"password={SECRET}",
        "xmpp_server_ip=127.0.0.1",
        f"port={component_port}",
        f"db_name={conf_dir / 'biboumi.sqlite'}",
        "identd_port=0",
        "log_level=0",
        f"policy_directory={conf_dir}",
        "realname_customization=true",
        "",
    ]))
    return Daemon("biboumi", [BIBOUMI, str(conf)], workdir)


class IrcClient:
    """A plain IRC client on a raw socket: registers, joins, reads lines, answers PINGs."""

    def __init__(self, port: int, nick: str):
        self.nick = nick
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.settimeout(0.2)
        self.buf = b""
        self.lines: list[str] = []
        self.send(f"NICK {nick}")
        self.send(f"USER {nick} 0 * :Franca interop")
        self.wait(lambda l: f" 001 {nick} " in l, "the IRC welcome (001)")

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\r\n")

    def _read(self) -> None:
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, BlockingIOError):
            return
        if not data:
            raise AssertionError("the IRC server closed the connection:\n" + "\n".join(self.lines))
        self.buf += data
        while b"\r\n" in self.buf:
            raw, self.buf = self.buf.split(b"\r\n", 1)
            line = raw.decode(errors="replace")
            if line.startswith("PING "):
                self.send("PONG " + line[5:])
            self.lines.append(line)

    def wait(self, pred, what: str, timeout: float = 20) -> str:
        """The first line (past or future) that satisfies pred; it is consumed."""
        deadline = time.monotonic() + timeout
        while True:
            for i, line in enumerate(self.lines):
                if pred(line):
                    del self.lines[i]
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; IRC lines:\n" + "\n".join(self.lines))
            self._read()

    async def await_line(self, pred, what: str, timeout: float = 20) -> str:
        return await asyncio.get_running_loop().run_in_executor(None, lambda: self.wait(pred, what, timeout))

    def close(self) -> None:
        try:
            self.send("QUIT :bye")
        except OSError:
            pass
        self.sock.close()


async def configure_irc_ports(alice: Client, irc_port: int) -> None:
    """biboumi's XEP-0050 `configure` on the IRC server JID: plain port = ngircd's, no TLS ports."""
    server_jid = f"{IRC_HOST}@{GATEWAY}"
    adhoc = alice.plugin["xep_0050"]
    first = await adhoc.send_command(server_jid, "configure", timeout=15)
    command = first["command"]
    form = command["form"]
    fields = form.get_fields()
    assert "ports" in fields and "tls_ports" in fields, f"biboumi's configure form: {form}"
    submit = alice.plugin["xep_0004"].make_form(ftype="submit")
    for var, field in fields.items():
        if var == "ports":
            submit.add_field(var=var, ftype=field["type"], value=[str(irc_port)])
        elif var == "tls_ports":
            submit.add_field(var=var, ftype=field["type"], value=[])
        elif field["type"] != "fixed" and var:
            submit.add_field(var=var, ftype=field["type"], value=field["value"])
    done = await adhoc.send_command(server_jid, "configure", action="complete", payload=submit,
                                    sessionid=command["sessionid"], timeout=15)
    assert done["command"]["status"] == "completed", done


@pytest.fixture
def gateway(tmp_path, request):
    """Franca with the component listener, ngircd, and biboumi connected as irc.localhost."""
    if not os.access(franca_bin(), os.X_OK):
        pytest.fail(f"franca binary not found at {franca_bin()} (build it or set FRANCA_BIN)")
    franca = FrancaServer(tmp_path / "franca", component=True, extra="\n".join([
        "[[component]]",
        f'domain = "{GATEWAY}"',
        f'secret = "{SECRET}"',
        'name = "IRC gateway"',
        "",
    ]))
    daemons: list[Daemon] = []
    try:
        for jid, pw in USERS.items():
            franca.add_user(jid, pw)
        franca.start()
        wait_port(franca.component_port, franca.proc, "franca (component port)", franca.log_path)
        # Picked once Franca holds its ports, so the IRC server cannot be handed one of them.
        [irc_port] = free_ports(1)
        daemons.append(start_ngircd(tmp_path, irc_port))
        biboumi = start_biboumi(tmp_path, franca.component_port)
        daemons.append(biboumi)
        deadline = time.monotonic() + 30
        while "component connected" not in franca.log_text():
            if biboumi.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("biboumi did not connect to franca:\n" + biboumi.log_text()
                                   + "\n----- franca -----\n" + franca.log_text()[-5000:])
            time.sleep(0.1)
        yield franca, irc_port, daemons
    finally:
        for d in reversed(daemons):
            d.stop()
        rc = franca.stop()
        # On failure (conftest records each phase's report) or on request (INTEROP_VERBOSE=1), the
        # logs of all three.
        verbose = bool(os.environ.get("INTEROP_VERBOSE"))
        keep = None if verbose else -10000
        failed = any(getattr(getattr(request.node, "rep_" + w, None), "failed", False)
                     for w in ("setup", "call"))
        if verbose or failed or any(d.proc.returncode not in (0, -15, None) for d in daemons):
            for d in daemons:
                print(f"\n----- {d.name} log -----\n{d.log_text()[keep:]}")
            print(f"\n----- franca log (exit {rc}) -----\n{franca.log_text()[keep:]}")


def test_a_franca_user_talks_to_an_irc_channel_through_biboumi(gateway):
    franca, irc_port, daemons = gateway

    async def main():
        irc = IrcClient(irc_port, "ircbob")
        alice = Client(franca, f"{A}/desk", USERS[A])
        for p in ("xep_0004", "xep_0045", "xep_0050"):
            alice.register_plugin(p)
        groupchat = []
        alice.add_event_handler("groupchat_message", groupchat.append)
        try:
            irc.send("JOIN #test")
            irc.wait(lambda l: " 366 ircbob #test " in l, "the end of the NAMES list of #test")
            await alice.start()

            # The gateway is listed by the server and describes itself.
            disco = alice.plugin["xep_0030"]
            items = await disco.get_items(jid="localhost", timeout=15)
            assert (GATEWAY, None, "IRC gateway") in items["disco_items"]["items"], items
            info = await disco.get_info(jid=GATEWAY, timeout=15)
            identities = info["disco_info"]["identities"]
            assert identities, info
            assert any(i[0] in ("conference", "gateway") and i[1] == "irc" for i in identities), identities

            await configure_irc_ports(alice, irc_port)

            muc = alice.plugin["xep_0045"]
            await muc.join_muc_wait(CHANNEL, "alicexmpp", timeout=30)
            await irc.await_line(lambda l: l.startswith(":alicexmpp!") and " JOIN " in l and "#test" in l,
                                 "alice's JOIN on IRC")

            alice.send_message(mto=CHANNEL, mbody="hello from xmpp", mtype="groupchat")
            line = await irc.await_line(lambda l: "PRIVMSG #test :hello from xmpp" in l,
                                        "alice's message on IRC")
            assert line.startswith(":alicexmpp!"), line

            irc.send("PRIVMSG #test :hello from irc")
            for _ in range(400):
                if any(m["body"] == "hello from irc" for m in groupchat):
                    break
                await asyncio.sleep(0.05)
            got = [m for m in groupchat if m["body"] == "hello from irc"]
            assert got, [str(m) for m in groupchat]
            assert str(got[0]["from"]) == f"{CHANNEL}/ircbob", got[0]

            # A private message from IRC reaches the user too (biboumi's per-nick JID).
            irc.send("PRIVMSG alicexmpp :psst")
            msg = await alice.messages.wait_for(lambda m: m["body"] == "psst", timeout=20,
                                                what="the private IRC message")
            assert str(msg["from"]).endswith(f"@{GATEWAY}") or f"@{GATEWAY}/" in str(msg["from"]), msg
        finally:
            irc.close()
            await alice.stop()

    run(main())
    assert all(d.proc.poll() is None for d in daemons), "a daemon died during the test"
