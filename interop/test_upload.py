"""XEP-0363 HTTP File Upload with slixmpp's own xep_0363: it finds the upload service through
the server's disco#items, reads max-file-size from its disco#info form, asks for a slot and
PUTs the file with aiohttp; the file is then downloaded from the GET URL (by aiohttp, as a
contact's client would) and compared byte for byte. A file over the limit is refused by the
server with <file-too-large/> naming the maximum, and slixmpp refuses it too from the
advertised maximum."""

from __future__ import annotations

import io
import os

import aiohttp
import pytest
from slixmpp.exceptions import IqError
from slixmpp.plugins.xep_0363.http_upload import FileTooBig

from conftest import USERS
from xmpp_client import Client, run

A = "alice@localhost"
NS_UPLOAD = "urn:xmpp:http:upload:0"
MAX = 4096


@pytest.fixture
def upload_server(make_server):
    srv = make_server(start=False)
    # Slot URLs on the HTTP listener by address, so the test does not depend on how
    # `localhost` resolves.
    srv.extra = (
        "[upload]\n"
        f"max_file_size = {MAX}\n"
        f'public_url = "http://127.0.0.1:{srv.http_port}"\n'
    )
    srv.write_config()
    srv.start()
    return srv


def upload_client(server) -> Client:
    c = Client(server, f"{A}/phone", USERS[A])
    c.register_plugin("xep_0363")
    return c


def test_upload_then_download_the_same_bytes(upload_server):
    async def main():
        a = upload_client(upload_server)
        try:
            await a.start()
            content = os.urandom(3000)
            url = await a.plugin["xep_0363"].upload_file(
                "notes.bin", size=len(content), content_type="application/octet-stream",
                input_file=io.BytesIO(content), timeout=15)
            assert str(a.plugin["xep_0363"].upload_service) == "upload.localhost"
            assert a.plugin["xep_0363"].max_file_size == MAX
            assert url.startswith(f"http://127.0.0.1:{upload_server.http_port}/"), url
            assert url.endswith("/notes.bin"), url
            async with aiohttp.ClientSession() as http:
                async with http.get(url) as resp:
                    assert resp.status == 200, resp.status
                    assert resp.headers["Content-Length"] == str(len(content))
                    got = await resp.read()
            assert got == content
        finally:
            await a.stop()

    run(main())


def test_too_large_file_is_refused_with_the_maximum(upload_server):
    async def main():
        a = upload_client(upload_server)
        try:
            await a.start()
            # slixmpp refuses it itself from the max-file-size the service advertised ...
            with pytest.raises(FileTooBig) as too_big:
                await a.plugin["xep_0363"].upload_file(
                    "big.bin", size=MAX + 1, content_type="application/octet-stream",
                    input_file=io.BytesIO(b"x" * (MAX + 1)), timeout=15)
            assert too_big.value.args == (MAX + 1, MAX)
            # ... and the server refuses the slot request a client makes anyway.
            with pytest.raises(IqError) as refused:
                await a.plugin["xep_0363"].request_slot(
                    a.plugin["xep_0363"].upload_service, "big.bin", MAX + 1,
                    "application/octet-stream", timeout=15)
            iq = refused.value.iq
            assert iq["error"]["condition"] == "not-acceptable", iq
            max_size = iq.xml.find(f".//{{{NS_UPLOAD}}}file-too-large/{{{NS_UPLOAD}}}max-file-size")
            assert max_size is not None and max_size.text == str(MAX), iq
        finally:
            await a.stop()

    run(main())
