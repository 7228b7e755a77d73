"""slixmpp clients for the interop tests.

The clients trust only the server's generated self-signed certificate (data_dir/cert.pem) and
check that it names `localhost`; verification is never turned off.

Waiting is always on a condition with a timeout: every stanza a client receives is recorded in
an EventLog, and tests wait for the first entry that matches a predicate.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
from typing import Any, Callable

import slixmpp
from slixmpp.util.sasl import client as sasl_client
from slixmpp.util.sasl.mechanisms import SCRAM

from franca_server import DOMAIN, FrancaServer

log = logging.getLogger("interop")

DEFAULT_TIMEOUT = 15.0


class EventLog:
    """Everything of one kind a client received, in order, for waiting on a predicate."""

    def __init__(self, name: str):
        self.name = name
        self.items: list[Any] = []
        self._changed = asyncio.Event()

    def push(self, item: Any) -> None:
        self.items.append(item)
        self._changed.set()

    def find(self, pred: Callable[[Any], bool]) -> Any | None:
        for item in self.items:
            if pred(item):
                return item
        return None

    async def wait_for(self, pred: Callable[[Any], bool], timeout: float = DEFAULT_TIMEOUT, what: str = "") -> Any:
        """The first recorded item (past or future) that satisfies pred; it is removed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for i, item in enumerate(self.items):
                if pred(item):
                    del self.items[i]
                    return item
            remaining = deadline - loop.time()
            if remaining <= 0:
                got = "\n".join(str(x) for x in self.items) or "(nothing)"
                raise AssertionError(f"timed out after {timeout}s waiting for {what or self.name}; got:\n{got}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass


async def wait_until(pred: Callable[[], bool], timeout: float = DEFAULT_TIMEOUT, what: str = "condition") -> None:
    """Poll a condition on client state (roster entries) until it holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


# --- SCRAM-*-PLUS with tls-server-end-point -----------------------------------------------------
#
# slixmpp's SCRAM-PLUS only knows tls-unique (TLS <= 1.2; rustls does not offer it) and
# tls-exporter (which Python's ssl module cannot compute). RFC 5929 tls-server-end-point needs
# only the server certificate, so the tests supply it: the binding data is computed here and the
# gs2 header names it; the SCRAM exchange itself is slixmpp's own code.

SIG_HASH = {
    # RFC 5929 §4.1: the certificate's signature hash; MD5 and SHA-1 become SHA-256.
    "1.2.840.113549.1.1.11": "sha256",  # sha256WithRSAEncryption
    "1.2.840.113549.1.1.12": "sha384",
    "1.2.840.113549.1.1.13": "sha512",
    "1.2.840.10045.4.3.2": "sha256",  # ecdsa-with-SHA256
    "1.2.840.10045.4.3.3": "sha384",
    "1.2.840.10045.4.3.4": "sha512",
}


def tls_server_end_point(der_cert: bytes) -> bytes:
    from pyasn1.codec.der import decoder
    from pyasn1_modules import rfc5280

    cert, _ = decoder.decode(der_cert, asn1Spec=rfc5280.Certificate())
    oid = str(cert["signatureAlgorithm"]["algorithm"])
    return hashlib.new(SIG_HASH.get(oid, "sha256"), der_cert).digest()


class EndPointBinding(bytes):
    """Channel-binding data marked as tls-server-end-point."""


class ScramEndPoint(SCRAM):
    def process_1(self, challenge):
        first = super().process_1(challenge)
        cb = self.credentials.get("channel_binding")
        if self.use_channel_binding and isinstance(cb, EndPointBinding):
            rest = self.gs2_header.split(b",", 1)[1]
            self.gs2_header = b"p=tls-server-end-point," + rest
            self.client_first_message = self.gs2_header + self.client_first_message_bare
            return self.client_first_message
        return first


for _h in ("SHA-1", "SHA-256", "SHA-512"):
    sasl_client.MECHANISMS[f"SCRAM-{_h}-PLUS"] = ScramEndPoint


# --- the client ---------------------------------------------------------------------------------


class Client(slixmpp.ClientXMPP):
    """A slixmpp client bound to one FrancaServer.

    mode: "starttls" (port c2s) or "tls" (direct TLS, XEP-0368, port c2s_tls).
    mech: the SASL mechanism to force.
    """

    def __init__(self, server: FrancaServer, jid: str, password: str, *, mode: str = "starttls",
                 mech: str = "SCRAM-SHA-256", bad_channel_binding: bool = False):
        super().__init__(jid, password, sasl_mech=mech)
        self.franca = server
        self.mode = mode
        ctx = ssl.create_default_context(cafile=server.cafile)
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
        self.ssl_context = ctx
        self.enable_plaintext = False
        self.enable_starttls = mode == "starttls"
        self.enable_direct_tls = mode == "tls"
        # Tests drive the subscription handshake by hand.
        self.auto_authorize = None
        self.auto_subscribe = False
        for p in ("xep_0030", "xep_0199", "xep_0203", "xep_0280", "xep_0191"):
            self.register_plugin(p)
        if mech.endswith("-PLUS"):
            mechs = self.plugin["feature_mechanisms"]
            default = mechs.sasl_callback

            def creds(required, optional):
                out = default(required, optional)
                ssl_obj = self.socket
                if "channel_binding" in set(required) | set(optional) and isinstance(ssl_obj, (ssl.SSLObject, ssl.SSLSocket)):
                    data = tls_server_end_point(ssl_obj.getpeercert(True))
                    if bad_channel_binding:  # a different certificate's hash, as a MITM would have
                        data = bytes(b ^ 0x5A for b in data)
                    out["channel_binding"] = EndPointBinding(data)
                return out

            mechs.sasl_callback = creds

        self.messages = EventLog("message")
        self.errors = EventLog("message error")
        self.presences = EventLog("presence")
        self.carbons_received = EventLog("carbon received")
        self.carbons_sent = EventLog("carbon sent")
        self.stream_errors = EventLog("stream error")
        self.auth_failures = EventLog("SASL failure")
        self.connection_failures = EventLog("connection failure")
        self.session = asyncio.get_event_loop().create_future()
        self.got_disconnected = asyncio.Event()
        self.add_event_handler("message", self.messages.push)
        self.add_event_handler("message_error", self.errors.push)
        self.add_event_handler("presence", self.presences.push)
        self.add_event_handler("carbon_received", self.carbons_received.push)
        self.add_event_handler("carbon_sent", self.carbons_sent.push)
        self.add_event_handler("stream_error", self.stream_errors.push)
        self.add_event_handler("failed_auth", self.auth_failures.push)
        self.add_event_handler("connection_failed", self.connection_failures.push)
        self.add_event_handler("session_start", self._on_session_start)
        self.add_event_handler("failed_all_auth", self._on_failed_all_auth)
        self.add_event_handler("disconnected", lambda _e: self.got_disconnected.set())

    def _on_session_start(self, _event) -> None:
        if not self.session.done():
            self.session.set_result(True)

    def _on_failed_all_auth(self, _event=None) -> None:
        if not self.session.done():
            self.session.set_exception(AuthFailed(self.boundjid.bare))

    @property
    def port(self) -> int:
        return self.franca.c2s_port if self.mode == "starttls" else self.franca.c2s_tls_port

    async def start(self, *, presence: bool = True, roster: bool = True, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Connect, authenticate, bind; then fetch the roster and send initial presence."""
        self.connect("127.0.0.1", self.port)
        try:
            await asyncio.wait_for(asyncio.shield(self.session), timeout)
        except asyncio.TimeoutError:
            self.cancel_connection_attempt()
            raise AssertionError(f"{self.boundjid}: no session within {timeout}s (mode {self.mode})") from None
        if roster:
            await self.get_roster(timeout=timeout)
        if presence:
            self.send_presence()
            # Round trip: the server has processed the initial presence (so this session is
            # available for messages to the bare JID) before the test goes on.
            await self.ping_server(timeout=timeout)

    def sasl_mechanism(self) -> str | None:
        mech = self.plugin["feature_mechanisms"].mech
        return mech.name if mech is not None else None

    def tls_version(self) -> str | None:
        s = self.socket
        return s.version() if isinstance(s, (ssl.SSLObject, ssl.SSLSocket)) else None

    async def ping_server(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """A round trip through this session: everything sent before has been processed."""
        await self.plugin["xep_0199"].send_ping(DOMAIN, timeout=timeout)

    async def roster_items(self, timeout: float = DEFAULT_TIMEOUT) -> dict[str, dict]:
        """A fresh roster get from the server: {bare jid: {subscription, name, groups, ask}}."""
        iq = self.make_iq_get(queryxmlns="jabber:iq:roster")
        result = await iq.send(timeout=timeout)
        return {str(k): dict(v) for k, v in result["roster"]["items"].items()}

    async def stop(self) -> None:
        self.cancel_connection_attempt()
        if self.transport is not None:
            try:
                await asyncio.wait_for(self.disconnect(wait=2.0), 5)
            except (asyncio.TimeoutError, Exception):  # noqa: BLE001 - best effort at teardown
                self.abort()


class AuthFailed(Exception):
    pass


def body_is(text: str, frm: str | None = None) -> Callable[[Any], bool]:
    def pred(msg) -> bool:
        if msg["body"] != text:
            return False
        return frm is None or str(msg["from"].bare) == frm or str(msg["from"]) == frm
    return pred


def is_presence(ptype: str, frm: str):
    def pred(p) -> bool:
        return p["type"] == ptype and (p["from"].bare == frm or str(p["from"]) == frm)
    return pred


async def subscribe_both(a: Client, b: Client) -> None:
    """The RFC 6121 §3 handshake in both directions, driven by hand."""
    aj, bj = a.boundjid.bare, b.boundjid.bare
    a.send_presence(pto=bj, ptype="subscribe")
    await b.presences.wait_for(is_presence("subscribe", aj), what=f"subscribe from {aj}")
    b.send_presence(pto=aj, ptype="subscribed")
    await a.presences.wait_for(is_presence("subscribed", bj), what=f"subscribed from {bj}")
    b.send_presence(pto=aj, ptype="subscribe")
    await a.presences.wait_for(is_presence("subscribe", bj), what=f"subscribe from {bj}")
    a.send_presence(pto=bj, ptype="subscribed")
    await b.presences.wait_for(is_presence("subscribed", aj), what=f"subscribed from {aj}")
    # Roster pushes reach both clients.
    await wait_until(lambda: a.client_roster[bj]["subscription"] == "both",
                     what=f"roster push: {bj} in {aj}'s roster with subscription both")
    await wait_until(lambda: b.client_roster[aj]["subscription"] == "both",
                     what=f"roster push: {aj} in {bj}'s roster with subscription both")


def run(coro, timeout: float = 120):
    """Run one test's coroutine on a fresh event loop, with an overall limit."""
    async def main():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(main())
