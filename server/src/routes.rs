//! The router: the stream and publish endpoints, the Leptos page and its server functions,
//! and the client's static files, all under the path base.

use crate::{backend::PageBackend, iis, publish, security, sse, state::AppState};
use app::{api::Backend, shell, App, PathBase};
use axum::{
    extract::DefaultBodyLimit,
    http::{header, request::Parts, HeaderValue},
    middleware,
    routing::{get, post},
    Router,
};
use leptos::prelude::provide_context;
use leptos_axum::{file_and_error_handler_with_context, generate_route_list, LeptosRoutes};
use leptos_router::location::RequestUrl;
use std::sync::Arc;
use tower_http::{compression::CompressionLayer, set_header::SetResponseHeaderLayer};

pub fn router(state: AppState) -> Router {
    let backend = Backend(Arc::new(PageBackend {
        state: state.clone(),
    }));
    let base = state.config.path_base.clone();
    let context = {
        let options = state.leptos.clone();
        move || {
            security::add_page_headers(&options);
            provide_context(backend.clone());
            provide_context(PathBase(base.clone()));
            if let Some(parts) = leptos::prelude::use_context::<Parts>() {
                if !base.is_empty() {
                    // `nest` strips the base from the URI, but the page's router matches the
                    // full path (the browser's location): give it back for rendering.
                    let rest = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                    provide_context(RequestUrl::new(&format!("http://leptos.dev{base}{rest}")));
                }
            }
        }
    };
    let routes = generate_route_list(App);
    // JSON may escape each byte of text into six (`\u0000`): room for the longest valid text.
    let publish_limit = state.config.max_text.saturating_mul(6).saturating_add(1024);

    let app = Router::new()
        .route("/api/events", get(sse::events))
        .route(
            "/api/publish",
            post(publish::publish).layer(DefaultBodyLimit::max(publish_limit)),
        )
        .leptos_routes_with_context(&state, routes, context.clone(), {
            let options = state.leptos.clone();
            move || shell(options.clone())
        })
        .fallback(file_and_error_handler_with_context::<AppState, _>(
            context, shell,
        ))
        // tower-http's default predicate never compresses `text/event-stream`, so the stream
        // is not held back by a compressor; pages and the .wasm are.
        .layer(CompressionLayer::new())
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .with_state(state.clone());

    let app = match state.config.path_base.as_str() {
        "" => app,
        base => Router::new().nest(base, app),
    };
    let contract = Arc::new(iis::Contract {
        token: state.config.token.clone(),
        path_base: state.config.path_base.clone(),
        shutdown: state.shutdown.clone(),
    });
    // Around the router, not inside it (`Router::layer` runs after routing): the token is
    // checked before anything else, as ASP.NET Core does, and the path base is made canonical
    // before it is routed.
    let contract = middleware::from_fn_with_state(contract, iis::enforce);
    Router::new().fallback_service(tower::Layer::layer(&contract, app))
}
