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
