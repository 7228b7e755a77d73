"""Fast reconnects with a third-party client (issue 4 §5): @xmpp/client 0.14 (npm, in Node) over
XMPP-over-WebSocket logs in with XEP-0388 SASL2 and XEP-0386 Bind2, is given a XEP-0484 FAST
token, logs in again with the token alone (HT-SHA-256-NONE, a wrong password), and is refused
once `franca user revoke-tokens` revoked it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil

from conftest import USERS
from franca_server import DOMAIN
from test_websocket_js import JS_DIR, node_flags
from xmpp_client import EventLog, run

A = f"alice@{DOMAIN}"


async def pump_events(stream: asyncio.StreamReader, log: EventLog) -> None:
    while line := await stream.readline():
        log.push(json.loads(line))


def test_xmpp_client_js_sasl2_bind2_and_fast_token(server):
    node = shutil.which("node")
    assert node, "node is not installed (scripts/test installs Debian's nodejs when missing)"
    assert os.path.isdir(os.path.join(JS_DIR, "node_modules", "@xmpp", "client")), (
        "interop/js/node_modules is missing (scripts/test runs npm ci there)")

    async def main():
        events = EventLog("@xmpp/client event")
        service = f"ws://127.0.0.1:{server.http_port}/xmpp-websocket"
        proc = await asyncio.create_subprocess_exec(
            node, *node_flags(node), "sasl2_fast.mjs", service, DOMAIN, "alice", USERS[A], "js",
            cwd=JS_DIR, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        reader = asyncio.ensure_future(pump_events(proc.stdout, events))
        try:
            first = await events.wait_for(lambda e: e.get("step") == "password",
                                          what="the password login")
            assert first["event"] == "online", first
            # Bind2: the server made the resource from the client's tag.
            assert first["jid"].startswith(A + "/js/"), first
            assert first["token"] == "HT-SHA-256-NONE", first
            assert first["expiry"], first

            second = await events.wait_for(lambda e: e.get("step") == "token",
                                           what="the token login")
            assert second["event"] == "online", second
            # Same client, same tag: the same resource (XEP-0386 stable identifiers).
            assert second["jid"] == first["jid"], second

            out = server.cli("user", "revoke-tokens", A)
            assert out.returncode == 0, out.stderr
            proc.stdin.write(b"revoked\n")
            await proc.stdin.drain()
            third = await events.wait_for(lambda e: e.get("step") == "revoked",
                                          what="the login after revocation")
            assert third["event"] == "refused", third
            assert third["condition"] == "not-authorized", third
            assert await asyncio.wait_for(proc.wait(), 20) == 0
        finally:
            reader.cancel()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    run(main())
