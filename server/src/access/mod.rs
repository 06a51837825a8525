//! Who is asking, and what they may read and publish: the one interface the routes use.
//!
//! Who the viewer is comes from the first of these that applies:
//! 1. the Windows user IIS signed in, forwarded by the ASP.NET Core Module ([`windows`]);
//! 2. a signed token ([`token`]) in `Authorization: Bearer` or, for browsers, a cookie;
//! 3. nobody: an anonymous viewer, admitted or not per `EVENTS_ANONYMOUS`.
//!
//! What they may do is the topic rules' answer ([`rules`]) plus their token's own grants.
//! [`identify`] runs on every request, because a forwarded Windows token is a handle that must
//! be closed on every request that carries one, and leaves the answer in the request; the
//! routes that care take a [`Viewer`] (a refused token becomes their 401) and ask [`Access`].

pub mod rules;
pub mod token;
mod windows;

use crate::{error::ApiError, state::AppState};
use axum::{
    extract::{FromRequestParts, Request, State},
    http::{header, request::Parts, HeaderMap, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
pub use rules::{Action, Rules};
use std::time::SystemTime;
use subtle::ConstantTimeEq;
use token::Verifier;

/// The settings: the rules, how tokens are checked, and whether anonymous viewers are served.
#[derive(Clone, Debug)]
pub struct Access {
    pub rules: Rules,
    /// `None`: no token is believed (no secret or key is set), and none is looked for.
    pub tokens: Option<Verifier>,
    pub anonymous: bool,
    /// The cookie a browser carries its token in.
    pub cookie: String,
    /// The module's pairing token is set, so only the module reaches us and its headers are
    /// believed (`iis::enforce` refuses any request without the token).
    pub module: bool,
}

/// Who is asking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Who {
    Anonymous,
    Token {
        subject: String,
    },
    Windows {
        /// `DOMAIN\name`.
        account: String,
        groups: Vec<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Viewer {
    pub who: Who,
    /// What the page and presence show; `None` for an anonymous viewer.
    pub name: Option<String>,
    /// A token's expiry: a stream opened with it ends then.
    pub expires: Option<SystemTime>,
    subscribe: Vec<String>,
    publish: Vec<String>,
}

impl Viewer {
    pub fn anonymous() -> Viewer {
        Viewer {
            who: Who::Anonymous,
            name: None,
            expires: None,
            subscribe: Vec::new(),
            publish: Vec::new(),
        }
    }

    pub fn token(
        subject: &str,
        name: &str,
        subscribe: Vec<String>,
        publish: Vec<String>,
    ) -> Viewer {
        Viewer {
            who: Who::Token {
                subject: subject.to_string(),
            },
            name: Some(name.to_string()),
            expires: None,
            subscribe,
            publish,
        }
    }

    pub fn windows(account: &str, groups: Vec<String>) -> Viewer {
        Viewer {
            who: Who::Windows {
                account: account.to_string(),
                groups,
            },
            name: Some(account.to_string()),
            expires: None,
            subscribe: Vec::new(),
            publish: Vec::new(),
        }
    }

    fn from_claims(claims: token::Claims) -> Viewer {
        let mut viewer = Viewer::token(
            &claims.subject,
            &claims.name,
            claims.subscribe,
            claims.publish,
        );
        viewer.expires = Some(claims.expires);
        viewer
    }

    /// The token's own grant for this topic (`*` is every topic).
    fn granted(&self, action: Action, topic: &str) -> bool {
        let list = match action {
            Action::Read => &self.subscribe,
            Action::Publish => &self.publish,
        };
        list.iter().any(|t| t == "*" || t == topic)
    }

    /// Who this is, for the log line (the account or subject, never a token).
    pub fn log_name(&self) -> &str {
        match &self.who {
            Who::Anonymous => "anonymous",
            Who::Token { subject } => subject,
            Who::Windows { account, .. } => account,
        }
    }

    /// Names the page's cross-tab channel and lock: tabs of one browser share one stream only
    /// when they are the same viewer, so a tab signed in as someone else never receives what
    /// this viewer may read.
    pub fn scope(&self) -> String {
        match &self.who {
            Who::Anonymous => String::new(),
            Who::Token { subject } => format!("token:{subject}"),
            Who::Windows { account, .. } => format!("windows:{}", account.to_lowercase()),
        }
    }
}

/// What [`identify`] found, left in the request for the routes that care.
#[derive(Clone, Debug)]
pub struct Identity(pub Result<Viewer, String>);

impl Identity {
    /// The viewer, or the 401 for the token it carried.
    pub fn viewer(&self) -> Result<&Viewer, ApiError> {
        self.0.as_ref().map_err(|why| unauthorized(why.clone()))
    }
}

impl Access {
    /// Who the request is from. `Err` is why a token it carried was refused: the request is
    /// then answered 401 by whatever route needs a viewer, never served as anonymous (its
    /// sender meant to be someone).
    pub fn identify(
        &self,
        headers: &HeaderMap,
        publish_key: Option<&str>,
    ) -> Result<Viewer, String> {
        if let Some(handle) = headers.get(windows::HEADER) {
            if !self.module {
                tracing::warn!(
                    "ignored {} on a request that did not come through the ASP.NET Core Module",
                    windows::HEADER
                );
            } else {
                match windows::account(handle.to_str().unwrap_or("")) {
                    Ok((account, groups)) => return Ok(Viewer::windows(&account, groups)),
                    Err(why) if cfg!(windows) => {
                        tracing::error!(error = %why, "the Windows sign-in forwarded by IIS could not be read");
                        return Err(format!("the Windows sign-in could not be read: {why}"));
                    }
                    Err(why) => tracing::warn!(error = %why, "ignored {}", windows::HEADER),
                }
            }
        }
        let Some(verifier) = &self.tokens else {
            return Ok(Viewer::anonymous());
        };
        // The publish key travels the same way; it is not a token.
        let bearer = bearer(headers).filter(|t| !publish_key.is_some_and(|k| is_key(t, k)));
        let token = bearer.or_else(|| cookie(headers, &self.cookie));
        match token {
            Some(token) => verifier
                .check(token)
                .map(Viewer::from_claims)
                .map_err(|refused| refused.0),
            None => Ok(Viewer::anonymous()),
        }
    }

    /// 401 for an anonymous viewer where only known ones are served.
    pub fn admit(&self, viewer: &Viewer) -> Result<(), ApiError> {
        if viewer.who == Who::Anonymous && !self.anonymous {
            return Err(unauthorized(
                "sign in first: this server does not serve anonymous viewers",
            ));
        }
        Ok(())
    }

    pub fn allows(&self, viewer: &Viewer, action: Action, topic: &str) -> bool {
        self.rules.allows(viewer, action, topic)
    }

    /// The topics, of `known`, the viewer may read (or publish on), in `known`'s order.
    pub fn topics(&self, viewer: &Viewer, action: Action, known: &[String]) -> Vec<String> {
        known
            .iter()
            .filter(|t| self.allows(viewer, action, t))
            .cloned()
            .collect()
    }

    /// Why the viewer may not do this: 401 when signing in could help, else 403.
    pub fn refusal(&self, viewer: &Viewer, action: Action, topic: &str) -> ApiError {
        let topic: String = topic.chars().take(64).collect();
        if viewer.who == Who::Anonymous {
            unauthorized(format!(
                "an anonymous viewer may not {} topic '{topic}': sign in or send a token that grants it",
                action.verb()
            ))
        } else {
            ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "{} may not {} topic '{topic}'",
                    viewer.log_name(),
                    action.verb()
                ),
            )
        }
    }
}

pub fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, message)
}

/// What `Authorization: Bearer` carries: a token, or the publish key.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// Whether `given` is the publish key, compared in constant time.
pub fn is_key(given: &str, key: &str) -> bool {
    bool::from(given.trim().as_bytes().ct_eq(key.as_bytes()))
}

/// The named cookie's value, from however many `Cookie` headers there are.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// On every request: who it is from, left in its extensions as an [`Identity`].
pub async fn identify(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let access = &state.config.access;
    let found = access.identify(request.headers(), state.config.publish.key.as_deref());
    if let Err(why) = &found {
        let client = state.client_addr(
            request
                .extensions()
                .get::<axum::extract::ConnectInfo<crate::connection::Peer>>()
                .map(|c| c.0 .0)
                .unwrap_or_else(|| ([0, 0, 0, 0], 0).into()),
            request.headers(),
        );
        tracing::warn!(%client, error = %why, "token refused");
    }
    request.extensions_mut().insert(Identity(found));
    next.run(request).await
}

/// In front of the page: a refused token or an anonymous viewer where none are served gets
/// the 401 instead of a page it could not use.
pub async fn admit_to_page(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let admitted = match request.extensions().get::<Identity>() {
        Some(identity) => identity
            .viewer()
            .and_then(|viewer| state.config.access.admit(viewer)),
        None => Ok(()),
    };
    match admitted {
        Ok(()) => next.run(request).await,
        Err(refusal) => refusal.into_response(),
    }
}

/// A route that needs to know who is asking takes a `Viewer`; a refused token is its 401.
impl<S: Send + Sync> FromRequestParts<S> for Viewer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Viewer, ApiError> {
        match parts.extensions.get::<Identity>() {
            Some(identity) => identity.viewer().cloned(),
            None => Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "no identity: the access layer is not in front of this route",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::token::tests::{now, signed, SECRET};
    use super::*;
    use serde_json::json;

    fn access() -> Access {
        Access {
            rules: Rules::open(),
            tokens: Some(Verifier::shared_secret(SECRET).expect_audience(None)),
            anonymous: false,
            cookie: "events_token".into(),
            module: false,
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).expect("test value"),
                v.parse().expect("test value"),
            );
        }
        h
    }

    fn alice() -> String {
        signed(json!({"sub": "alice", "exp": now() + 60}))
    }

    #[test]
    fn a_token_comes_from_the_bearer_header_or_the_cookie() {
        let a = access();
        let bearer = format!("Bearer {}", alice());
        let viewer = a
            .identify(&headers(&[("authorization", &bearer)]), None)
            .expect("test value");
        assert_eq!(
            viewer.who,
            Who::Token {
                subject: "alice".into()
            }
        );
        assert!(viewer.expires.is_some());
        let cookie = format!("theme=dark; events_token={}; other=1", alice());
        let viewer = a
            .identify(&headers(&[("cookie", &cookie)]), None)
            .expect("test value");
        assert_eq!(viewer.log_name(), "alice");
        assert_eq!(viewer.scope(), "token:alice");
    }

    #[test]
    fn a_bad_token_is_refused_not_taken_for_anonymous() {
        let a = access();
        let err = a
            .identify(&headers(&[("cookie", "events_token=junk")]), None)
            .expect_err("refused");
        assert!(err.contains("malformed"), "{err}");
    }

    #[test]
    fn the_publish_key_as_bearer_is_not_a_token_and_anonymous_may_be_refused() {
        let a = access();
        let viewer = a
            .identify(
                &headers(&[("authorization", "Bearer the-key")]),
                Some("the-key"),
            )
            .expect("test value");
        assert_eq!(viewer.who, Who::Anonymous);
        assert_eq!(
            a.admit(&viewer).expect_err("refused").status,
            StatusCode::UNAUTHORIZED
        );
        let open = Access {
            anonymous: true,
            ..access()
        };
        assert!(open.admit(&viewer).is_ok());
    }

    #[test]
    fn the_windows_header_is_ignored_unless_the_module_sent_it() {
        let a = Access {
            anonymous: true,
            ..access()
        };
        let viewer = a
            .identify(&headers(&[(windows::HEADER, "1a4")]), None)
            .expect("test value");
        assert_eq!(viewer.who, Who::Anonymous);
    }

    #[test]
    fn without_a_verifier_no_token_is_looked_at() {
        let a = Access {
            tokens: None,
            anonymous: true,
            ..access()
        };
        let viewer = a
            .identify(&headers(&[("cookie", "events_token=junk")]), None)
            .expect("test value");
        assert_eq!(viewer.who, Who::Anonymous);
    }

    #[test]
    fn refusals_are_401_for_anonymous_and_403_for_someone_known() {
        let rules = Rules::parse("[topic.ops]\nread = [\"user:bob\"]", &["ops".to_string()])
            .expect("test value");
        let a = Access { rules, ..access() };
        let anonymous = a.refusal(&Viewer::anonymous(), Action::Read, "ops");
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
        let alice = Viewer::token("alice", "Alice", vec![], vec![]);
        let known = a.refusal(&alice, Action::Read, "ops");
        assert_eq!(known.status, StatusCode::FORBIDDEN);
        assert!(known.message.contains("alice may not read topic 'ops'"));
        assert_eq!(
            a.topics(&alice, Action::Read, &["ops".to_string()]),
            Vec::<String>::new()
        );
    }
}
