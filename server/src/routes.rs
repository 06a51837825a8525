//! The router: the stream and publish endpoints, the Leptos page and its form, the operator's
//! figures and the client's static files, all under the path base.

use crate::{
    access, cors, iis, metrics, page::PageBackend, presence, publish, security, state::AppState,
    stream,
};
use app::{api::Backend, not_found, shell, Instance, PathBase};
use axum::{
    extract::DefaultBodyLimit,
    http::{header, HeaderValue, StatusCode},
    middleware,
    routing::{get, post},
    Router,
};
use leptos::prelude::provide_context;
use leptos_axum::{file_and_error_handler_with_context, render_app_to_stream_with_context};
use std::sync::Arc;
use tower_http::{
    compression::CompressionLayer, set_header::SetResponseHeaderLayer, timeout::TimeoutLayer,
};

pub fn router(state: AppState) -> Router {
    let backend = Backend(Arc::new(PageBackend {
        state: state.clone(),
    }));
    let base = state.config.iis.path_base.clone();
    let instance = Instance(state.config.site.instance.clone());
    let context = {
        let options = state.leptos.clone();
        move || {
            security::add_page_headers(&options);
            provide_context(backend.clone());
            provide_context(PathBase(base.clone()));
            provide_context(instance.clone());
        }
    };
    // Leptos spawns its rendering tasks on this executor; with no router in the app nothing
    // else sets it up. A second call, as in tests that build several routers, is a harmless
    // error.
    let _ = any_spawner::Executor::init_tokio();
    // One page, so no router in the app: the page is the root of the path base, anything
    // else that is not a file is 404.
    let page = render_app_to_stream_with_context(context.clone(), {
        let options = state.leptos.clone();
        move || shell((*options).clone())
    });
    // JSON may escape each byte of text into six (`\u0000`): room for the longest valid text.
    let publish_limit = state
        .config
        .hub
        .max_text
        .saturating_mul(6)
        .saturating_add(1024);

    let mut stream = get(stream::events);
    let mut publish = post(publish::api).layer(DefaultBodyLimit::max(publish_limit));
    let mut watching = get(presence::route::api);
    if let Some(cors) = cors::Cors::new(&state.config.site.cors_origins) {
        // On the method routers, so preflight `OPTIONS` is answered instead of a 405.
        let only_listed = middleware::from_fn_with_state(cors.allowed, cors::only_listed);
        stream = stream.layer(cors.layer.clone()).layer(only_listed.clone());
        watching = watching
            .layer(cors.layer.clone())
            .layer(only_listed.clone());
        publish = publish.layer(cors.layer).layer(only_listed);
    }

    let mut timed = Router::new()
        .route(
            "/",
            get(page).layer(middleware::from_fn_with_state(
                state.clone(),
                access::admit_to_page,
            )),
        )
        .route("/api/publish", publish)
        .route("/api/presence", watching)
        .route(
            app::api::FORM_PATH,
            post(publish::form).layer(DefaultBodyLimit::max(publish_limit)),
        );
    if state.metrics.is_some() {
        timed = timed.route("/metrics", get(metrics::render));
    }
    let timed = timed
        .fallback(file_and_error_handler_with_context::<AppState, _>(
            context, not_found,
        ))
        // A bound on how long anything but the stream may take to answer (a stuck render, a
        // publisher that trickles its body). It covers everything added above, the fallback
        // included, and not the stream, which is routed below: a stream is meant to last for
        // hours, and what bounds a dead one is the heartbeat and the write deadline.
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            state.config.connections.request_timeout,
        ));

    let app = Router::new()
        .route("/api/events", stream)
        .merge(timed)
        // tower-http's default predicate never compresses `text/event-stream`, so the stream
        // is not held back by a compressor; pages and the .wasm are.
        .layer(CompressionLayer::new())
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .with_state(state.clone());

    let app = match state.config.iis.path_base.as_str() {
        "" => app,
        base => Router::new().nest(base, app),
    };
    // Every request, whatever it asks for: a forwarded Windows sign-in is a handle that must
    // be closed on each request that carries one.
    let app = app.layer(middleware::from_fn_with_state(
        state.clone(),
        access::identify,
    ));
    let contract = Arc::new(iis::Contract {
        token: state.config.iis.token.clone(),
        path_base: state.config.iis.path_base.clone(),
        shutdown: state.shutdown.clone(),
    });
    // Around the router, not inside it (`Router::layer` runs after routing): the token is
    // checked before anything else, as ASP.NET Core does, and the path base is made canonical
    // before it is routed.
    let contract = middleware::from_fn_with_state(contract, iis::enforce);
    Router::new().fallback_service(tower::Layer::layer(&contract, app))
}
