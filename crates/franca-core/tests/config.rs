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

#[test]
fn component_entries_are_validated() {
    let entry = |domain: &str, secret: &str| {
        format!("[[component]]\ndomain = \"{domain}\"\nsecret = \"{secret}\"\n")
    };
    let ok = format!(
        "{}{}",
        entry("irc.localhost", "s1"),
        entry("gw.example", "s2")
    );
    let config = Config::from_toml(&ok, Path::new("f.toml")).unwrap();
    assert_eq!(config.component.len(), 2);
    assert!(!format!("{:?}", config.component).contains("s1"));
    for (bad, why) in [
        (entry("IRC.localhost", "s"), "normalised"),
        (entry("localhost", "s"), "served"),
        (entry("conference.localhost", "s"), "hosted"),
        (entry("irc.localhost", ""), "secret"),
        (
            format!(
                "{}{}",
                entry("irc.localhost", "a"),
                entry("irc.localhost", "b")
            ),
            "twice",
        ),
    ] {
        let err = Config::from_toml(&bad, Path::new("f.toml")).unwrap_err();
        assert!(err.to_string().contains(why), "{bad}: {err}");
    }
}

/// Issue 6 §2: `[s2s]` values are checked at load, each refusal naming the key.
#[test]
fn s2s_settings_are_validated() {
    let ok = "[s2s]\npolicy = \"allowlist\"\nallow = [\"partner.example\"]\n\
              deny = [\"spam.example\"]\ndialback_secret = \"0123456789abcdef\"\n\
              [s2s.routes]\n\"partner.example\" = \"10.0.0.5:5269\"\n\
              \"v6.example\" = \"[::1]:5270\"\n\"named.example\" = \"xmpp.named.example:5269\"\n";
    let config = Config::from_toml(ok, Path::new("f.toml")).unwrap();
    assert_eq!(config.s2s.allow, ["partner.example"]);
    assert_eq!(config.s2s.routes.len(), 3);
    // The dialback secret stays out of Debug output.
    assert!(!format!("{config:?}").contains("0123456789abcdef"));
    for (bad, why) in [
        ("[s2s]\nallow = [\"Partner.Example\"]\n", "s2s.allow"),
        ("[s2s]\ndeny = [\"user@spam.example\"]\n", "s2s.deny"),
        ("[s2s]\ndeny = [\"localhost\"]\n", "served"),
        ("[s2s.routes]\n\"p.example\" = \"10.0.0.5\"\n", "host:port"),
        ("[s2s.routes]\n\"p.example\" = \"::1:5269\"\n", "host:port"),
        ("[s2s.routes]\n\"p.example\" = \"h:0\"\n", "host:port"),
        ("[s2s.routes]\n\"P.example\" = \"h:5269\"\n", "s2s.routes"),
        ("[s2s]\npolicy = \"allowlist\"\n", "allowlist"),
        ("[s2s]\npolicy = \"sometimes\"\n", "sometimes"),
        ("[s2s]\nconnect_timeout_seconds = 0\n", "timeout"),
        ("[s2s]\nidle_timeout_seconds = 0\n", "timeout"),
        ("[s2s]\nmax_queued_stanzas = 0\n", "max_queued_stanzas"),
        ("[s2s]\ndialback_secret = \"short\"\n", "dialback_secret"),
        (
            "[s2s]\nrequire_valid_certs = true\nsystem_roots = false\n",
            "trust anchors",
        ),
    ] {
        let err = Config::from_toml(bad, Path::new("f.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(why), "{bad}: {err}");
    }
    // Closed with an empty allow list is fine: it says what it means.
    Config::from_toml("[s2s]\npolicy = \"closed\"\n", Path::new("f.toml")).unwrap();
}
