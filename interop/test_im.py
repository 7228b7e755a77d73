"""RFC 6121 IM and the core modules, with slixmpp clients on both ends."""

from __future__ import annotations

from conftest import USERS
from xmpp_client import Client, body_is, run, subscribe_both, wait_until

A = "alice@localhost"
B = "bob@localhost"


def client(server, jid, resource, **kw) -> Client:
    return Client(server, f"{jid}/{resource}", USERS[jid], **kw)


def test_subscription_handshake_both_ways(server):
    async def main():
        a, b = client(server, A, "sub"), client(server, B, "sub")
        try:
            await a.start()
            await b.start()
            await subscribe_both(a, b)
            # The server's stored roster (a fresh roster get) agrees.
            ra, rb = await a.roster_items(), await b.roster_items()
            assert ra.get(B, {}).get("subscription") == "both", ra
            assert rb.get(A, {}).get("subscription") == "both", rb
            assert not ra[B].get("ask") and not rb[A].get("ask"), (ra, rb)
        finally:
            await a.stop()
            await b.stop()

    run(main())


def test_roster_set_and_push(server):
    async def main():
        a1, a2 = client(server, A, "one"), client(server, A, "two")
        try:
            await a1.start()
            await a2.start()
            await a1.update_roster("carol@localhost", name="Carol", groups=["Friends"])
            # The roster push reaches the other resource too.
            await wait_until(lambda: a2.client_roster.has_jid("carol@localhost")
                             and a2.client_roster["carol@localhost"]["name"] == "Carol",
                             what="roster push of carol to the second resource")
            items = await a2.roster_items()
            assert items["carol@localhost"]["name"] == "Carol", items
            assert items["carol@localhost"]["groups"] == ["Friends"], items
            assert items["carol@localhost"]["subscription"] == "none", items
        finally:
            await a1.stop()
            await a2.stop()

    run(main())


def test_presence_exchange(server):
    async def main():
        a, b = client(server, A, "pres"), client(server, B, "pres")
        b2 = None
        try:
            await a.start()
            await b.start()
            await subscribe_both(a, b)
            # A presence change is broadcast to the subscribed contact.
            b.send_presence(pshow="dnd", pstatus="in a meeting")
            p = await a.presences.wait_for(
                lambda p: str(p["from"]) == str(b.boundjid) and p["show"] == "dnd",
                what="bob's dnd presence at alice")
            assert p["status"] == "in a meeting"
            a.send_presence(pshow="away", pstatus="lunch")
            p = await b.presences.wait_for(
                lambda p: str(p["from"]) == str(a.boundjid) and p["show"] == "away",
                what="alice's away presence at bob")
            assert p["status"] == "lunch"
            # Going offline: the contact sees unavailable.
            await b.stop()
            await a.presences.wait_for(lambda p: str(p["from"]) == str(b.boundjid) and p["type"] == "unavailable",
                                       what="bob's unavailable presence at alice")
            # Coming back: initial presence is broadcast, and the probe brings alice's presence.
            b2 = client(server, B, "back")
            await b2.start()
            await a.presences.wait_for(lambda p: str(p["from"]) == str(b2.boundjid) and p["type"] == "available",
                                       what="bob's new initial presence at alice")
            p = await b2.presences.wait_for(
                lambda p: str(p["from"]) == str(a.boundjid) and p["type"] in ("available", "away"),
                what="alice's current presence at bob (probe)")
            assert p["show"] == "away"
        finally:
            await a.stop()
            await b.stop()
            if b2 is not None:
                await b2.stop()

    run(main())


def test_chat_both_directions(server):
    async def main():
        a, b = client(server, A, "chat"), client(server, B, "chat")
        try:
            await a.start()
            await b.start()
            a.send_message(mto=B, mbody="hello bob", mtype="chat")
            m = await b.messages.wait_for(body_is("hello bob"), what="alice's message at bob")
            assert str(m["from"]) == str(a.boundjid) and m["type"] == "chat"
            b.send_message(mto=str(a.boundjid), mbody="hello alice ✓ <&>", mtype="chat")
            m = await a.messages.wait_for(body_is("hello alice ✓ <&>"), what="bob's reply at alice")
            assert str(m["from"]) == str(b.boundjid) and m["type"] == "chat"
        finally:
            await a.stop()
            await b.stop()

    run(main())


def test_offline_delivery_after_reconnect(server):
    async def main():
        a = client(server, A, "off")
        b = b2 = None
        try:
            await a.start()
            a.send_message(mto=B, mbody="offline one", mtype="chat")
            a.send_message(mto=B, mbody="offline two", mtype="chat")
            await a.ping_server()  # both messages have been handled by the server
            b = client(server, B, "off")
            await b.start()
            m1 = await b.messages.wait_for(body_is("offline one", A), what="first offline message")
            m2 = await b.messages.wait_for(body_is("offline two", A), what="second offline message")
            for m in (m1, m2):
                delay = m.xml.find("{urn:xmpp:delay}delay")
                assert delay is not None, f"no XEP-0203 <delay/> on offline message: {m}"
                assert delay.get("stamp"), f"<delay/> without stamp: {m}"
            # Order is kept.
            assert b.messages.find(body_is("offline one")) is None
            # Delivered once: a new login does not get them again.
            await b.stop()
            b2 = client(server, B, "again")
            await b2.start()
            a.send_message(mto=B, mbody="live now", mtype="chat")
            await b2.messages.wait_for(body_is("live now", A), what="live message after re-login")
            assert b2.messages.find(lambda m: m["body"].startswith("offline")) is None, \
                "offline messages delivered twice"
        finally:
            for c in (a, b, b2):
                if c is not None:
                    await c.stop()

    run(main())


def test_carbons_between_two_resources(server):
    async def main():
        a1, a2, b = client(server, A, "one"), client(server, A, "two"), client(server, B, "carbons")
        try:
            for c in (a1, a2, b):
                await c.start()
            await a1.plugin["xep_0280"].enable()
            await a2.plugin["xep_0280"].enable()
            # Received carbon: bob writes to alice/one, alice/two gets a copy.
            b.send_message(mto=str(a1.boundjid), mbody="to one", mtype="chat")
            await a1.messages.wait_for(body_is("to one", B), what="message at alice/one")
            c = await a2.carbons_received.wait_for(lambda m: m["carbon_received"]["body"] == "to one",
                                                   what="received carbon at alice/two")
            assert str(c["from"]) == A, f"carbon must come from the account's bare JID: {c}"
            assert str(c["carbon_received"]["to"]) == str(a1.boundjid)
            # Sent carbon: alice/one writes to bob, alice/two gets a copy.
            a1.send_message(mto=B, mbody="from one", mtype="chat")
            await b.messages.wait_for(body_is("from one", A), what="message at bob")
            c = await a2.carbons_sent.wait_for(lambda m: m["carbon_sent"]["body"] == "from one",
                                               what="sent carbon at alice/two")
            assert str(c["from"]) == A, f"carbon must come from the account's bare JID: {c}"
            assert str(c["carbon_sent"]["from"]) == str(a1.boundjid)
            # Disabling stops the copies.
            await a2.plugin["xep_0280"].disable()
            b.send_message(mto=str(a1.boundjid), mbody="after disable", mtype="chat")
            await a1.messages.wait_for(body_is("after disable", B))
            await a2.ping_server()
            await a1.ping_server()
            assert a2.carbons_received.find(lambda m: m["carbon_received"]["body"] == "after disable") is None
        finally:
            for c in (a1, a2, b):
                await c.stop()

    run(main())


def test_blocking_drops_messages_and_unblock_restores(server):
    async def main():
        a, b = client(server, A, "block"), client(server, B, "block")
        try:
            await a.start()
            await b.start()
            await a.plugin["xep_0191"].block(B)
            assert B in {str(j) for j in await a.plugin["xep_0191"].get_blocked_jids()}
            b.send_message(mto=A, mbody="while blocked", mtype="chat")
            b.send_message(mto=str(a.boundjid), mbody="while blocked (full)", mtype="chat")
            await b.ping_server()  # bob's messages have been routed (or dropped) by now
            # If a blocked message had been delivered it would be queued at alice before the
            # unblock result below.
            await a.plugin["xep_0191"].unblock(B)
            assert a.messages.find(lambda m: m["body"].startswith("while blocked")) is None, \
                "a message from a blocked contact was delivered"
            for err in b.errors.items:  # a bounce is optional; if there is one it says so properly
                assert err["error"]["condition"] == "service-unavailable", err
            assert B not in {str(j) for j in await a.plugin["xep_0191"].get_blocked_jids()}
            b.send_message(mto=A, mbody="after unblock", mtype="chat")
            await a.messages.wait_for(body_is("after unblock", B), what="message after unblock")
        finally:
            await a.stop()
            await b.stop()

    run(main())


def test_blocking_refuses_outbound_to_blocked_contact(server):
    """XEP-0191 §3.6: a stanza to a blocked JID gets <not-acceptable/> with <blocked/>."""

    async def main():
        a, b = client(server, A, "block"), client(server, B, "block")
        try:
            await a.start()
            await b.start()
            await a.plugin["xep_0191"].block(B)
            a.send_message(mto=B, mbody="to a blocked contact", mtype="chat")
            err = await a.errors.wait_for(lambda m: True, what="error bounce for a message to a blocked JID")
            assert err["error"]["condition"] == "not-acceptable", err
            assert err.xml.find(".//{urn:xmpp:blocking:errors}blocked") is not None, err
            await a.ping_server()
            await b.ping_server()
            assert b.messages.find(body_is("to a blocked contact")) is None
        finally:
            await a.stop()
            await b.stop()

    run(main())
