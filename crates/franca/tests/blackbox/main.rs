//! Black-box tests: they spawn the real `franca` binary (`$FRANCA_BIN`, else the one cargo built)
//! on free ports in a temporary directory and talk to it over TCP like any peer would.
//!
//! Storage is SQLite inside the temporary directory, or, when `FRANCA_TEST_PG_URL` is set, a fresh
//! PostgreSQL database per server (created through that URL; the role needs CREATEDB). With
//! `FRANCA_REQUIRE_PG=1` a missing URL is an error rather than a quiet fall-back to SQLite.
//!
//! - `hostile`: the hostile-input table of issue 2 §9: each case checks the stream error or stanza
//!   error, then that the server still serves a new session.
//! - `cli`: the `user` commands and their one-line errors.
//! - `config`: unknown keys are refused by name; `franca.example.toml` parses.
//! - `lifecycle`: logins over STARTTLS and direct TLS, SIGTERM → `<system-shutdown/>`.

mod cli;
mod client;
mod config;
mod harness;
mod hostile;
mod import;
mod lifecycle;
mod websocket;
