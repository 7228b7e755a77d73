"""Federation between Franca and Prosody (issue 6): `franca.test` (Franca, s2s on 127.0.0.1)
and `prosody.test` (Debian's Prosody 0.12, s2s on 127.0.0.2), with static routes both ways
(Franca's `[s2s.routes]`, Prosody's test plugin, see `prosody_server.py`).

Every test runs with both certificate setups of `certs.py`:

- `dialback`: each server has a self-signed certificate the other does not trust, so they
  authenticate each other with XEP-0220 dialback;
- `external`: a test CA both trust signs serverAuth-only leaves, both servers require valid
  certificates (`require_valid_certs`, `s2s_secure_auth`), and SASL EXTERNAL is used.

The tests: the RFC 6121 subscription handshake started from each side, presence and chat both
ways, disco#info of the remote server, a Franca user in a Prosody room and a Prosody user in
a Franca room. Which authentication was used is read from Prosody's debug log, which records
each s2s negotiation step. `test_prosody_harness_federates_with_itself` checks the harness
alone (two Prosodies, same certificates and routes), so a failure there is not Franca's.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil

import pytest

import certs
from franca_server import FrancaServer, franca_bin, toml_str
from prosody_server import PROSODY, ProsodyServer
from xmpp_client import Client, body_is, is_presence, run, wait_until

FRANCA = "franca.test"
PROSODY_DOMAIN = "prosody.test"
ALICE = f"alice@{FRANCA}"
BOB = f"bob@{PROSODY_DOMAIN}"
PASSWORDS = {ALICE: "alice-secret-1", BOB: "bob-secret-2"}
SETUPS = ["dialback", "external"]
# Federation connects, authenticates (dialback dials back) and only then delivers.
WAIT = 30.0

pytestmark = pytest.mark.skipif(not os.access(PROSODY, os.X_OK), reason=f"Prosody not installed at {PROSODY}")


class FedClient(Client):
    """An interop client of either server; pings its own domain (the base class pings
    `localhost`), and with `mech` for Prosody, which offers no SCRAM-SHA-256 in 0.12."""

    async def ping_server(self, timeout: float = WAIT) -> None:
        await self.plugin["xep_0199"].send_ping(self.boundjid.domain, timeout=timeout)


class Federation:
    def __init__(self, tmp: pathlib.Path, setup: str, franca_s2s: str = ""):
        """franca_s2s: more lines for Franca's `[s2s]` table (policy)."""
        self.setup = setup
        if setup == "external":
            ca = certs.TestCA(tmp / "ca")
            franca_cert, prosody_cert = ca.issue(FRANCA), ca.issue(PROSODY_DOMAIN)
            trust = ca.cert
        else:
            franca_cert = certs.self_signed(tmp / "certs", FRANCA)
            prosody_cert = certs.self_signed(tmp / "certs", PROSODY_DOMAIN)
            trust = None
        self.prosody = ProsodyServer(tmp / "prosody", domain=PROSODY_DOMAIN, cert=prosody_cert, trust=trust,
                                     secure_auth=setup == "external")
        self.franca = FrancaServer(tmp / "franca", domain=FRANCA, s2s=True)
        # The chain goes where the interop clients look for the certificate they trust
        # (data_dir/cert.pem): the leaf and, in the CA setup, the CA.
        self.franca.data_dir.mkdir(parents=True, exist_ok=True)
        cert, key = self.franca.data_dir / "cert.pem", self.franca.data_dir / "key.pem"
        shutil.copy(franca_cert.cert, cert)
        shutil.copy(franca_cert.key, key)
        os.chmod(key, 0o600)
        s2s = ["system_roots = false", f"require_valid_certs = {'true' if setup == 'external' else 'false'}"]
        if trust is not None:
            s2s.append(f"ca_file = {toml_str(str(trust))}")
        if franca_s2s:
            s2s.append(franca_s2s)
        route = toml_str(self.prosody.s2s_route)
        self.franca.extra = "\n".join([
            "[tls]", f"cert = {toml_str(str(cert))}", f"key = {toml_str(str(key))}", "",
            "[s2s]", *s2s, "",
            "[s2s.routes]", f"{toml_str(PROSODY_DOMAIN)} = {route}",
            f"{toml_str(self.prosody.muc_domain)} = {route}", "",
        ])
        self.franca.write_config()
        for domain in (FRANCA, f"conference.{FRANCA}"):
            self.prosody.add_route(domain, "127.0.0.1", self.franca.s2s_port)
        self.franca.add_user(ALICE, PASSWORDS[ALICE])
        self.prosody.check_config()
        self.prosody.add_user(BOB, PASSWORDS[BOB])

    def start(self) -> None:
        self.prosody.start()
        self.franca.start()

    def stop(self) -> tuple:
        return self.franca.stop(), self.prosody.stop()

    def client(self, jid: str, resource: str, *, muc: bool = False) -> FedClient:
        if jid.endswith("@" + FRANCA):
            c = FedClient(self.franca, f"{jid}/{resource}", PASSWORDS[jid])
        else:
            c = FedClient(self.prosody, f"{jid}/{resource}", PASSWORDS[jid], mech="SCRAM-SHA-1")
        if muc:
            c.register_plugin("xep_0004")
            c.register_plugin("xep_0045")
            c.groupchat = []
            c.add_event_handler("groupchat_message", c.groupchat.append)
        return c

    def assert_authentication(self) -> None:
        """Both directions were authenticated the way the setup intends: Prosody's debug log
        shows each negotiation step, Franca's log names the mechanism per direction."""
        franca_log = re.sub(r"\x1b\[[0-9;]*m", "", self.franca.log_text())
        mech = "SASL EXTERNAL" if self.setup == "external" else "dialback"
        for direction in ("inbound", "outbound"):
            assert f"s2s {direction} authenticated ({mech})" in franca_log, franca_log[-8000:]
        p = self.prosody
        if self.setup == "external":
            # Franca → Prosody: Prosody accepted Franca's certificate for EXTERNAL.
            assert p.log_has(rf"Accepting SASL EXTERNAL identity from {FRANCA}\b"), p.log_text()[-8000:]
            # Prosody → Franca: Franca offered EXTERNAL and took Prosody's certificate.
            assert p.log_has(rf"SASL EXTERNAL with {FRANCA} succeeded"), p.log_text()[-8000:]
            assert not p.log_has(r"verified dialback key|asking \S+ if key"), "dialback was used"
        else:
            # Franca → Prosody: Prosody asked Franca (the authoritative server) about the key.
            assert p.log_has(rf"Received\[s2sin_unauthed\]: <result [^>]*from='{FRANCA}'"), p.log_text()[-8000:]
            assert p.log_has(rf"Incoming s2s connection {FRANCA}->{PROSODY_DOMAIN} complete"), p.log_text()[-8000:]
            # Prosody → Franca: Franca dialled back and Prosody confirmed its own key.
            assert p.log_has(r"verified dialback key\.\.\. it is valid"), p.log_text()[-8000:]
            assert p.log_has(rf"Outgoing s2s connection {PROSODY_DOMAIN}->{FRANCA} complete"), p.log_text()[-8000:]
            assert not p.log_has(r"Accepting SASL EXTERNAL identity"), "EXTERNAL was used"


@pytest.fixture(params=SETUPS)
def fed(request, tmp_path):
    if not os.access(franca_bin(), os.X_OK):
        pytest.fail(f"franca binary not found at {franca_bin()} (build it or set FRANCA_BIN)")
    f = Federation(tmp_path, request.param)
    try:
        f.start()
    except Exception:
        f.stop()
        raise
    yield f
    rcs = f.stop()
    failed = any(getattr(request.node, "rep_" + w, None) is not None and getattr(request.node, "rep_" + w).failed
                 for w in ("setup", "call"))
    if failed:
        print(f"\n----- franca log (exit {rcs[0]}) -----\n{f.franca.log_text()[-20000:]}")
        print(f"\n----- prosody log (exit {rcs[1]}) -----\n{f.prosody.log_text()[-20000:]}")


async def stop_all(*clients: Client) -> None:
    for c in clients:
        await c.stop()


async def subscribe(a: Client, b: Client) -> None:
    """a asks for b's presence and b approves: RFC 6121 §3.1 across the two servers."""
    aj, bj = a.boundjid.bare, b.boundjid.bare
    a.send_presence(pto=bj, ptype="subscribe")
    await b.presences.wait_for(is_presence("subscribe", aj), timeout=WAIT, what=f"subscribe from {aj} at {bj}")
    b.send_presence(pto=aj, ptype="subscribed")
    await a.presences.wait_for(is_presence("subscribed", bj), timeout=WAIT, what=f"subscribed from {bj} at {aj}")


def status_from(frm: str, status: str):
    def pred(p) -> bool:
        return p["type"] == "available" and p["from"].bare == frm and p["status"] == status
    return pred


def test_prosody_harness_federates_with_itself(tmp_path):
    """Two Prosodies (127.0.0.2 and .3) with this harness's certificates and static routes:
    chat both ways, with dialback or with EXTERNAL. Franca is not involved."""
    for setup in SETUPS:
        d = tmp_path / setup
        if setup == "external":
            ca = certs.TestCA(d / "ca")
            c1, c2, trust = ca.issue("p1.test"), ca.issue("p2.test"), ca.cert
        else:
            c1, c2, trust = certs.self_signed(d / "c", "p1.test"), certs.self_signed(d / "c", "p2.test"), None
        secure = setup == "external"
        p1 = ProsodyServer(d / "p1", domain="p1.test", cert=c1, trust=trust, secure_auth=secure)
        p2 = ProsodyServer(d / "p2", domain="p2.test", cert=c2, trust=trust, secure_auth=secure,
                           s2s_address="127.0.0.3")
        p1.add_route("p2.test", p2.s2s_address, p2.s2s_port)
        p2.add_route("p1.test", p1.s2s_address, p1.s2s_port)
        p1.add_user("ann@p1.test", "ann-pw")
        p2.add_user("ben@p2.test", "ben-pw")

        async def main():
            a = FedClient(p1, "ann@p1.test/x", "ann-pw", mech="SCRAM-SHA-1")
            b = FedClient(p2, "ben@p2.test/y", "ben-pw", mech="SCRAM-SHA-1")
            try:
                await a.start()
                await b.start()
                a.send_message(mto="ben@p2.test/y", mbody="over", mtype="chat")
                await b.messages.wait_for(body_is("over", "ann@p1.test"), timeout=WAIT)
                b.send_message(mto="ann@p1.test/x", mbody="out", mtype="chat")
                await a.messages.wait_for(body_is("out", "ben@p2.test"), timeout=WAIT)
            finally:
                await stop_all(a, b)

        p1.start()
        try:
            p2.start()
            run(main())
            if secure:
                assert p1.log_has(r"Accepting SASL EXTERNAL identity from p2\.test"), p1.log_text()[-8000:]
                assert p2.log_has(r"Accepting SASL EXTERNAL identity from p1\.test"), p2.log_text()[-8000:]
            else:
                assert p1.log_has(r"verified dialback key\.\.\. it is valid"), p1.log_text()[-8000:]
                assert p2.log_has(r"verified dialback key\.\.\. it is valid"), p2.log_text()[-8000:]
        finally:
            p2.stop()
            p1.stop()


def test_subscriptions_presence_and_chat_both_ways(fed):
    async def main():
        alice, bob = fed.client(ALICE, "desk"), fed.client(BOB, "phone")
        try:
            await alice.start()
            await bob.start()
            # The handshake started on the Franca side, then on the Prosody side.
            await subscribe(alice, bob)
            await subscribe(bob, alice)
            await wait_until(lambda: alice.client_roster[BOB]["subscription"] == "both", WAIT,
                             what=f"{BOB} in {ALICE}'s roster with subscription both")
            await wait_until(lambda: bob.client_roster[ALICE]["subscription"] == "both", WAIT,
                             what=f"{ALICE} in {BOB}'s roster with subscription both")
            assert (await alice.roster_items(timeout=WAIT))[BOB]["subscription"] == "both"
            assert (await bob.roster_items(timeout=WAIT))[ALICE]["subscription"] == "both"

            # Broadcast presence reaches the remote contact, each way.
            alice.send_presence(pstatus="from franca")
            await bob.presences.wait_for(status_from(ALICE, "from franca"), timeout=WAIT, what="alice's presence")
            bob.send_presence(pstatus="from prosody")
            await alice.presences.wait_for(status_from(BOB, "from prosody"), timeout=WAIT, what="bob's presence")

            # Chat both ways, to the full and to the bare JID.
            alice.send_message(mto=f"{BOB}/phone", mbody="Hello, Prosody!", mtype="chat")
            got = await bob.messages.wait_for(body_is("Hello, Prosody!"), timeout=WAIT)
            assert str(got["from"]) == f"{ALICE}/desk", got
            bob.send_message(mto=ALICE, mbody="Hello, Franca!", mtype="chat")
            got = await alice.messages.wait_for(body_is("Hello, Franca!"), timeout=WAIT)
            assert str(got["from"]) == f"{BOB}/phone", got

            # Going offline is seen on the other side.
            await bob.stop()
            await alice.presences.wait_for(is_presence("unavailable", BOB), timeout=WAIT, what="bob unavailable")
        finally:
            await stop_all(alice, bob)
        fed.assert_authentication()

    run(main(), timeout=170)


def test_disco_info_of_the_remote_server(fed):
    async def main():
        alice, bob = fed.client(ALICE, "desk"), fed.client(BOB, "phone")
        try:
            await alice.start(presence=False)
            await bob.start(presence=False)
            info = await alice.plugin["xep_0030"].get_info(jid=PROSODY_DOMAIN, timeout=WAIT)
            identities = {(i[0], i[1]) for i in info["disco_info"]["identities"]}
            assert ("server", "im") in identities, info
            assert "http://jabber.org/protocol/disco#info" in info["disco_info"]["features"], info
            info = await bob.plugin["xep_0030"].get_info(jid=FRANCA, timeout=WAIT)
            identities = {(i[0], i[1]) for i in info["disco_info"]["identities"]}
            assert ("server", "im") in identities, info
            assert "http://jabber.org/protocol/disco#info" in info["disco_info"]["features"], info
            # Each side lists its group chat service to the other.
            items = await bob.plugin["xep_0030"].get_items(jid=FRANCA, timeout=WAIT)
            assert any(i[0] == f"conference.{FRANCA}" for i in items["disco_items"]["items"]), items
        finally:
            await stop_all(alice, bob)

    run(main(), timeout=170)


async def wait_groupchat(c: Client, body: str, nick: str) -> None:
    await wait_until(lambda: any(m["body"] == body and m["from"].resource == nick for m in c.groupchat), WAIT,
                     what=f"groupchat {body!r} from {nick} at {c.boundjid}")


def test_a_franca_user_joins_a_prosody_room(fed):
    room = f"lounge@{fed.prosody.muc_domain}"

    async def main():
        bob, alice = fed.client(BOB, "phone", muc=True), fed.client(ALICE, "desk", muc=True)
        try:
            await bob.start()
            await alice.start()
            await bob.plugin["xep_0045"].join_muc_wait(room, "bob", timeout=WAIT)
            pres, _subject, occupants, _history = await alice.plugin["xep_0045"].join_muc_wait(
                room, "alice", timeout=WAIT)
            assert 110 in set(pres["muc"]["status_codes"]), pres
            assert any(p["from"].resource == "bob" for p in occupants), occupants
            bob.send_message(mto=room, mbody="welcome, franca", mtype="groupchat")
            await wait_groupchat(alice, "welcome, franca", "bob")
            alice.send_message(mto=room, mbody="thanks, prosody", mtype="groupchat")
            await wait_groupchat(bob, "thanks, prosody", "alice")
            await wait_groupchat(alice, "thanks, prosody", "alice")
        finally:
            await stop_all(alice, bob)

    run(main(), timeout=170)


def test_a_prosody_user_joins_a_franca_room(fed):
    room = f"tea@conference.{FRANCA}"

    async def main():
        alice, bob = fed.client(ALICE, "desk", muc=True), fed.client(BOB, "phone", muc=True)
        try:
            await alice.start()
            await bob.start()
            muc_a = alice.plugin["xep_0045"]
            pres, *_ = await muc_a.join_muc_wait(room, "alice", timeout=WAIT)
            if 201 in set(pres["muc"]["status_codes"]):
                # A new room is locked until its owner submits the configuration (XEP-0045 §10.1).
                form = await muc_a.get_room_config(room, timeout=WAIT)
                await muc_a.set_room_config(room, form, timeout=WAIT)
            pres, _subject, occupants, _history = await bob.plugin["xep_0045"].join_muc_wait(
                room, "bob", timeout=WAIT)
            assert 110 in set(pres["muc"]["status_codes"]), pres
            assert any(p["from"].resource == "alice" for p in occupants), occupants
            alice.send_message(mto=room, mbody="welcome, prosody", mtype="groupchat")
            await wait_groupchat(bob, "welcome, prosody", "alice")
            bob.send_message(mto=room, mbody="thanks, franca", mtype="groupchat")
            await wait_groupchat(alice, "thanks, franca", "bob")
            await wait_groupchat(bob, "thanks, franca", "bob")
        finally:
            await stop_all(alice, bob)

    run(main(), timeout=170)


NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


def error_condition(stanza) -> str | None:
    """The defined condition of an error stanza, read from the XML: slixmpp 1.17 knows only
    the RFC 3920 conditions, not RFC 6120's `policy-violation`."""
    for error in stanza.xml:
        if error.tag.endswith("}error"):
            for child in error:
                if child.tag.startswith("{" + NS_STANZAS + "}") and not child.tag.endswith("}text"):
                    return child.tag.split("}", 1)[1]
    return None


def test_a_policy_refusal_is_explained_on_both_sides(tmp_path):
    """Franca denies prosody.test (`[s2s] deny`): its own user's message bounces with
    `policy-violation` and the reason; Prosody's connection is refused at the stream header
    with the same reason, which Prosody passes on to its user in the bounce."""
    fed = Federation(tmp_path, "dialback", franca_s2s=f"deny = [{toml_str(PROSODY_DOMAIN)}]")
    fed.start()

    async def main():
        alice, bob = fed.client(ALICE, "desk"), fed.client(BOB, "phone")
        try:
            await alice.start()
            await bob.start()
            alice.send_message(mto=BOB, mbody="denied?", mtype="chat")
            err = await alice.errors.wait_for(lambda m: True, timeout=WAIT, what="the bounce at alice")
            assert error_condition(err) == "policy-violation", err
            assert PROSODY_DOMAIN in err["error"]["text"] and "denied" in err["error"]["text"], err
            bob.send_message(mto=ALICE, mbody="let me in", mtype="chat")
            err = await bob.errors.wait_for(lambda m: True, timeout=WAIT, what="the bounce at bob")
            # Prosody 0.12 reports a failed connection with its own condition and puts the
            # peer's stream error, with Franca's text, into the error text.
            assert "policy-violation" in err["error"]["text"], err
            assert "denied" in err["error"]["text"], err
            assert not alice.messages.find(body_is("let me in")), "delivered despite the policy"
        finally:
            await stop_all(alice, bob)

    try:
        run(main(), timeout=170)
    except BaseException:
        print(f"\n----- franca log -----\n{fed.franca.log_text()[-20000:]}")
        print(f"\n----- prosody log -----\n{fed.prosody.log_text()[-20000:]}")
        raise
    finally:
        fed.stop()
