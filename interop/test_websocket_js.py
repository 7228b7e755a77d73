"""A third-party JavaScript client (@xmpp/client, from npm, in Node) over XMPP-over-WebSocket
(RFC 7395) logs in, becomes a contact of a TCP-connected slixmpp user, sees its presence and
chats with it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil

from conftest import USERS
from franca_server import DOMAIN
from xmpp_client import Client, EventLog, run

A = f"alice@{DOMAIN}"
B = f"bob@{DOMAIN}"
JS_DIR = os.path.join(os.path.dirname(__file__), "js")


def node_flags(node: str) -> list[str]:
    """@xmpp/client 0.14 uses the global WebSocket, which Node 20 (Debian 12's is 18, the
    machine's 20) has only behind a flag; Node 22 has it by default."""
    import subprocess
    probe = subprocess.run([node, "-e", "process.exit(typeof WebSocket === 'function' ? 0 : 1)"])
    return [] if probe.returncode == 0 else ["--experimental-websocket"]


async def pump_events(stream: asyncio.StreamReader, log: EventLog) -> None:
    while line := await stream.readline():
        log.push(json.loads(line))


def test_xmpp_client_js_over_websocket_chats_with_slixmpp(server):
    node = shutil.which("node")
    assert node, "node is not installed (scripts/test installs Debian's nodejs when missing)"
    assert os.path.isdir(os.path.join(JS_DIR, "node_modules", "@xmpp", "client")), (
        "interop/js/node_modules is missing (scripts/test runs npm ci there)")

    async def main():
        b = Client(server, B + "/tcp", USERS[B])
        events = EventLog("@xmpp/client event")
        proc = None
        try:
            await b.start()
            service = f"ws://127.0.0.1:{server.http_port}/xmpp-websocket"
            proc = await asyncio.create_subprocess_exec(
                node, *node_flags(node), "ws_chat.mjs", service, DOMAIN, "alice", USERS[A], "web",
                cwd=JS_DIR, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
            reader = asyncio.ensure_future(pump_events(proc.stdout, events))
            online = await events.wait_for(lambda e: e["event"] in ("online", "error"),
                                           what="the JS client online")
            assert online["event"] == "online", online
            # @xmpp/client logs in with SASL2 and Bind2 (XEP-0388/0386), so the server picks
            # the resource: the client's tag "web", then "/" and a suffix.
            web = online["jid"]
            assert web.startswith(A + "/web/"), online

            # Bob asks; the JS client approves and asks back; Bob approves.
            b.send_presence(pto=A, ptype="subscribe")
            await b.presences.wait_for(lambda p: p["type"] == "subscribe" and p["from"].bare == A,
                                       what="the JS client's subscription request")
            b.send_presence(pto=A, ptype="subscribed")
            # The JS client now sees Bob's current presence (RFC 6121 §3.1.5).
            seen = await events.wait_for(
                lambda e: e["event"] == "presence" and e["from"] == B + "/tcp"
                and e["type"] == "available", what="Bob's presence at the JS client")
            assert seen
            # …and Bob sees the JS client's.
            await b.presences.wait_for(
                lambda p: p["from"] == web and p["type"] in ("available", ""),
                what="the JS client's presence at Bob")

            b.send_message(mto=web, mbody="hello over TCP", mtype="chat")
            got = await events.wait_for(lambda e: e["event"] == "message",
                                        what="Bob's message at the JS client")
            assert got["body"] == "hello over TCP" and got["from"] == B + "/tcp", got
            echo = await b.messages.wait_for(lambda m: m["body"] == "echo: hello over TCP",
                                             what="the JS client's answer")
            assert str(echo["from"]) == web, echo

            proc.stdin.close()
            assert await asyncio.wait_for(proc.wait(), 20) == 0
            reader.cancel()
        finally:
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()
            await b.stop()

    run(main())
