//! Issue 2 §3: unknown keys are refused by name; `franca.example.toml` parses.

use crate::harness::{Options, Server, franca_bin, repo_root, run_franca};

#[test]
fn generated_test_config_is_valid() {
    let s = Server::new(Options::default());
    let out = s.cli(&["check-config"], "");
    assert!(
        out.status.success(),
        "check-config refused the test config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn unknown_config_keys_are_refused_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("franca.toml");
    for (section, key) in [
        ("server", "bogus_key"),
        ("limits", "max_stanza_byte"),
        ("storage", "uri"),
        ("listen", "c2s_tsl"),
        ("modules", "teleport"),
        ("tls", "certificate"),
        ("nonsense", "x"),
    ] {
        let mut cfg = String::from("[server]\ndomains = [\"localhost\"]\ndata_dir = \"data\"\n");
        if section == "server" {
            cfg.push_str(&format!("{key} = 1\n"));
        } else {
            cfg.push_str(&format!("\n[{section}]\n{key} = 1\n"));
        }
        std::fs::write(&config, &cfg).expect("write config");
        let out = run_franca(&config, dir.path(), &["check-config"], "");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "[{section}] {key}: unknown key accepted by check-config; stderr: {stderr}"
        );
        let named = if section == "nonsense" { section } else { key };
        assert!(
            stderr.contains(named),
            "[{section}] {key}: the error does not name {named:?}: {stderr}"
        );
        // serve refuses it too (before listening on anything).
        let out = run_franca(&config, dir.path(), &["serve"], "");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "[{section}] {key}: serve started; {stderr}"
        );
        assert!(stderr.contains(named), "[{section}] {key}: serve: {stderr}");
    }
}

#[test]
fn example_config_parses() {
    let example = repo_root().join("franca.example.toml");
    assert!(example.exists(), "{} is missing", example.display());
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run_franca(&example, dir.path(), &["check-config"], "");
    assert!(
        out.status.success(),
        "check-config refused franca.example.toml: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn config_from_environment_variable() {
    let s = Server::new(Options::default());
    let out = std::process::Command::new(franca_bin())
        .arg("check-config")
        .env("FRANCA_CONFIG", &s.config)
        .current_dir(s.dir.path())
        .output()
        .expect("run franca");
    assert!(
        out.status.success(),
        "FRANCA_CONFIG not honoured: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut bad = std::fs::read_to_string(&s.config).expect("read");
    bad = bad.replacen("[server]\n", "[server]\nnot_a_key = true\n", 1);
    std::fs::write(&s.config, bad).expect("write");
    let out = std::process::Command::new(franca_bin())
        .arg("check-config")
        .env("FRANCA_CONFIG", &s.config)
        .current_dir(s.dir.path())
        .output()
        .expect("run franca");
    assert!(
        !out.status.success(),
        "FRANCA_CONFIG file with a bad key accepted"
    );
}
