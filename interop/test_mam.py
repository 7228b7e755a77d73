"""XEP-0313 message archive with slixmpp's own xep_0313 and xep_0059 plugins: Bob pages through
his archive forwards (RSM `after`) and backwards (an empty `<before/>`, then `before`), and
gets every message Alice sent once, in order, with the archive ids equal to the XEP-0359
stanza-ids on the messages he received; the `with` filter and the form discovery work too."""

from __future__ import annotations

from conftest import USERS
from xmpp_client import Client, body_is, run

A = "alice@localhost"
B = "bob@localhost"
N = 12


def mam_client(server, jid, resource) -> Client:
    c = Client(server, f"{jid}/{resource}", USERS[jid])
    c.register_plugin("xep_0059")
    c.register_plugin("xep_0313")
    c.register_plugin("xep_0359")
    return c


def test_paging_both_ways_with_stanza_ids(server):
    async def main():
        a = mam_client(server, A, "desk")
        b = mam_client(server, B, "phone")
        try:
            await a.start()
            await b.start()
            seen = {}
            for i in range(N):
                a.send_message(mto=B, mbody=f"m{i}", mtype="chat")
                msg = await b.messages.wait_for(body_is(f"m{i}"), what=f"message {i}")
                sid = msg["stanza_id"]
                assert sid["by"] == B, f"stanza-id by {sid['by']!r}"
                seen[f"m{i}"] = sid["id"]
            expected = [f"m{i}" for i in range(N)]

            forwards = []
            async for m in b.plugin["xep_0313"].iterate(rsm={"max": 5}):
                result = m["mam_result"]
                forwarded = result["forwarded"]["stanza"]
                forwards.append((forwarded["body"], result["id"]))
            assert [body for body, _ in forwards] == expected
            assert all(seen[body] == rid for body, rid in forwards), (seen, forwards)

            backwards = []
            async for m in b.plugin["xep_0313"].iterate(rsm={"max": 5}, reverse=True):
                backwards.append(m["mam_result"]["forwarded"]["stanza"]["body"])
            assert backwards == list(reversed(expected))

            # Alice's archive has her side of the same conversation, filtered by partner.
            mine = []
            async for m in a.plugin["xep_0313"].iterate(with_jid=B, rsm={"max": 7}):
                mine.append(m["mam_result"]["forwarded"]["stanza"]["body"])
            assert mine == expected
            nothing = []
            async for m in a.plugin["xep_0313"].iterate(with_jid="nobody@localhost"):
                nothing.append(m)
            assert nothing == []

            form = await a.plugin["xep_0313"].get_fields()
            assert {"FORM_TYPE", "with", "start", "end"} <= set(form.get_fields().keys()), form
        finally:
            await a.stop()
            await b.stop()

    run(main())
