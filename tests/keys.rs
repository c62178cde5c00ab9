//! The operator's key and tenants' tokens: the pinned key is the one
//! operator key and cannot be revoked, key files are the owner's alone,
//! and JWTs are limited per tenant and signing key, bounded in lifetime
//! and refused with one message whatever is wrong with them.

use crate::common;

use std::os::unix::fs::PermissionsExt as _;

use base64::Engine as _;
use common::{ADMIN_KEY, Server};
use reqwest::Method;
use serde_json::{Value, json};

async fn status_with(s: &Server, key: &str) -> u16 {
    s.call_as(key, Method::GET, "/v1/runs", None).await.0
}

#[tokio::test]
async fn the_operators_key_cannot_be_revoked_even_by_itself() {
    let s = Server::start();
    let (_, me) = s.get("/v1/me").await;
    assert_eq!(me["operator"], true, "{me}");
    let own = format!("/v1/api-keys/{}", me["key_id"].as_str().unwrap());
    let (status, problem) = s.call(Method::DELETE, &own, None).await;
    assert_eq!(status, 409, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("operator's key"),
        "{problem}"
    );
    // Nor by another admin of the same tenant.
    let (_, admin) = s
        .post(
            "/v1/api-keys",
            json!({"name": "second", "scopes": ["admin"]}),
        )
        .await;
    let (status, _) = s
        .call_as(admin["key"].as_str().unwrap(), Method::DELETE, &own, None)
        .await;
    assert_eq!(status, 409);
    assert_eq!(status_with(&s, ADMIN_KEY).await, 200, "still valid");
    // Other keys are revoked as before.
    let other = format!("/v1/api-keys/{}", admin["id"].as_str().unwrap());
    assert_eq!(s.call(Method::DELETE, &other, None).await.0, 204);
    assert_eq!(status_with(&s, admin["key"].as_str().unwrap()).await, 401);
}

#[tokio::test]
async fn pinning_a_new_admin_key_revokes_the_one_pinned_before() {
    let dir = tempfile::tempdir().unwrap();
    let first = "wft_test_first_pinned_operator_key";
    let second = "wft_test_second_pinned_operator_key";
    let start =
        |key: &str| Server::start_with_env(dir.path(), false, &[], &[("WEFT_ADMIN_KEY", key)]);
    let mut s = start(first);
    assert_eq!(status_with(&s, first).await, 200);
    s.kill();
    let mut s = start(second);
    assert_eq!(status_with(&s, second).await, 200);
    assert_eq!(
        status_with(&s, first).await,
        401,
        "the earlier pin is revoked"
    );
    s.kill();
    // Pinning the first again brings it back, and the second goes.
    let s = start(first);
    assert_eq!(
        status_with(&s, first).await,
        200,
        "a pinned key always works"
    );
    assert_eq!(status_with(&s, second).await, 401);
    let (_, me) = s.call_as(first, Method::GET, "/v1/me", None).await;
    assert_eq!(me["operator"], true, "{me}");
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn key_files_are_readable_by_their_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let admin_key = dir.path().join("admin-key");
    let secrets_key = dir.path().join("secrets.key");
    // No pinned key: the first start writes a generated one.
    let mut s = Server::start_with_env(dir.path(), false, &[], &[("WEFT_ADMIN_KEY", "")]);
    let key = std::fs::read_to_string(&admin_key).unwrap();
    assert_eq!(status_with(&s, key.trim()).await, 200);
    assert_eq!(mode(&admin_key), 0o600);
    assert_eq!(mode(&secrets_key), 0o600);
    s.kill();
    // Files an older version left readable by others are fixed at start.
    for path in [&admin_key, &secrets_key] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let _s = Server::start_with_env(dir.path(), false, &[], &[("WEFT_ADMIN_KEY", "")]);
    assert_eq!(mode(&admin_key), 0o600);
    assert_eq!(mode(&secrets_key), 0o600);
}

/// A tenant with a JWT secret: (tenant id, signing key).
async fn tenant_with_secret(s: &Server, name: &str) -> (String, Vec<u8>) {
    let (status, tenant) = s.post("/v1/tenants", json!({"name": name})).await;
    assert_eq!(status, 201, "{tenant}");
    let (status, secret) = s
        .call_as(
            tenant["admin_key"].as_str().unwrap(),
            Method::POST,
            "/v1/tenant/jwt-secret",
            None,
        )
        .await;
    assert_eq!(status, 201, "{secret}");
    let key = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(secret["secret"].as_str().unwrap())
        .unwrap();
    (tenant["id"].as_str().unwrap().to_owned(), key)
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[tokio::test]
async fn every_bad_token_gets_the_same_401() {
    let s = Server::start();
    let (tenant, key) = tenant_with_secret(&s, "signer").await;
    let (_, bare) = s.post("/v1/tenants", json!({"name": "no-secret"})).await;
    let bare = bare["id"].as_str().unwrap();
    let claims = |tid: &str| json!({"tid": tid, "exp": now() + 60, "scopes": ["runs:read"]});
    let bad = [
        (
            "forged",
            weft::api::jwt::sign(b"not the secret", &claims(&tenant)),
        ),
        ("no secret", weft::api::jwt::sign(&key, &claims(bare))),
        (
            "no tenant",
            weft::api::jwt::sign(&key, &claims("no-such-tenant")),
        ),
        (
            "expired",
            weft::api::jwt::sign(&key, &json!({"tid": tenant, "exp": now() - 5})),
        ),
        (
            "no exp",
            weft::api::jwt::sign(&key, &json!({"tid": tenant, "scopes": ["runs:read"]})),
        ),
        ("garbage", "eyJhbGciOi.eyJ0aWQiOi.AAAA".to_owned()),
    ];
    let mut details = std::collections::BTreeSet::new();
    for (what, token) in bad {
        let (status, problem) = s.call_as(&token, Method::GET, "/v1/runs", None).await;
        assert_eq!(status, 401, "{what}: {problem}");
        details.insert(problem["detail"].as_str().unwrap().to_owned());
    }
    assert_eq!(details.len(), 1, "one message for all: {details:?}");
    let good = weft::api::jwt::sign(&key, &claims(&tenant));
    assert_eq!(status_with(&s, &good).await, 200);
}

#[tokio::test]
async fn a_fresh_sub_per_token_does_not_escape_the_rate_limit() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir.path(), &["--rate-limit-per-key", "2"]);
    let (tenant, key) = tenant_with_secret(&s, "busy").await;
    let mut statuses = Vec::new();
    for n in 0..12 {
        let token = weft::api::jwt::sign(
            &key,
            &json!({"tid": tenant, "sub": format!("user-{n}"), "exp": now() + 60, "scopes": ["runs:read"]}),
        );
        statuses.push(status_with(&s, &token).await);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert_eq!(statuses[0], 200, "{statuses:?}");
}

#[tokio::test]
async fn tokens_living_longer_than_the_maximum_lifetime_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir.path(), &["--jwt-max-lifetime", "1h"]);
    let (tenant, key) = tenant_with_secret(&s, "short").await;
    let token = |claims: Value| {
        let mut claims = claims;
        claims["tid"] = json!(tenant);
        claims["scopes"] = json!(["runs:read"]);
        weft::api::jwt::sign(&key, &claims)
    };
    let t = now();
    let cases = [
        (json!({"exp": t + 1800}), 200),
        (json!({"iat": t - 1800, "exp": t + 1700}), 200),
        (json!({"exp": t + 7200}), 401),
        (json!({"iat": t, "exp": t + 10 * 365 * 86_400}), 401),
        (json!({"iat": t - 36_000, "exp": t + 600}), 401),
    ];
    for (claims, expected) in cases {
        let status = status_with(&s, &token(claims.clone())).await;
        assert_eq!(status, expected, "{claims}");
    }
}
