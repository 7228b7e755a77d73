//! The configuration file: the documented example parses, and unknown keys are refused by name.
#![allow(clippy::unwrap_used)]

use franca_core::Config;
use std::path::Path;

#[test]
fn example_config_parses_and_matches_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../franca.example.toml");
    let config = Config::load(&path).unwrap();
    let defaults = Config::default();
    assert_eq!(config.server.domains, defaults.server.domains);
    assert_eq!(config.listen.c2s, defaults.listen.c2s);
    assert_eq!(config.listen.c2s_tls, defaults.listen.c2s_tls);
    assert_eq!(config.listen.http, defaults.listen.http);
    assert_eq!(config.listen.https, defaults.listen.https);
    assert_eq!(config.listen.multiplex, defaults.listen.multiplex);
    assert_eq!(config.http.cors_origins, defaults.http.cors_origins);
    assert_eq!(config.limits.max_stanza_bytes, 256 * 1024);
    assert_eq!(config.storage_url(), defaults.storage_url());
    assert!(!config.registration.enabled);
    assert!(!config.modules.version);
    assert!(config.fast.enabled);
    assert_eq!(
        config.fast.token_lifetime_seconds,
        defaults.fast.token_lifetime_seconds
    );
    assert!(config.push.enabled && !config.push.include_body);
    assert_eq!(config.push.max_per_minute, defaults.push.max_per_minute);
    assert_eq!(config.push.max_per_account, defaults.push.max_per_account);
}

#[test]
fn unknown_keys_are_refused_with_their_name() {
    let err = Config::from_toml("[server]\ndomians = [\"x\"]\n", Path::new("f.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("domians"), "{err}");
    let err = Config::from_toml("[nope]\n", Path::new("f.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn bad_values_are_refused() {
    let err = Config::from_toml("[server]\ndomains = []\n", Path::new("f.toml")).unwrap_err();
    assert!(err.to_string().contains("domains"));
    let err = Config::from_toml(
        "[server]\ndomains = [\"Bad Domain\"]\n",
        Path::new("f.toml"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("Bad Domain"));
    let err = Config::from_toml("[tls]\ncert = \"a.pem\"\n", Path::new("f.toml")).unwrap_err();
    assert!(err.to_string().contains("together"));
    for bad in [
        "chat.example",
        "https://chat.example/path",
        "ftp://chat.example",
        "",
    ] {
        let text = format!("[http]\ncors_origins = [\"{bad}\"]\n");
        let err = Config::from_toml(&text, Path::new("f.toml")).unwrap_err();
        assert!(err.to_string().contains("cors_origins"), "{bad}: {err}");
    }
    for good in ["*", "https://chat.example", "http://[::1]:8080"] {
        let text = format!("[http]\ncors_origins = [\"{good}\"]\n");
        Config::from_toml(&text, Path::new("f.toml")).unwrap();
    }
}
