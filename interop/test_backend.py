"""The suite runs on the storage backend it was asked for (SQLite, or PostgreSQL via
FRANCA_TEST_PG_URL): the server really created its tables there."""

from __future__ import annotations

import os
import subprocess

from franca_server import pg_admin_url


def test_storage_backend_is_the_one_requested(server):
    if pg_admin_url():
        assert server.storage_url.startswith("postgres"), server.storage_url
        out = subprocess.run(
            ["psql", server.storage_url, "-tAc",
             "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"],
            capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert int(out.stdout.strip() or 0) > 0, f"no tables in {server.storage_url}"
    else:
        assert server.storage_url.startswith("sqlite://"), server.storage_url
        assert os.path.exists(server.data_dir / "franca.db"), "no SQLite database in data_dir"
