"""XEP-0045 group chat with slixmpp's own xep_0045 plugin: two users in a room, moderation
(kick, ban), and a persistent room with its affiliations across a server restart."""

from __future__ import annotations

import asyncio

import pytest
from slixmpp.exceptions import PresenceError

from conftest import USERS
from xmpp_client import Client, run

A = "alice@localhost"
B = "bob@localhost"
ROOM = "tea@conference.localhost"


def muc_client(server, jid, resource) -> Client:
    c = Client(server, f"{jid}/{resource}", USERS[jid])
    c.register_plugin("xep_0004")
    c.register_plugin("xep_0045")
    c.groupchat = []
    c.add_event_handler("groupchat_message", c.groupchat.append)
    c.muc_presences = []
    c.add_event_handler("groupchat_presence", c.muc_presences.append)
    return c


async def wait_for(pred, what: str, timeout: float = 15) -> None:
    for _ in range(int(timeout * 20)):
        if pred():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def create_room(alice: Client, **fields) -> None:
    """Join (the room is created locked, 201) and submit the configuration form."""
    muc = alice.plugin["xep_0045"]
    pres, _subject, _occupants, _history = await muc.join_muc_wait(ROOM, "alice", timeout=15)
    codes = {s for s in pres["muc"]["status_codes"]}
    assert 201 in codes and 110 in codes, pres
    form = await muc.get_room_config(ROOM, timeout=15)
    for var, value in fields.items():
        form.set_values({var: value})
    await muc.set_room_config(ROOM, form, timeout=15)


def test_two_users_chat_and_the_owner_moderates(server):
    async def main():
        alice, bob = muc_client(server, A, "desk"), muc_client(server, B, "phone")
        try:
            await alice.start()
            await bob.start()
            await create_room(alice)
            muc_a, muc_b = alice.plugin["xep_0045"], bob.plugin["xep_0045"]
            # Discovery through xep_0030: the server lists the service, the service the room.
            items = await alice.plugin["xep_0030"].get_items(jid="localhost", timeout=15)
            assert ("conference.localhost", None, "Chatrooms") in items["disco_items"]["items"]
            items = await alice.plugin["xep_0030"].get_items(jid="conference.localhost", timeout=15)
            assert any(i[0] == ROOM for i in items["disco_items"]["items"]), items

            alice.send_message(mto=ROOM, mbody="first", mtype="groupchat")
            await wait_for(lambda: any(m["body"] == "first" for m in alice.groupchat), "reflection")
            _pres, _subject, occupants, history = await muc_b.join_muc_wait(
                ROOM, "bob", maxstanzas=5, timeout=15)
            assert [m["body"] for m in history] == ["first"], history
            assert any(p["from"].resource == "alice" for p in occupants), occupants
            assert set(muc_b.get_roster(ROOM)) >= {"alice", "bob"}

            bob.send_message(mto=ROOM, mbody="Hello, room!", mtype="groupchat")
            for c in (alice, bob):
                await wait_for(lambda c=c: any(m["body"] == "Hello, room!" for m in c.groupchat),
                               f"the message at {c.boundjid}")
            got = [next(m for m in c.groupchat if m["body"] == "Hello, room!") for c in (alice, bob)]
            assert all(str(m["from"]) == f"{ROOM}/bob" for m in got), got

            # Kick: bob hears 307 and is out.
            await muc_a.set_role(ROOM, "bob", "none", timeout=15)
            await wait_for(lambda: any(p["type"] == "unavailable" and 307 in p["muc"]["status_codes"]
                                       for p in bob.muc_presences), "the kick at bob")
            # Ban by JID: bob may not come back.
            await muc_a.set_affiliation(ROOM, "outcast", jid=B, timeout=15)
            with pytest.raises(PresenceError) as refused:
                await muc_b.join_muc_wait(ROOM, "bob", timeout=15)
            assert refused.value.condition == "forbidden"
            outcasts = await muc_a.get_affiliation_list(ROOM, "outcast", timeout=15)
            assert [str(j) for j in outcasts] == [B], outcasts
        finally:
            await alice.stop()
            await bob.stop()

    run(main())


def test_a_persistent_room_survives_a_restart(server):
    async def main():
        alice = muc_client(server, A, "desk")
        try:
            await alice.start()
            await create_room(alice, **{
                "muc#roomconfig_persistentroom": True,
                "muc#roomconfig_membersonly": True,
                "muc#roomconfig_roomname": "Tea Room",
            })
            await alice.plugin["xep_0045"].set_affiliation(ROOM, "member", jid=B, timeout=15)
        finally:
            await alice.stop()
        server.stop()
        server.start()
        alice, bob = muc_client(server, A, "desk"), muc_client(server, B, "phone")
        try:
            await alice.start()
            await bob.start()
            members = await alice.plugin["xep_0045"].get_affiliation_list(ROOM, "member", timeout=15)
            assert [str(j) for j in members] == [B], members
            pres, *_ = await bob.plugin["xep_0045"].join_muc_wait(ROOM, "bob", timeout=15)
            assert pres["muc"]["affiliation"] == "member", pres
            info = await bob.plugin["xep_0030"].get_info(jid=ROOM, timeout=15)
            features = info["disco_info"]["features"]
            assert "muc_persistent" in features and "muc_membersonly" in features, features
        finally:
            await alice.stop()
            await bob.stop()

    run(main())
