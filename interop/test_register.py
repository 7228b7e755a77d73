"""XEP-0077 in-band registration with slixmpp's xep_0077 plugin: off by default, and when enabled
a new account is created before authentication and can then log in."""

from __future__ import annotations

import asyncio

from xmpp_client import Client, run

NEW = "dave@localhost"
PASSWORD = "dave-secret-4"


class Registrant(Client):
    """Registers in-band when the server offers it, then logs in with the new account."""

    def __init__(self, server, jid, password):
        super().__init__(server, jid, password)
        self.register_plugin("xep_0077")
        self.plugin["xep_0077"].force_registration = True
        self.registered = asyncio.get_event_loop().create_future()
        self.add_event_handler("register", self._register)

    async def _register(self, _form):
        iq = self.Iq()
        iq["type"] = "set"
        iq["register"]["username"] = self.boundjid.user
        iq["register"]["password"] = self.password
        try:
            await iq.send(timeout=10)
            if not self.registered.done():
                self.registered.set_result(True)
        except Exception as e:  # the IQ error, to assert on
            if not self.registered.done():
                self.registered.set_result(e)


def test_registration_is_off_by_default(server):
    async def main():
        c = Registrant(server, NEW + "/r", PASSWORD)
        try:
            await c.start(presence=False, roster=False)
        except Exception:
            pass
        finally:
            await c.stop()
        # The account was never created, so it cannot log in.
        assert NEW not in server.cli("user", "list").stdout

    run(main())


def test_register_then_log_in(make_server):
    server = make_server(extra="[registration]\nenabled = true\nmax_per_ip = 5\n")

    async def main():
        c = Registrant(server, NEW + "/r", PASSWORD)
        try:
            await c.start(presence=False, roster=False)
            assert await asyncio.wait_for(c.registered, 10) is True
        finally:
            await c.stop()
        assert NEW in server.cli("user", "list").stdout
        again = Client(server, NEW + "/again", PASSWORD)
        try:
            await again.start()
            await again.ping_server()
        finally:
            await again.stop()
        # An existing name is refused with <conflict/>.
        taken = Registrant(server, "alice@localhost/r", "whatever")
        taken.password = "whatever"
        try:
            await taken.start(presence=False, roster=False)
        except Exception:
            pass
        finally:
            await taken.stop()
        assert taken.registered.done() and taken.registered.result() is not True
    run(main())
