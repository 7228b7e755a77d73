"""SIGTERM closes streams with <system-shutdown/>; after a restart nothing acknowledged is lost."""

from __future__ import annotations

import signal

from conftest import USERS
from xmpp_client import Client, body_is, run, subscribe_both

A = "alice@localhost"
B = "bob@localhost"
C = "carol@localhost"


def client(server, jid, resource) -> Client:
    return Client(server, f"{jid}/{resource}", USERS[jid])


def test_restart_keeps_offline_messages_roster_and_subscriptions(server):
    async def before():
        a, b = client(server, A, "before"), client(server, B, "before")
        try:
            await a.start()
            await b.start()
            await subscribe_both(a, b)
            await a.update_roster(C, name="Carol", groups=["Friends"])
            # A pending outbound subscription request to an offline contact.
            a.send_presence(pto=C, ptype="subscribe")
            await b.stop()
            a.send_message(mto=B, mbody="kept across restart", mtype="chat")
            await a.ping_server()  # the message has been handled (stored) by now
            server.proc.send_signal(signal.SIGTERM)
            err = await a.stream_errors.wait_for(lambda e: True, timeout=20,
                                                 what="a stream error on SIGTERM")
            assert err["condition"] == "system-shutdown", err
        finally:
            await a.stop()
            await b.stop()

    run(before())
    rc = server.proc.wait(timeout=30)
    assert rc == 0, f"franca exited with {rc} after SIGTERM"

    server.start()

    async def after():
        a, b, c = client(server, A, "after"), client(server, B, "after"), client(server, C, "after")
        try:
            await b.start()
            m = await b.messages.wait_for(body_is("kept across restart", A),
                                          what="the offline message stored before the restart")
            assert m.xml.find("{urn:xmpp:delay}delay") is not None, m
            rb = await b.roster_items()
            assert rb.get(A, {}).get("subscription") == "both", rb
            await a.start()
            ra = await a.roster_items()
            assert ra.get(B, {}).get("subscription") == "both", ra
            assert ra.get(C, {}).get("name") == "Carol", ra
            assert ra[C].get("groups") == ["Friends"], ra
            assert ra[C].get("subscription") == "none" and ra[C].get("ask") == "subscribe", ra
            # The subscription still works: presence flows both ways after the restart.
            await a.presences.wait_for(lambda p: str(p["from"]) == str(b.boundjid) and p["type"] == "available",
                                       what="bob's presence at alice (probe after restart)")
            await b.presences.wait_for(lambda p: str(p["from"]) == str(a.boundjid) and p["type"] == "available",
                                       what="alice's initial presence at bob after restart")
            # The pending request reaches carol when she comes online (RFC 6121 §3.1.3).
            await c.start()
            await c.presences.wait_for(lambda p: p["type"] == "subscribe" and p["from"].bare == A,
                                       what="alice's pending subscription request at carol")
        finally:
            for x in (a, b, c):
                await x.stop()

    run(after())


def test_sigterm_closes_every_stream_with_system_shutdown(server):
    async def main():
        clients = [client(server, A, "one"), client(server, A, "two"), client(server, B, "one")]
        direct = Client(server, f"{C}/direct", USERS[C], mode="tls")
        clients.append(direct)
        try:
            for x in clients:
                await x.start()
            server.proc.send_signal(signal.SIGTERM)
            for x in clients:
                err = await x.stream_errors.wait_for(lambda e: True, timeout=20,
                                                     what=f"stream error at {x.boundjid}")
                assert err["condition"] == "system-shutdown", (str(x.boundjid), err)
        finally:
            for x in clients:
                await x.stop()

    run(main())
    assert server.proc.wait(timeout=30) == 0
