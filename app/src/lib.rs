//! The live view, shared by both builds: compiled with `ssr` into the server, which renders it,
//! and with `hydrate` into the WebAssembly client, which takes the rendered page over and keeps
//! it live.

pub mod api;
pub mod buffering;
pub mod event;
pub mod stream;
mod views;

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, MetaTags, Stylesheet, Title};
use leptos_router::{
    components::{Route, Router, Routes},
    SsrMode, StaticSegment,
};

/// The application's path base: `""` at the site root, `/live` when IIS hosts it as an
/// application under that path. Every URL the page builds starts with it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PathBase(pub String);

pub fn path_base() -> String {
    use_context::<PathBase>().map(|b| b.0).unwrap_or_default()
}

/// The name of the server instance that rendered the page (`EVENTS_INSTANCE`). The server
/// writes it into `<meta name="instance">`; the client reads it back from there.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Instance(pub String);

/// The HTML document. The server calls it for every page; the client hydrates `<body>` only.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    let base = path_base();
    let instance = use_context::<Instance>().unwrap_or_default().0;
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <meta name="path-base" content=base.clone()/>
                <meta name="instance" content=instance/>
                <link rel="icon" type="image/svg+xml" href=format!("{base}/favicon.svg")/>
                <AutoReload options=options.clone()/>
                <HydrationScripts options root=base/>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    let base = path_base();
    view! {
        <Stylesheet id="leptos" href=format!("{base}/pkg/sse-live.css")/>
        <Title text="Live events"/>
        <Router base=base>
            <Routes fallback=|| view! { <p class="not-found">"Page not found."</p> }>
                // Async: the server sends the page with the recent events already in it.
                <Route path=StaticSegment("") view=views::LivePage ssr=SsrMode::Async/>
            </Routes>
        </Router>
    }
}

/// The WebAssembly entry point, called by the script that `HydrationScripts` renders.
#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    let base = read_meta("path-base");
    let instance = Instance(read_meta("instance"));
    if !base.is_empty() {
        // Server functions post to `{base}/api/...` under an IIS application.
        let _ = server_fn::client::try_set_server_url(Box::leak(base.clone().into_boxed_str()));
    }
    leptos::mount::hydrate_body(move || {
        provide_context(PathBase(base));
        provide_context(instance);
        view! { <App/> }
    });
}

/// What the server wrote into `<meta name=...>` (the path base, so both render the same URLs;
/// the instance name).
#[cfg(feature = "hydrate")]
fn read_meta(name: &str) -> String {
    leptos::prelude::document()
        .query_selector(&format!("meta[name={name}]"))
        .ok()
        .flatten()
        .and_then(|m| m.get_attribute("content"))
        .unwrap_or_default()
}
