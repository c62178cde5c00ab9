//! The administrator's CLI (`weft tenant …`, `weft key …`) through the real
//! binary against a real `weft serve`.

use crate::common;

use common::cli::{Output, weft};
use common::{ADMIN_KEY, Server};

/// The last word of the stdout line starting with `prefix`.
fn word_after<'a>(out: &'a Output, prefix: &str) -> &'a str {
    out.stdout
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.split_whitespace().last())
        .unwrap_or_else(|| panic!("no line {prefix:?}: {out:?}"))
}

/// `GET /v1/runs` with `key`: the status code.
fn runs_status(server: &Server, key: &str) -> u16 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        reqwest::Client::new()
            .get(format!("{}/v1/runs", server.url))
            .bearer_auth(key)
            .send()
            .await
            .expect("GET /v1/runs")
            .status()
            .as_u16()
    })
}

/// Creates a tenant and returns its admin key.
fn create_tenant(server: &Server, name: &str) -> String {
    let out = weft(server, ADMIN_KEY, &["tenant", "create", name]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .starts_with(&format!("created tenant {name} (id ")),
        "{out:?}"
    );
    assert!(out.stdout.contains("shown only once"), "{out:?}");
    let key = word_after(&out, "admin key").to_owned();
    assert!(key.starts_with("wft_live_"), "{out:?}");
    key
}

#[test]
fn tenant_and_key_lifecycle_through_the_cli() {
    let s = Server::start();
    let tenant_key = create_tenant(&s, "acme");

    let out = weft(&s, ADMIN_KEY, &["tenant", "list"]);
    assert_eq!(out.code, 0, "{out:?}");
    let mut lines = out.stdout.lines();
    let header = lines.next().unwrap_or_default();
    assert!(
        header.starts_with("ID") && header.contains("NAME"),
        "{out:?}"
    );
    assert!(
        lines.any(|l| l.split_whitespace().nth(1) == Some("acme")),
        "{out:?}"
    );

    // The tenant's admin key makes a narrower key.
    let out = weft(
        &s,
        &tenant_key,
        &["key", "create", "--name", "reader", "--scopes", "runs:read"],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("shown only once"), "{out:?}");
    let key = word_after(&out, "key (shown").to_owned();
    assert!(key.starts_with("wft_live_"), "{out:?}");
    let id = out
        .stdout
        .split_once("(id ")
        .and_then(|(_, rest)| rest.split_once(','))
        .map(|(id, _)| id.to_owned())
        .unwrap_or_else(|| panic!("no id: {out:?}"));
    assert_eq!(runs_status(&s, &key), 200);

    // A test key, with an expiry.
    let out = weft(
        &s,
        &tenant_key,
        &[
            "key",
            "create",
            "--name",
            "ci",
            "--scopes",
            "runs:read,runs:start",
            "--expires-at",
            "2999-01-01T00:00:00Z",
            "--test",
        ],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        word_after(&out, "key (shown").starts_with("wft_test_"),
        "{out:?}"
    );
    assert!(out.stdout.contains("runs:read,runs:start"), "{out:?}");

    let out = weft(&s, &tenant_key, &["key", "list"]);
    assert_eq!(out.code, 0, "{out:?}");
    let header = out.stdout.lines().next().unwrap_or_default();
    for column in [
        "ID",
        "NAME",
        "PREFIX",
        "SCOPES",
        "LAST USED",
        "EXPIRES",
        "REVOKED",
    ] {
        assert!(header.contains(column), "{column}: {out:?}");
    }
    let row = out
        .stdout
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("no row for {id}: {out:?}"));
    assert!(row.contains("reader") && row.contains("runs:read"), "{row}");
    assert!(row.trim_end().ends_with('-'), "not revoked yet: {row}");
    assert!(!out.stdout.contains(&key), "the key itself is never listed");
    assert!(
        out.stdout.contains("2999-01-01"),
        "the expiry is listed: {out:?}"
    );

    let out = weft(&s, &tenant_key, &["key", "revoke", &id]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, format!("revoked key {id}\n"), "{out:?}");
    assert_eq!(runs_status(&s, &key), 401);

    let out = weft(&s, &tenant_key, &["key", "list"]);
    let row = out
        .stdout
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("no row for {id}: {out:?}"));
    assert!(!row.trim_end().ends_with('-'), "revoked: {row}");

    // Revoking an unknown key is a 404 problem and exit 1.
    let out = weft(&s, &tenant_key, &["key", "revoke", "no-such-key"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("404"), "{out:?}");

    // An invalid expiry is the server's 422, printed.
    let out = weft(
        &s,
        &tenant_key,
        &[
            "key",
            "create",
            "--name",
            "bad",
            "--scopes",
            "runs:read",
            "--expires-at",
            "tomorrow",
        ],
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("422") && out.stderr.contains("RFC 3339"),
        "{out:?}"
    );
}

#[test]
fn tenant_commands_need_the_operator_key() {
    let s = Server::start();
    let tenant_key = create_tenant(&s, "acme");

    let out = weft(&s, &tenant_key, &["tenant", "create", "other"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(
        out.stderr.contains("403") && out.stderr.contains("operator"),
        "{out:?}"
    );

    let out = weft(&s, &tenant_key, &["tenant", "list"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("403"), "{out:?}");

    // A key without `admin` cannot manage keys.
    let out = weft(
        &s,
        &tenant_key,
        &["key", "create", "--name", "r", "--scopes", "runs:read"],
    );
    assert_eq!(out.code, 0, "{out:?}");
    let reader = word_after(&out, "key (shown").to_owned();
    let out = weft(&s, &reader, &["key", "list"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("403") && out.stderr.contains("admin"),
        "{out:?}"
    );
}
