//! The optional dashboard password: HTTP Basic auth, any user name, the password compared
//! in constant time.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

use super::DashError;
use crate::app::AppState;

/// The `WWW-Authenticate` challenge of a 401.
pub const CHALLENGE: &str = "Basic realm=\"selfdeploy\", charset=\"UTF-8\"";

/// Proof that the request may see the dashboard: extracting it checks the password when
/// one is set, and rejects with 401 otherwise.
#[derive(Clone, Copy, Debug)]
pub struct DashboardAuth;

impl FromRequestParts<AppState> for DashboardAuth {
    type Rejection = DashError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, DashError> {
        let Some(expected) = state.config.dashboard_password.as_deref() else {
            return Ok(DashboardAuth);
        };
        let given = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|value| basic_password(value.as_bytes()));
        match given {
            Some(password) if password_matches(&password, expected.as_bytes()) => Ok(DashboardAuth),
            _ => Err(DashError::Unauthorized),
        }
    }
}

/// The password of an `Authorization: Basic base64(user:password)` header value.
pub fn basic_password(header: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(header).ok()?.trim();
    let (scheme, credentials) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    use base64::Engine;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(credentials.trim())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some(decoded[colon + 1..].to_vec())
}

/// Compares SHA-256 digests with no early exit, so the time taken does not tell how much
/// of a guess was right (nor the password's length).
pub fn password_matches(given: &[u8], expected: &[u8]) -> bool {
    let a = Sha256::digest(given);
    let b = Sha256::digest(expected);
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_basic_credentials() {
        // "user:pa:ss" and ":secret"
        assert_eq!(
            basic_password(b"Basic dXNlcjpwYTpzcw==").as_deref(),
            Some(&b"pa:ss"[..])
        );
        assert_eq!(
            basic_password(b"basic OnNlY3JldA==").as_deref(),
            Some(&b"secret"[..])
        );
        assert_eq!(basic_password(b"Basic dXNlcg=="), None); // no colon
        assert_eq!(basic_password(b"Bearer OnNlY3JldA=="), None);
        assert_eq!(basic_password(b"Basic !!!!"), None);
        assert_eq!(basic_password(b"Basic OnNlY3JldA"), None);
    }

    #[test]
    fn compares_passwords() {
        assert!(password_matches(b"hunter2", b"hunter2"));
        assert!(!password_matches(b"hunter", b"hunter2"));
        assert!(!password_matches(b"", b"hunter2"));
    }
}
