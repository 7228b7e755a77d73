"""Fixtures: a fresh franca server per test, with users alice, bob and carol."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from franca_server import DOMAIN, FrancaServer, franca_bin, pg_admin_url  # noqa: E402

USERS = {
    f"alice@{DOMAIN}": "alice-secret-1",
    f"bob@{DOMAIN}": "bob-secret-2",
    f"carol@{DOMAIN}": "carol-secret-3",
}


def pytest_report_header(config):
    backend = "postgresql" if pg_admin_url() else "sqlite"
    return [f"franca binary: {franca_bin()}", f"storage backend: {backend}"]


def pytest_sessionstart(session):
    if os.environ.get("FRANCA_REQUIRE_PG") == "1" and not pg_admin_url():
        raise pytest.UsageError("FRANCA_REQUIRE_PG=1 but FRANCA_TEST_PG_URL is not set")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def make_server(tmp_path, request):
    """Factory: make_server(limits=None, extra="") -> started FrancaServer with the USERS."""
    servers: list[FrancaServer] = []

    def make(*, limits: dict | None = None, extra: str = "", start: bool = True) -> FrancaServer:
        if not os.access(franca_bin(), os.X_OK):
            pytest.fail(f"franca binary not found at {franca_bin()} (build it or set FRANCA_BIN)")
        srv = FrancaServer(tmp_path / f"server{len(servers)}", limits=limits, extra=extra)
        servers.append(srv)
        for jid, pw in USERS.items():
            srv.add_user(jid, pw)
        if start:
            srv.start()
        return srv

    yield make

    failed = any(getattr(request.node, "rep_" + w, None) is not None and getattr(request.node, "rep_" + w).failed
                 for w in ("setup", "call"))
    for srv in servers:
        rc = srv.stop()
        if failed:
            print(f"\n----- franca log ({srv.workdir}, storage {srv.storage_url}, exit {rc}) -----")
            print(srv.log_text()[-20000:])


@pytest.fixture
def server(make_server) -> FrancaServer:
    return make_server()
