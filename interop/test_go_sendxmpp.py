"""go-sendxmpp (Debian's package) sends a message that a slixmpp client receives."""

from __future__ import annotations

import asyncio
import os
import shutil

import pytest

from conftest import USERS
from xmpp_client import Client, run

A = "alice@localhost"
B = "bob@localhost"


@pytest.mark.parametrize("direct_tls", [False, True], ids=["starttls", "direct-tls"])
def test_go_sendxmpp_message_reaches_slixmpp(server, tmp_path, direct_tls):
    exe = shutil.which("go-sendxmpp")
    assert exe, "go-sendxmpp is not installed (scripts/test installs Debian's go-sendxmpp)"
    text = "hello from go-sendxmpp " + ("direct" if direct_tls else "starttls")

    async def main():
        b = Client(server, B + "/gs", USERS[B])
        try:
            await b.start()
            port = server.c2s_tls_port if direct_tls else server.c2s_port
            # Go's crypto/x509 reads SSL_CERT_FILE: the generated certificate is the only trusted
            # root, and the name checked is localhost. No --no-tls-verify.
            env = {**os.environ, "SSL_CERT_FILE": server.cafile, "SSL_CERT_DIR": str(tmp_path),
                   "HOME": str(tmp_path)}
            args = [exe, "--username", A, "--password", USERS[A], "--jserver", f"localhost:{port}",
                    "--timeout", "20"]
            if direct_tls:
                args.append("--tls")
            args.append(B)
            proc = await asyncio.create_subprocess_exec(
                *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=env, cwd=str(tmp_path))
            out, err = await asyncio.wait_for(proc.communicate((text + "\n").encode()), 60)
            assert proc.returncode == 0, (
                f"go-sendxmpp exited {proc.returncode}\nstdout: {out.decode(errors='replace')}\n"
                f"stderr: {err.decode(errors='replace')}")
            m = await b.messages.wait_for(lambda m: m["body"].strip() == text,
                                          what="the message sent by go-sendxmpp")
            assert m["from"].bare == A, m
        finally:
            await b.stop()

    run(main())
