//! HS256 JWTs as bearer tokens, signed with a per-tenant secret.
//!
//! Claims: `tid` (the tenant id, required), `exp` (required), `iat` and
//! `nbf` (optional), `scopes` (a list, or a space-separated string in
//! `scope`), `sub` (who, for the issuer's own use). The signature, `exp`,
//! `nbf` and the lifetime (`exp − iat`, or `exp − now` without `iat`, at
//! most `--jwt-max-lifetime`) are checked; every failure is the same 401.
//! Requests are rate-limited per tenant and signing key, not per `sub`. A
//! token can never carry the operator's rights.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
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

fn segment(text: &str) -> Result<Value, ApiError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| unauthorized("not base64url"))?;
    serde_json::from_slice(&bytes).map_err(|_| unauthorized("not JSON"))
}

/// Names a signing key without revealing it: the first 8 bytes of its
/// SHA-256, in hex. Changes when the tenant rotates its secret.
fn key_id(key: &[u8]) -> String {
    hex::encode(&Sha256::digest(key)[..8])
}

/// Verifies `token` and returns who it speaks for.
pub async fn verify(state: &AppState, token: &str) -> Result<Principal, ApiError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(unauthorized("expected three segments"));
    };
    if segment(header)?["alg"] != "HS256" {
        return Err(unauthorized("only HS256 is accepted"));
    }
    let claims = segment(payload)?;
    let tenant = claims["tid"]
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
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| unauthorized("bad signature encoding"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|_| unauthorized("bad key"))?;
    mac.update(format!("{header}.{payload}").as_bytes());
    mac.verify_slice(&signature)
        .map_err(|_| unauthorized("bad signature"))?;
    check_times(
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

/// Checks `exp` (required), `nbf` and the token's lifetime at `now` (unix
/// seconds): `exp − iat`, or `exp − now` without `iat`, may not exceed
/// `max_lifetime`.
fn check_times(claims: &Value, now: i64, max_lifetime: Duration) -> Result<(), &'static str> {
    let exp = claims["exp"].as_i64().ok_or("no exp claim")?;
    if exp <= now {
        return Err("expired");
    }
    if claims["nbf"].as_i64().is_some_and(|nbf| nbf > now) {
        return Err("not valid yet");
    }
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
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut mac = Hmac::<Sha256>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(format!("{header}.{payload}").as_bytes());
    format!(
        "{header}.{payload}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::check_times;

    #[test]
    fn token_times_are_checked_against_the_maximum_lifetime() {
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
            (json!({"exp": now}), Err("expired")),
            (
                json!({"nbf": now + 5, "exp": now + 60}),
                Err("not valid yet"),
            ),
            (json!({}), Err("no exp claim")),
        ];
        for (claims, expected) in cases {
            assert_eq!(check_times(&claims, now, day), expected, "{claims}");
        }
    }
}
