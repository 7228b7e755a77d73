//! Issue 2 §4: the `user` commands. Errors are one clear line and a non-zero exit.

use std::process::Output;

use crate::harness::{Options, Server};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: exit {}; stderr: {}; stdout: {}",
        out.status,
        text(&out.stderr),
        text(&out.stdout)
    );
}

/// Non-zero exit, exactly one non-empty line of output (stderr), mentioning `mention`.
fn assert_one_line_error(out: &Output, what: &str, mention: &str) {
    let stderr = text(&out.stderr);
    let stdout = text(&out.stdout);
    assert!(
        !out.status.success(),
        "{what}: expected a non-zero exit; stderr: {stderr}; stdout: {stdout}"
    );
    assert!(
        !stderr.contains("panicked"),
        "{what}: the CLI panicked: {stderr}"
    );
    let lines: Vec<&str> = stderr
        .lines()
        .chain(stdout.lines())
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: expected one line of error, got {}:\n{stderr}{stdout}",
        lines.len()
    );
    assert!(
        lines[0].contains(mention),
        "{what}: the error should name {mention:?}: {}",
        lines[0]
    );
}

fn listed(s: &Server, domain: Option<&str>) -> Vec<String> {
    let mut args = vec!["user", "list"];
    args.extend(domain);
    let out = s.cli(&args, "");
    assert_ok(&out, "user list");
    text(&out.stdout)
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn user_add_list_passwd_remove() {
    let s = Server::new(Options::default());
    assert_ok(
        &s.cli(&["user", "add", "carol@localhost"], "carol-pw-1\n"),
        "user add carol",
    );
    assert_ok(
        &s.cli(&["user", "add", "dave@localhost"], "dave-pw-1\n"),
        "user add dave",
    );
    let users = listed(&s, None);
    assert!(users.iter().any(|u| u == "carol@localhost"), "{users:?}");
    assert!(users.iter().any(|u| u == "dave@localhost"), "{users:?}");
    let users = listed(&s, Some("localhost"));
    assert!(users.iter().any(|u| u == "carol@localhost"), "{users:?}");
    assert_ok(
        &s.cli(&["user", "passwd", "carol@localhost"], "carol-pw-2\n"),
        "user passwd carol",
    );
    assert_ok(
        &s.cli(&["user", "remove", "carol@localhost"], ""),
        "user remove carol",
    );
    let users = listed(&s, None);
    assert!(!users.iter().any(|u| u == "carol@localhost"), "{users:?}");
    assert!(users.iter().any(|u| u == "dave@localhost"), "{users:?}");
}

#[test]
fn jids_are_normalised() {
    let s = Server::new(Options::default());
    assert_ok(
        &s.cli(&["user", "add", "Erin@LocalHost"], "erin-pw\n"),
        "user add Erin@LocalHost",
    );
    let users = listed(&s, None);
    assert!(users.iter().any(|u| u == "erin@localhost"), "{users:?}");
}

#[test]
fn unknown_user_is_one_line_error() {
    let s = Server::new(Options::default());
    assert_one_line_error(
        &s.cli(&["user", "passwd", "ghost@localhost"], "pw\n"),
        "user passwd of an unknown user",
        "ghost@localhost",
    );
    assert_one_line_error(
        &s.cli(&["user", "remove", "ghost@localhost"], ""),
        "user remove of an unknown user",
        "ghost@localhost",
    );
}

#[test]
fn invalid_jid_is_one_line_error() {
    let s = Server::new(Options::default());
    for jid in [
        "@localhost",
        "al ice@localhost",
        "alice@",
        "alice@localhost/resource",
    ] {
        let out = s.cli(&["user", "add", jid], "pw\n");
        let what = format!("user add {jid:?}");
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{what}: accepted; {stderr}");
        let lines = stderr.lines().filter(|l| !l.trim().is_empty()).count();
        assert_eq!(lines, 1, "{what}: expected one line: {stderr}");
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    }
}

#[test]
fn unserved_domain_is_one_line_error() {
    let s = Server::new(Options::default());
    assert_one_line_error(
        &s.cli(&["user", "add", "bob@elsewhere.example"], "pw\n"),
        "user add on a domain that is not served",
        "elsewhere.example",
    );
}

#[test]
fn duplicate_user_is_refused() {
    let s = Server::new(Options::default());
    assert_ok(
        &s.cli(&["user", "add", "frank@localhost"], "pw-1\n"),
        "user add frank",
    );
    let out = s.cli(&["user", "add", "frank@localhost"], "pw-2\n");
    assert_one_line_error(&out, "adding an existing user", "frank@localhost");
}

/// Issue 6 §2: `user federation <jid> allow|deny` sets the per-account bar, shows it, and
/// `user list` marks barred accounts. Removing the account removes the bar.
#[test]
fn user_federation_allow_deny() {
    let s = Server::new(Options::default());
    assert_ok(
        &s.cli(&["user", "add", "gina@localhost"], "gina-pw\n"),
        "user add gina",
    );
    let show = |s: &Server| {
        let out = s.cli(&["user", "federation", "gina@localhost"], "");
        assert_ok(&out, "user federation (show)");
        text(&out.stdout).trim().to_owned()
    };
    assert_eq!(show(&s), "gina@localhost: federation allowed");

    let out = s.cli(&["user", "federation", "Gina@LocalHost", "deny"], "");
    assert_ok(&out, "user federation deny");
    assert!(
        text(&out.stdout).contains("denied"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(show(&s), "gina@localhost: federation denied");
    let users = listed(&s, None);
    assert!(
        users
            .iter()
            .any(|u| u == "gina@localhost (federation denied)"),
        "{users:?}"
    );
    // Denying twice is fine.
    assert_ok(
        &s.cli(&["user", "federation", "gina@localhost", "deny"], ""),
        "user federation deny again",
    );

    assert_ok(
        &s.cli(&["user", "federation", "gina@localhost", "allow"], ""),
        "user federation allow",
    );
    assert_eq!(show(&s), "gina@localhost: federation allowed");
    assert!(listed(&s, None).iter().any(|u| u == "gina@localhost"));

    // The bar goes with the account.
    assert_ok(
        &s.cli(&["user", "federation", "gina@localhost", "deny"], ""),
        "user federation deny before remove",
    );
    assert_ok(
        &s.cli(&["user", "remove", "gina@localhost"], ""),
        "user remove gina",
    );
    assert_ok(
        &s.cli(&["user", "add", "gina@localhost"], "gina-pw-2\n"),
        "user add gina again",
    );
    assert_eq!(show(&s), "gina@localhost: federation allowed");
}

#[test]
fn user_federation_errors_are_one_line() {
    let s = Server::new(Options::default());
    assert_one_line_error(
        &s.cli(&["user", "federation", "ghost@localhost", "deny"], ""),
        "user federation of an unknown user",
        "ghost@localhost",
    );
    assert_one_line_error(
        &s.cli(&["user", "federation", "bob@elsewhere.example", "deny"], ""),
        "user federation on a domain that is not served",
        "elsewhere.example",
    );
    let out = s.cli(&["user", "federation", "ghost@localhost", "maybe"], "");
    assert!(!out.status.success(), "an unknown action is refused");
}
