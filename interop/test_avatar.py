"""XEP-0398 avatar conversion seen by slixmpp's own plugins: an avatar published by a XEP-0084
client (xep_0084) is what a legacy client reads as the vCard PHOTO (xep_0054) and sees as the
XEP-0153 hash in presence (xep_0153), though the publishing client never wrote one; and an
avatar a legacy client sets with xep_0153 reaches a XEP-0084 client as a metadata notification
(xep_0115 caps with +notify) whose data item holds the same bytes."""

from __future__ import annotations

import hashlib
import os
import struct

from conftest import USERS
from xmpp_client import Client, EventLog, run, subscribe_both

A = "alice@localhost"
B = "bob@localhost"
META = "urn:xmpp:avatar:metadata"
CONVERSION = "urn:xmpp:pep-vcard-conversion:0"


def png(width: int, height: int) -> bytes:
    """A PNG signature and IHDR header (what the server reads), then random bytes."""
    return b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR" + struct.pack(">II", width, height) + os.urandom(200)


def modern_client(server, jid, resource) -> Client:
    c = Client(server, f"{jid}/{resource}", USERS[jid])
    for p in ("xep_0115", "xep_0163", "xep_0060", "xep_0084"):
        c.register_plugin(p)
    c.avatars = EventLog("avatar metadata event")
    c.add_event_handler("avatar_metadata_publish", c.avatars.push)
    return c


def legacy_client(server, jid, resource) -> Client:
    c = Client(server, f"{jid}/{resource}", USERS[jid])
    for p in ("xep_0054", "xep_0153"):
        c.register_plugin(p)
    return c


def photo_in(presence) -> str | None:
    if not presence.match("presence/vcard_temp_update"):
        return None
    return presence["vcard_temp_update"]["photo"]


def test_xep0084_avatar_is_seen_by_a_xep0153_client(server):
    async def main():
        a = modern_client(server, A, "phone")
        b = legacy_client(server, B, "desk")
        try:
            await a.start()
            await b.start()
            await subscribe_both(a, b)
            info = await a.plugin["xep_0030"].get_info(jid=A, timeout=15)
            assert CONVERSION in info["disco_info"]["features"], info

            image = png(64, 48)
            digest = hashlib.sha1(image).hexdigest()
            await a.plugin["xep_0084"].publish_avatar(image, timeout=15)
            await a.plugin["xep_0084"].publish_avatar_metadata(
                items=[{"id": digest, "type": "image/png", "bytes": str(len(image)),
                        "width": "64", "height": "48"}],
                timeout=15,
            )

            vcard = await b.plugin["xep_0054"].get_vcard(A, timeout=15)
            assert vcard["vcard_temp"]["PHOTO"]["BINVAL"] == image
            assert vcard["vcard_temp"]["PHOTO"]["TYPE"] == "image/png"

            # Alice's client knows nothing of XEP-0153: the server adds the hash.
            a.send_presence(pshow="chat")
            p = await b.presences.wait_for(
                lambda p: str(p["from"]) == f"{A}/phone" and p["show"] == "chat",
                what="alice's presence after the avatar")
            assert photo_in(p) == digest, p
        finally:
            await a.stop()
            await b.stop()

    run(main())


def test_xep0153_avatar_reaches_a_xep0084_client(server):
    async def main():
        a = modern_client(server, A, "phone")
        b = legacy_client(server, B, "desk")
        try:
            await a.start()
            await b.start()
            await subscribe_both(a, b)
            # Alice's caps (with +notify) went out with her initial presence; a fresh one
            # after the subscription makes sure the server has resolved them.
            a.send_presence()
            await a.ping_server()

            image = png(32, 32)
            digest = hashlib.sha1(image).hexdigest()
            await b.plugin["xep_0153"].set_avatar(avatar=image, mtype="image/png", timeout=15)

            msg = await a.avatars.wait_for(lambda m: str(m["from"].bare) == B,
                                           what="bob's avatar metadata")
            item = msg["pubsub_event"]["items"]["item"]
            assert item["id"] == digest, item
            info = item["avatar_metadata"]["items"][0]
            assert info["id"] == digest, info
            assert int(info["bytes"]) == len(image) and info["type"] == "image/png", info
            assert (int(info["width"]), int(info["height"])) == (32, 32), info

            data = await a.plugin["xep_0084"].retrieve_avatar(B, digest, timeout=15)
            assert data["pubsub"]["items"]["item"]["avatar_data"]["value"] == image

            # Bob's own presence carries the same hash.
            b.send_presence(pshow="away")
            p = await a.presences.wait_for(
                lambda p: str(p["from"]) == f"{B}/desk" and p["show"] == "away",
                what="bob's presence after the avatar")
            assert photo_in(p) == digest, p
        finally:
            await a.stop()
            await b.stop()

    run(main())
