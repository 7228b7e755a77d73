"""XEP-0198 stream management with slixmpp's own implementation (its xep_0198 plugin): a client
whose TCP connection is cut resumes its session and receives what was sent meanwhile, exactly
once; and when it does not come back in time, what it never acknowledged becomes offline
messages for its next login."""

from __future__ import annotations

import asyncio

from conftest import USERS
from xmpp_client import Client, body_is, run

A = "alice@localhost"
B = "bob@localhost"


def sm_client(server, jid, resource) -> Client:
    c = Client(server, f"{jid}/{resource}", USERS[jid])
    c.register_plugin("xep_0198")
    c.enabled = asyncio.Event()
    c.resumed = asyncio.Event()
    c.add_event_handler("sm_enabled", lambda _e: c.enabled.set())
    c.add_event_handler("session_resumed", lambda _e: c.resumed.set())
    return c


def bodies(client: Client) -> list[str]:
    return [m["body"] for m in client.messages.items]


async def cut(client: Client) -> None:
    """Drop the TCP connection without a closing tag, as a phone losing its network does."""
    client.got_disconnected.clear()
    client.abort()
    await asyncio.wait_for(client.got_disconnected.wait(), 10)


def test_resumption_after_a_cut_connection_delivers_everything_once(server):
    async def main():
        a = sm_client(server, A, "phone")
        b = Client(server, f"{B}/desk", USERS[B])
        try:
            await a.start()
            await asyncio.wait_for(a.enabled.wait(), 15)
            sm = a.plugin["xep_0198"]
            assert sm.sm_id, "the server granted no resumption id"
            await b.start()
            b.send_message(mto=A, mbody="before the cut", mtype="chat")
            await a.messages.wait_for(body_is("before the cut"), what="the first message")

            await cut(a)
            for i in range(3):
                b.send_message(mto=A, mbody=f"while cut {i}", mtype="chat")
            await b.ping_server()

            # slixmpp resumes by itself on the new connection (it kept sm_id).
            a.connect("127.0.0.1", a.port)
            await asyncio.wait_for(a.resumed.wait(), 15)
            for i in range(3):
                await a.messages.wait_for(body_is(f"while cut {i}"), what=f"message {i} after resuming")
            # The session is the same one: chat goes on, and nothing came twice.
            b.send_message(mto=str(a.boundjid), mbody="after resuming", mtype="chat")
            await a.messages.wait_for(body_is("after resuming"), what="a message after resuming")
            await a.ping_server()
            assert bodies(a) == [], f"unexpected or repeated messages: {bodies(a)}"
            assert not b.errors.items, f"bob got bounces: {b.errors.items}"
        finally:
            await a.stop()
            await b.stop()

    run(main())


def test_unacknowledged_messages_become_offline_messages_when_resumption_times_out(make_server):
    server = make_server(extra="[stream_management]\nresume_timeout_seconds = 2\n")

    async def main():
        a = sm_client(server, A, "phone")
        b = Client(server, f"{B}/desk", USERS[B])
        a2 = None
        try:
            await a.start()
            await asyncio.wait_for(a.enabled.wait(), 15)
            # This client receives but never acknowledges, so the server must keep everything.
            a.plugin["xep_0198"].send_ack = lambda: None
            await b.start()
            b.send_message(mto=A, mbody="received, never acknowledged", mtype="chat")
            await a.messages.wait_for(body_is("received, never acknowledged"), what="the first message")
            await cut(a)
            b.send_message(mto=A, mbody="sent while asleep", mtype="chat")
            await b.ping_server()
            await asyncio.sleep(4)

            # A fresh login, long after the resumption time: both arrive as offline messages,
            # with a XEP-0203 delay, once each.
            a2 = Client(server, f"{A}/laptop", USERS[A])
            await a2.start()
            for body in ("received, never acknowledged", "sent while asleep"):
                m = await a2.messages.wait_for(body_is(body), what=f"offline message {body!r}")
                assert m["delay"]["stamp"] is not None, f"no delay on {m}"
            await a2.ping_server()
            await asyncio.sleep(0.5)
            assert bodies(a2) == [], f"unexpected or repeated messages: {bodies(a2)}"
            assert not b.errors.items, f"bob got bounces: {b.errors.items}"
        finally:
            a.abort()
            await b.stop()
            if a2 is not None:
                await a2.stop()

    run(main())
