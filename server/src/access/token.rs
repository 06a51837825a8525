//! Signed tokens (JWT): the identity a script, a service or a sign-in page hands us, in an
//! `Authorization: Bearer` header or, for browsers, a cookie (a browser's `EventSource` cannot
//! set a header, but it sends the site's cookies).
//!
//! The claims follow Mercure's, so tokens made with its tooling work here:
//!
//! ```json
//! { "sub": "alice", "name": "Alice Liddell", "exp": 1767225600,
//!   "mercure": { "subscribe": ["ops", "chat"], "publish": ["chat"] } }
//! ```
//!
//! `exp` is required; `iss` and `aud` are checked when the server is told what to expect. A
//! topic in `subscribe` or `publish` is a topic's name or `*` for every topic. Mercure's URI
//! templates have no meaning here (our topics are names, not URLs), so an entry that is not
//! a name of ours matches nothing.

use jsonwebtoken::{errors::ErrorKind, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::{
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// A token longer than this is refused before it is decoded. Real ones are a few hundred
/// bytes; the bound keeps a client from making us base64-decode and parse megabytes.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// How we check tokens: the key, and what the claims must say.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.validation.algorithms)
            .field("issuer", &self.validation.iss)
            .field("audience", &self.validation.aud)
            .finish_non_exhaustive()
    }
}

/// What a good token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    pub subject: String,
    /// `name`, else the subject: shown on the page and in presence.
    pub name: String,
    pub expires: SystemTime,
    pub subscribe: Vec<String>,
    pub publish: Vec<String>,
}

#[derive(Deserialize)]
struct Raw {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    name: Option<String>,
    /// Optional here so that jsonwebtoken's own check (it requires `exp`) names what is missing.
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    mercure: Grants,
}

#[derive(Deserialize, Default)]
struct Grants {
    #[serde(default)]
    subscribe: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
}

/// Why a token was refused: said to the client (401), and logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused(pub String);

impl Verifier {
    /// HS256 with a secret shared with whoever makes the tokens.
    pub fn shared_secret(secret: &str) -> Verifier {
        Verifier {
            key: DecodingKey::from_secret(secret.as_bytes()),
            validation: validation(Algorithm::HS256),
        }
    }

    /// RS256 or ES256, from the PEM public key of whoever signs the tokens; which one follows
    /// from the key.
    pub fn public_key(path: &Path) -> Result<Verifier, String> {
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read the key file '{}': {e}", path.display()))?;
        let (key, algorithm) = match DecodingKey::from_rsa_pem(&pem) {
            Ok(key) => (key, Algorithm::RS256),
            Err(_) => match DecodingKey::from_ec_pem(&pem) {
                Ok(key) => (key, Algorithm::ES256),
                Err(_) => {
                    return Err(format!(
                        "'{}' is not a PEM RSA or EC (P-256) public key",
                        path.display()
                    ))
                }
            },
        };
        Ok(Verifier {
            key,
            validation: validation(algorithm),
        })
    }

    pub fn expect_issuer(mut self, issuer: Option<&str>) -> Verifier {
        if let Some(issuer) = issuer {
            self.validation.set_issuer(&[issuer]);
        }
        self
    }

    pub fn expect_audience(mut self, audience: Option<&str>) -> Verifier {
        match audience {
            Some(audience) => self.validation.set_audience(&[audience]),
            // A token may still name an audience; with none configured we do not judge it.
            None => self.validation.validate_aud = false,
        }
        self
    }

    /// The claims of a token we accept, or why not. The algorithm is ours, not the token's:
    /// a token that says `none`, or HS256 signed with our public key as the secret, fails.
    pub fn check(&self, token: &str) -> Result<Claims, Refused> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Refused(format!(
                "the token is {} bytes, more than the {MAX_TOKEN_BYTES} accepted",
                token.len()
            )));
        }
        let data = jsonwebtoken::decode::<Raw>(token, &self.key, &self.validation)
            .map_err(|e| Refused(describe(e.kind(), &self.validation)))?;
        let raw = data.claims;
        let exp = raw
            .exp
            .ok_or_else(|| Refused("the token has no `exp` claim".into()))?;
        let subject = raw.sub.filter(|s| !s.trim().is_empty()).ok_or_else(|| {
            Refused("the token has no subject (`sub`): it must say who it is for".into())
        })?;
        let expires = UNIX_EPOCH + Duration::from_secs(exp);
        // jsonwebtoken counts in whole seconds, so it still takes a token in the second after
        // its `exp`; a stream opened with one ends at `exp` itself, and so does the token.
        if SystemTime::now() >= expires {
            return Err(Refused(describe(
                &ErrorKind::ExpiredSignature,
                &self.validation,
            )));
        }
        Ok(Claims {
            name: raw
                .name
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(|| subject.clone()),
            subject,
            expires,
            subscribe: raw.mercure.subscribe,
            publish: raw.mercure.publish,
        })
    }
}

/// No leeway past `exp` (jsonwebtoken allows 60 s by default): a stream opened with a token
/// ends at its `exp`, so a reconnect with the same token must be refused, or the client would
/// open and lose a stream each second of the leeway instead of renewing its token.
fn validation(algorithm: Algorithm) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.leeway = 0;
    validation
}

fn describe(kind: &ErrorKind, validation: &Validation) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "the token has expired".into(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (`nbf`)".into(),
        ErrorKind::InvalidSignature => "the token's signature does not match our key".into(),
        ErrorKind::InvalidAlgorithm => format!(
            "the token is not signed with {:?}, the only algorithm this server accepts",
            validation.algorithms
        ),
        ErrorKind::InvalidIssuer => "the token's issuer (`iss`) is not the one expected".into(),
        ErrorKind::InvalidAudience => "the token's audience (`aud`) is not this server".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the token has no `{claim}` claim"),
        ErrorKind::Json(_) => "the token's claims are not what this server reads".into(),
        _ => "the token is malformed".into(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    pub const SECRET: &str = "a test secret of thirty-two bytes";

    pub fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    pub fn signed(claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("encode")
    }

    fn verifier() -> Verifier {
        Verifier::shared_secret(SECRET)
            .expect_issuer(Some("https://sign-in.example"))
            .expect_audience(Some("sse-live"))
    }

    fn good() -> serde_json::Value {
        json!({
            "sub": "alice", "name": "Alice", "exp": now() + 600,
            "iss": "https://sign-in.example", "aud": "sse-live",
            "mercure": { "subscribe": ["ops"], "publish": ["chat"] }
        })
    }

    fn refused(token: &str) -> String {
        verifier().check(token).expect_err("refused").0
    }

    #[test]
    fn a_good_token_gives_its_subject_name_expiry_and_grants() {
        let claims = verifier().check(&signed(good())).expect("accepted");
        assert_eq!(claims.subject, "alice");
        assert_eq!(claims.name, "Alice");
        assert_eq!(claims.subscribe, ["ops"]);
        assert_eq!(claims.publish, ["chat"]);
        let left = claims
            .expires
            .duration_since(SystemTime::now())
            .expect("test value");
        assert!(left > Duration::from_secs(590) && left <= Duration::from_secs(600));
    }

    #[test]
    fn a_token_signed_with_another_secret_is_refused() {
        let token = encode(
            &Header::new(Algorithm::HS256),
            &good(),
            &EncodingKey::from_secret(b"another secret, also long enough"),
        )
        .expect("test value");
        assert!(refused(&token).contains("signature"));
    }

    #[test]
    fn wrong_audience_wrong_issuer_and_expiry_are_refused() {
        let mut claims = good();
        claims["aud"] = json!("another-app");
        assert!(refused(&signed(claims)).contains("audience"));
        let mut claims = good();
        claims["iss"] = json!("https://elsewhere.example");
        assert!(refused(&signed(claims)).contains("issuer"));
        let mut claims = good();
        claims["exp"] = json!(now() - 120);
        assert!(refused(&signed(claims)).contains("expired"));
        let mut claims = good();
        claims.as_object_mut().expect("test value").remove("exp");
        let missing = refused(&signed(claims));
        assert!(missing.contains("`exp`"), "{missing}");
    }

    #[test]
    fn the_none_algorithm_and_an_algorithm_switch_are_refused() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let unsigned = format!(
            "{}.{}.",
            b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
            b64.encode(good().to_string())
        );
        assert!(!refused(&unsigned).is_empty());
        let hs512 = encode(
            &Header::new(Algorithm::HS512),
            &good(),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("test value");
        assert!(refused(&hs512).contains("HS256"));
    }

    #[test]
    fn an_oversized_or_malformed_token_is_refused_without_decoding() {
        let mut claims = good();
        claims["padding"] = json!("x".repeat(MAX_TOKEN_BYTES));
        assert!(refused(&signed(claims)).contains("more than"));
        assert!(refused("not a token").contains("malformed"));
        assert!(refused("").contains("malformed"));
    }

    #[test]
    fn a_token_without_a_subject_is_refused() {
        let mut claims = good();
        claims.as_object_mut().expect("test value").remove("sub");
        assert!(refused(&signed(claims)).contains("subject"));
    }

    #[test]
    fn without_an_expected_audience_a_token_naming_one_is_still_accepted() {
        let lenient = Verifier::shared_secret(SECRET).expect_audience(None);
        assert!(lenient.check(&signed(good())).is_ok());
    }
}
