"""A room's XEP-0313 archive with slixmpp's own xep_0313, xep_0059 and xep_0359 plugins: the
groupchat messages carry the room's stanza-id, and Bob pages through the room's archive
forwards and backwards, finding every message once, in order, under the ids he saw; then
XEP-0045 §7.10 registration (jabber:iq:register with the muc#register form, through
slixmpp's xep_0004 forms): a registered nickname is refused to anyone else (conflict)."""

from __future__ import annotations

import pytest
from slixmpp.exceptions import IqError, PresenceError

from conftest import USERS
from test_muc import create_room, wait_for
from xmpp_client import Client, run

A = "alice@localhost"
B = "bob@localhost"
C = "carol@localhost"
ROOM = "tea@conference.localhost"
N = 7


def client(server, jid, resource) -> Client:
    c = Client(server, f"{jid}/{resource}", USERS[jid])
    for p in ("xep_0004", "xep_0045", "xep_0059", "xep_0313", "xep_0359"):
        c.register_plugin(p)
    c.groupchat = []
    c.add_event_handler("groupchat_message", c.groupchat.append)
    return c


def test_paging_a_rooms_archive_with_the_rooms_stanza_ids(server):
    async def main():
        alice, bob = client(server, A, "desk"), client(server, B, "phone")
        try:
            await alice.start()
            await bob.start()
            await create_room(alice, **{"muc#roomconfig_persistentroom": True})
            info = await bob.plugin["xep_0030"].get_info(jid=ROOM, timeout=15)
            assert "urn:xmpp:mam:2" in info["disco_info"]["features"], info
            await bob.plugin["xep_0045"].join_muc_wait(ROOM, "bob", timeout=15)

            seen = {}
            for i in range(N):
                body = f"cup {i}"
                bob.send_message(mto=ROOM, mbody=body, mtype="groupchat")
                for c in (alice, bob):
                    await wait_for(lambda c=c: any(m["body"] == body for m in c.groupchat),
                                   f"{body} at {c.boundjid}")
                at_alice = next(m for m in alice.groupchat if m["body"] == body)
                at_bob = next(m for m in bob.groupchat if m["body"] == body)
                sid = at_bob["stanza_id"]
                assert sid["by"] == ROOM, f"stanza-id by {sid['by']!r}"
                assert at_alice["stanza_id"]["id"] == sid["id"]
                seen[body] = sid["id"]
            expected = [f"cup {i}" for i in range(N)]

            forwards = []
            async for m in bob.plugin["xep_0313"].iterate(jid=ROOM, rsm={"max": 3}):
                result = m["mam_result"]
                stanza = result["forwarded"]["stanza"]
                assert str(stanza["from"]) == f"{ROOM}/bob", stanza
                forwards.append((stanza["body"], result["id"]))
            assert [body for body, _ in forwards] == expected
            assert all(seen[body] == rid for body, rid in forwards), (seen, forwards)

            backwards = []
            async for m in bob.plugin["xep_0313"].iterate(jid=ROOM, rsm={"max": 4}, reverse=True):
                backwards.append(m["mam_result"]["forwarded"]["stanza"]["body"])
            assert backwards == list(reversed(expected))
        finally:
            await alice.stop()
            await bob.stop()

    run(main())


async def register(c: Client, nick: str):
    """Fetch the room's registration form, fill in the nickname and submit it."""
    iq = c.make_iq_get(queryxmlns="jabber:iq:register", ito=ROOM)
    answer = await iq.send(timeout=15)
    form = answer["register"]["form"]
    assert "muc#register_roomnick" in form.get_fields(), answer
    filled = c.plugin["xep_0004"].make_form(ftype="submit")
    filled.add_field(var="FORM_TYPE", ftype="hidden",
                     value="http://jabber.org/protocol/muc#register")
    filled.add_field(var="muc#register_roomnick", value=nick)
    submit = c.make_iq_set(ito=ROOM)
    submit["register"].append(filled)
    return await submit.send(timeout=15)


def test_a_registered_nickname_is_reserved(server):
    async def main():
        alice, bob, carol = (client(server, A, "desk"), client(server, B, "phone"),
                             client(server, C, "laptop"))
        for c in (alice, bob, carol):
            c.register_plugin("xep_0077")
        try:
            for c in (alice, bob, carol):
                await c.start()
            await create_room(alice)
            await register(carol, "Carol")
            members = await alice.plugin["xep_0045"].get_affiliation_list(ROOM, "member", timeout=15)
            assert [str(j) for j in members] == [C], members
            with pytest.raises(PresenceError) as refused:
                await bob.plugin["xep_0045"].join_muc_wait(ROOM, "carol", timeout=15)
            assert refused.value.condition == "conflict"
            with pytest.raises(IqError) as refused:
                await register(bob, "CAROL")
            assert refused.value.condition == "conflict"
            pres, *_ = await carol.plugin["xep_0045"].join_muc_wait(ROOM, "Carol", timeout=15)
            assert pres["muc"]["affiliation"] == "member", pres
        finally:
            for c in (alice, bob, carol):
                await c.stop()

    run(main())
