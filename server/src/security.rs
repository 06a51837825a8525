//! Response headers that keep the page to itself: a Content-Security-Policy built around
//! Leptos' per-response nonce, and `nosniff` everywhere.

use axum::http::{header, HeaderValue};
use leptos::config::LeptosOptions;
use leptos_axum::ResponseOptions;

/// The page's policy. Scripts: our own files and the inline hydration script that carries
/// this response's nonce; `'wasm-unsafe-eval'` lets the client compile its WebAssembly.
/// `connect-src 'self'` is all the client needs (the stream, the form's fetch); under
/// `cargo leptos watch` the live-reload socket is added.
pub fn content_security_policy(nonce: &str, options: &LeptosOptions) -> String {
    let mut connect = String::from("'self'");
    if std::env::var_os("LEPTOS_WATCH").is_some() {
        let port = options.reload_external_port.unwrap_or(options.reload_port);
        connect.push_str(&format!(" ws://{}:{port}", options.site_addr.ip()));
    }
    format!(
        "default-src 'self'; script-src 'self' 'nonce-{nonce}' 'wasm-unsafe-eval'; \
         style-src 'self'; img-src 'self' data:; connect-src {connect}; object-src 'none'; \
         base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
}

/// Called in the Leptos context of every rendered page.
pub fn add_page_headers(options: &LeptosOptions) {
    let (Some(nonce), Some(response)) = (
        leptos::nonce::use_nonce(),
        leptos::prelude::use_context::<ResponseOptions>(),
    ) else {
        return;
    };
    if let Ok(value) = HeaderValue::from_str(&content_security_policy(&nonce, options)) {
        response.insert_header(header::CONTENT_SECURITY_POLICY, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_names_the_nonce_and_nothing_broader_than_self() {
        let options = LeptosOptions::builder().output_name("x").build();
        let csp = content_security_policy("abc", &options);
        assert!(csp.contains("script-src 'self' 'nonce-abc' 'wasm-unsafe-eval'"));
        assert!(csp.contains("connect-src 'self';"));
        assert!(!csp.contains('*'));
    }
}
