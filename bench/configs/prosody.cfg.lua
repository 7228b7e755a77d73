-- Written per run by franca-bench (crates/franca-bench/src/server.rs); this copy is for reading. DIR is the server's temporary directory, C2S_PORT/TLS_PORT are free ports picked per run.
run_as_root = true; daemonize = false
pidfile = "DIR/prosody.pid"; data_path = "DIR/data"
log = { warn = "DIR/prosody.log" }
network_backend = "epoll"
network_settings = { tcp_backlog = 4096; nagle = false; opportunistic_writes = true }
c2s_ports = { C2S_PORT }; c2s_interfaces = { "127.0.0.1" }
c2s_direct_tls_ports = { TLS_PORT }; c2s_direct_tls_interfaces = { "127.0.0.1" }
s2s_ports = { }; http_ports = { }; https_ports = { }
modules_enabled = { "roster"; "saslauth"; "tls"; "disco"; "ping"; "posix"; "register" }
modules_disabled = { "s2s"; "offline" }
c2s_require_encryption = false; allow_unencrypted_plain_auth = true
allow_registration = true
authentication = "internal_hashed"; storage = "internal"
ssl = { certificate = "DIR/cert.pem"; key = "DIR/key.pem" }
VirtualHost "bench.local"

-- M5 (its own server directory) appends:
--   Component "conference.bench.local" "muc"
--   muc_room_default_history_length = 0
-- M6 (its own server directory) adds "mam" to modules_enabled and replaces the storage line with:
--   default_storage = "internal"; storage = { archive = "sql" }
--   sql = { driver = "SQLite3"; database = "prosody.sqlite" }
--   archive_expires_after = "never"; max_archive_query_results = 50
