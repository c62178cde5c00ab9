//! HS256 JWTs as bearer tokens, signed with a per-tenant secret.
//!
//! Claims: `tid` (the tenant id, required), `exp` (required), `iat` and
//! `nbf` (optional), `scopes` (a list, or a space-separated string in
//! `scope`), `sub` (who, for the issuer's own use). `jsonwebtoken` checks
//! the signature (HS256 only: a token naming any other algorithm is
//! refused before its key is looked at), `exp` and `nbf`, with
//! [`LEEWAY_SECS`] for clock skew; the lifetime (`exp − iat`, or
//! `exp − now` without `iat`, at most `--jwt-max-lifetime`) is checked
//! here. Every failure is the same 401. Requests are rate-limited per
//! tenant and signing key, not per `sub`. A token can never carry the
//! operator's rights.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Principal;
use super::dto::ProblemDoc;
use super::{ApiError, AppState};
use crate::db;

/// Associated-data name the JWT secret is sealed under.
const SEAL_NAME: &str = "\0jwt-secret";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(rotate))
}

#[derive(Serialize, ToSchema)]
pub struct JwtSecret {
    /// The HS256 key, base64url without padding; shown once.
    pub secret: String,
    pub algorithm: String,
    pub tenant_id: String,
}

/// Creates (or replaces) the tenant's JWT signing secret; tokens signed
/// with the old one stop working.
#[utoipa::path(post, path = "/v1/tenant/jwt-secret", tag = "tenants",
    responses((status = 201, body = JwtSecret), (status = 403, body = ProblemDoc)))]
async fn rotate(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<(StatusCode, Json<JwtSecret>), ApiError> {
    principal.require("admin")?;
    let secrets = state
        .engine
        .config
        .secrets
        .as_ref()
        .ok_or_else(|| ApiError::Internal("no secrets key is configured".into()))?;
    let key: [u8; 32] = rand::random();
    let sealed = secrets.seal(&principal.tenant_id, SEAL_NAME, &key);
    let mut conn = state.engine.db.writer().await?;
    db::auth::set_jwt_secret(&mut conn, &principal.tenant_id, &sealed).await?;
    Ok((
        StatusCode::CREATED,
        Json(JwtSecret {
            secret: URL_SAFE_NO_PAD.encode(key),
            algorithm: "HS256".into(),
            tenant_id: principal.tenant_id,
        }),
    ))
}

pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3 && token.starts_with("ey")
}

/// The one answer to every token that does not verify. Which check failed
/// goes to the log only: telling the caller would say, for instance,
/// whether a tenant has a JWT secret at all.
fn unauthorized(why: &str) -> ApiError {
    tracing::debug!(why, "JWT refused");
    ApiError::Unauthorized(INVALID_TOKEN.into())
}

/// The detail of every 401 for a bad JWT.
pub const INVALID_TOKEN: &str = "invalid token";

/// Names a signing key without revealing it: the first 8 bytes of its
/// SHA-256, in hex. Changes when the tenant rotates its secret.
fn key_id(key: &[u8]) -> String {
    hex::encode(&Sha256::digest(key)[..8])
}

/// Clock skew allowed on `exp` and `nbf`, in seconds. None: the issuer
/// chooses `exp`, and the lifetime cap already bounds how long a token
/// lives; a token that expired seconds ago is refused (tests/keys.rs and
/// tests/api.rs pin one that expired 5 s before use).
pub const LEEWAY_SECS: u64 = 0;

/// What `jsonwebtoken` checks: the HS256 signature, `exp` (required) and
/// `nbf`. `aud`, `iss` and `sub` are the issuer's own business.
fn validation() -> Validation {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_required_spec_claims(&["exp"]);
    validation.validate_nbf = true;
    validation.validate_aud = false;
    validation.leeway = LEEWAY_SECS;
    validation
}

/// Verifies `token` and returns who it speaks for.
pub async fn verify(state: &AppState, token: &str) -> Result<Principal, ApiError> {
    // The key depends on the tenant the token names, so `tid` is read
    // before the signature is checked; nothing else is trusted until then.
    let unverified = jsonwebtoken::dangerous::insecure_decode::<Value>(token)
        .map_err(|_| unauthorized("not a JWT"))?;
    if unverified.header.alg != Algorithm::HS256 {
        return Err(unauthorized("only HS256 is accepted"));
    }
    let tenant = unverified.claims["tid"]
        .as_str()
        .ok_or_else(|| unauthorized("no tid claim"))?
        .to_owned();
    let sealed = {
        let mut conn = state.engine.db.reader().await?;
        db::auth::jwt_secret(&mut conn, &tenant).await?
    }
    .ok_or_else(|| unauthorized("the tenant has no JWT secret"))?;
    let secrets = state
        .engine
        .config
        .secrets
        .as_ref()
        .ok_or_else(|| unauthorized("no secrets key"))?;
    let key = secrets
        .open(&tenant, SEAL_NAME, &sealed)
        .map_err(|_| unauthorized("the tenant's secret is unreadable"))?;
    let claims =
        jsonwebtoken::decode::<Value>(token, &DecodingKey::from_secret(&key), &validation())
            .map_err(|e| {
                tracing::debug!(error = %e, "JWT refused");
                unauthorized("did not verify")
            })?
            .claims;
    check_lifetime(
        &claims,
        chrono::Utc::now().timestamp(),
        state.jwt_max_lifetime,
    )
    .map_err(unauthorized)?;
    let scopes: Vec<String> = match (&claims["scopes"], &claims["scope"]) {
        (Value::Array(list), _) => list
            .iter()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect(),
        (_, Value::String(text)) => text.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    };
    // Limited per tenant and signing key: `sub` is the token issuer's to
    // choose, so a fresh one per token must not mean a fresh bucket.
    let key_id = format!("jwt:{tenant}:{}", key_id(&key));
    state.limiter.request(&key_id)?;
    Ok(Principal {
        tenant_id: tenant,
        key_id,
        scopes,
        operator: false,
    })
}

/// Checks the token's lifetime at `now` (unix seconds): `exp − iat`, or
/// `exp − now` without `iat`, may not exceed `max_lifetime`. (`exp` itself
/// has been checked by [`jsonwebtoken::decode`].)
fn check_lifetime(claims: &Value, now: i64, max_lifetime: Duration) -> Result<(), &'static str> {
    let exp = claims["exp"].as_i64().ok_or("no exp claim")?;
    let issued = match &claims["iat"] {
        Value::Null => now,
        iat => iat.as_i64().ok_or("iat is not a number")?,
    };
    let max = i64::try_from(max_lifetime.as_secs()).unwrap_or(i64::MAX);
    if exp.saturating_sub(issued) > max {
        return Err("lives longer than the maximum token lifetime");
    }
    Ok(())
}

/// Signs claims with a key: for tests and for integrators' reference.
pub fn sign(key: &[u8], claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(key),
    )
    .unwrap_or_else(|e| unreachable!("HS256 signs any JSON with any key: {e}"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::{Value, json};

    use super::{check_lifetime, sign, validation};

    #[test]
    fn token_lifetimes_are_checked_against_the_maximum() {
        let day = Duration::from_secs(86_400);
        let now = 1_000_000;
        let cases = [
            (json!({"exp": now + 60}), Ok(())),
            (json!({"exp": now + 86_400}), Ok(())),
            (
                json!({"exp": now + 86_401}),
                Err("lives longer than the maximum token lifetime"),
            ),
            (json!({"iat": now - 3_600, "exp": now + 82_800}), Ok(())),
            (
                json!({"iat": now - 3_600, "exp": now + 82_801}),
                Err("lives longer than the maximum token lifetime"),
            ),
            (
                json!({"iat": now, "exp": now + 10 * 365 * 86_400}),
                Err("lives longer than the maximum token lifetime"),
            ),
            (
                json!({"iat": "yesterday", "exp": now + 60}),
                Err("iat is not a number"),
            ),
            (json!({}), Err("no exp claim")),
        ];
        for (claims, expected) in cases {
            assert_eq!(check_lifetime(&claims, now, day), expected, "{claims}");
        }
    }

    /// `exp` and `nbf` are the library's to check: pins the configuration,
    /// including a wrongly typed claim, which must not count as absent.
    #[test]
    fn the_signature_exp_and_nbf_are_checked_by_the_library() {
        let key = b"the tenant's secret";
        let now = chrono::Utc::now().timestamp();
        let verifies = |token: &str| {
            jsonwebtoken::decode::<Value>(
                token,
                &jsonwebtoken::DecodingKey::from_secret(key),
                &validation(),
            )
            .is_ok()
        };
        let cases = [
            (json!({"exp": now + 60}), true),
            (
                json!({"exp": now + 60, "aud": "someone", "iss": "ci"}),
                true,
            ),
            (json!({"exp": now - 5}), false),
            (json!({"exp": "never"}), false),
            (json!({}), false),
            (json!({"exp": now + 60, "nbf": now - 5}), true),
            (json!({"exp": now + 60, "nbf": now + 30}), false),
            (json!({"exp": now + 60, "nbf": "later"}), false),
        ];
        for (claims, expected) in cases {
            assert_eq!(verifies(&sign(key, &claims)), expected, "{claims}");
        }
        let claims = json!({"exp": now + 60});
        assert!(!verifies(&sign(b"another key", &claims)), "forged");
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims,
            &EncodingKey::from_secret(key),
        )
        .unwrap();
        assert!(!verifies(&hs512), "only HS256");
    }
}
