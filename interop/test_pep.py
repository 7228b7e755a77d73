"""XEP-0163 PEP with slixmpp's own plugins: a XEP-0084 avatar published by one client reaches a
contact whose XEP-0115 capabilities (computed and announced by slixmpp's xep_0115, resolved by
the server with a disco#info query) include `urn:xmpp:avatar:metadata+notify`; and XEP-0402
bookmarks published through xep_0060 are what slixmpp's XEP-0048 client reads from XEP-0049
private storage."""

from __future__ import annotations

from conftest import USERS
from xmpp_client import Client, EventLog, run, subscribe_both

A = "alice@localhost"
B = "bob@localhost"
META = "urn:xmpp:avatar:metadata"


def pep_client(server, jid, resource) -> Client:
    c = Client(server, f"{jid}/{resource}", USERS[jid])
    for p in ("xep_0115", "xep_0163", "xep_0060", "xep_0084"):
        c.register_plugin(p)
    c.avatars = EventLog("avatar metadata event")
    c.add_event_handler("avatar_metadata_publish", c.avatars.push)
    return c


def test_avatar_metadata_reaches_a_contact_with_notify_caps(server):
    async def main():
        a = pep_client(server, A, "phone")
        b = pep_client(server, B, "desk")
        try:
            await a.start()
            await b.start()
            await subscribe_both(a, b)
            # Bob's caps went out with his initial presence; a fresh one after the
            # subscription makes sure the server has resolved them.
            b.send_presence()
            await b.ping_server()
            await a.plugin["xep_0084"].publish_avatar_metadata(
                items=[{"id": "0123456789abcdef", "type": "image/png", "bytes": "1234",
                        "height": "64", "width": "64"}],
                timeout=15,
            )
            msg = await b.avatars.wait_for(lambda m: str(m["from"].bare) == A,
                                           what="alice's avatar metadata")
            item = msg["pubsub_event"]["items"]["item"]
            assert item["id"] == "0123456789abcdef", item
            info = item["avatar_metadata"]["items"][0]
            assert info["id"] == "0123456789abcdef" and int(info["bytes"]) == 1234, info
        finally:
            await a.stop()
            await b.stop()

    run(main())


def test_xep0402_bookmarks_are_read_through_xep0048(server):
    async def main():
        a = Client(server, f"{A}/phone", USERS[A])
        for p in ("xep_0060", "xep_0048", "xep_0049", "xep_0402", "xep_0004"):
            a.register_plugin(p)
        try:
            await a.start()
            from slixmpp.plugins.xep_0402.stanza import Conference

            conf = Conference()
            conf["name"] = "The Orchard"
            conf["autojoin"] = True
            conf["nick"] = "alice"
            form = a.plugin["xep_0004"].make_form(ftype="submit")
            form.add_field(var="FORM_TYPE", ftype="hidden",
                           value="http://jabber.org/protocol/pubsub#publish-options")
            form.add_field(var="pubsub#persist_items", value="true")
            form.add_field(var="pubsub#max_items", value="max")
            form.add_field(var="pubsub#access_model", value="whitelist")
            await a.plugin["xep_0060"].publish(
                A, "urn:xmpp:bookmarks:1", id="orchard@conference.localhost",
                payload=conf, options=form, timeout=15)
            result = await a.plugin["xep_0048"].get_bookmarks(method="xep_0049", timeout=15)
            confs = result["private"]["bookmarks"]["conferences"]
            assert len(confs) == 1, result
            assert str(confs[0]["jid"]) == "orchard@conference.localhost", result
            assert confs[0]["name"] == "The Orchard" and confs[0]["nick"] == "alice", result
        finally:
            await a.stop()

    run(main())
