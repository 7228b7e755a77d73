"""Authentication with slixmpp: SCRAM over STARTTLS and direct TLS, a -PLUS login, a bad password."""

from __future__ import annotations

import ssl

import pytest

from conftest import USERS
from xmpp_client import AuthFailed, Client, run

ALICE = "alice@localhost"


def test_scram_sha256_over_starttls(server):
    async def main():
        c = Client(server, ALICE + "/starttls", USERS[ALICE], mode="starttls", mech="SCRAM-SHA-256")
        try:
            await c.start()
            assert c.sasl_mechanism() == "SCRAM-SHA-256"
            assert c.tls_version() in ("TLSv1.2", "TLSv1.3"), c.tls_version()
            assert str(c.boundjid) == ALICE + "/starttls"
            await c.ping_server()
        finally:
            await c.stop()

    run(main())


def test_scram_sha256_over_direct_tls(server):
    async def main():
        c = Client(server, ALICE + "/direct", USERS[ALICE], mode="tls", mech="SCRAM-SHA-256")
        try:
            await c.start()
            assert c.sasl_mechanism() == "SCRAM-SHA-256"
            assert c.tls_version() in ("TLSv1.2", "TLSv1.3"), c.tls_version()
            assert c.boundjid.bare == ALICE
            await c.ping_server()
        finally:
            await c.stop()

    run(main())


@pytest.mark.parametrize("mode", ["starttls", "tls"])
def test_scram_sha256_plus_tls_server_end_point(server, mode):
    """SCRAM-SHA-256-PLUS with tls-server-end-point channel binding (RFC 5929)."""

    async def main():
        c = Client(server, ALICE + "/plus", USERS[ALICE], mode=mode, mech="SCRAM-SHA-256-PLUS")
        try:
            await c.start()
            assert c.sasl_mechanism() == "SCRAM-SHA-256-PLUS"
            await c.ping_server()
        finally:
            await c.stop()

    run(main())


def test_scram_plus_with_wrong_channel_binding_is_refused(server):
    """The server really checks the binding: a mismatching certificate hash fails."""

    async def main():
        c = Client(server, ALICE + "/mitm", USERS[ALICE], mech="SCRAM-SHA-256-PLUS", bad_channel_binding=True)
        try:
            with pytest.raises(AuthFailed):
                await c.start()
            failure = await c.auth_failures.wait_for(lambda f: True, what="a SASL <failure/>")
            assert failure["condition"] in ("not-authorized", "malformed-request"), failure
        finally:
            await c.stop()

    run(main())


def test_scram_sha1_and_sha512(server):
    async def main():
        for mech in ("SCRAM-SHA-1", "SCRAM-SHA-512"):
            c = Client(server, ALICE + "/" + mech, USERS[ALICE], mech=mech)
            try:
                await c.start(presence=False, roster=False)
                assert c.sasl_mechanism() == mech
            finally:
                await c.stop()

    run(main())


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "PLAIN"])
def test_bad_password_is_refused(server, mech):
    async def main():
        c = Client(server, ALICE + "/bad", "not-the-password", mech=mech)
        try:
            with pytest.raises(AuthFailed):
                await c.start()
            failure = await c.auth_failures.wait_for(lambda f: True, what="a SASL <failure/>")
            assert failure["condition"] == "not-authorized", failure
        finally:
            await c.stop()
        # The right password still works afterwards (one failure is far from the lock-out).
        ok = Client(server, ALICE + "/good", USERS[ALICE])
        try:
            await ok.start()
        finally:
            await ok.stop()

    run(main())


def test_unknown_user_is_refused(server):
    async def main():
        c = Client(server, "nobody@localhost/x", "whatever")
        try:
            with pytest.raises(AuthFailed):
                await c.start()
            failure = await c.auth_failures.wait_for(lambda f: True, what="a SASL <failure/>")
            assert failure["condition"] == "not-authorized", failure
        finally:
            await c.stop()

    run(main())


def test_client_verifies_the_certificate_name(server):
    """Sanity check of the test set-up itself: verification is on, so a wrong name fails."""

    async def main():
        c = Client(server, ALICE + "/x", USERS[ALICE], mode="tls")
        c.default_domain = "not-localhost.example"  # the name the certificate is checked against
        try:
            with pytest.raises(AssertionError):
                await c.start(timeout=5)
            err = await c.connection_failures.wait_for(lambda e: isinstance(e, ssl.SSLCertVerificationError),
                                                       what="a certificate verification failure")
            assert "not-localhost.example" in str(err) or "match" in str(err), err
        finally:
            await c.stop()

    run(main())
