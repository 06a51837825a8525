//! The live view, shared by both builds: compiled with `ssr` into the server, which renders it,
//! and with `hydrate` into the WebAssembly client, which takes the rendered page over and keeps
//! it live.
//!
//! One page, so no router: the server renders [`shell`] at the path base and writes what the
//! page loads ([`event::PageData`]) into `<script id="page-data">`; the client reads it back
//! before hydrating, so both render the same rows.

pub mod api;
pub mod buffering;
pub mod event;
#[cfg(feature = "hydrate")]
pub mod json;
pub mod stream;
mod views;

use event::PageData;
use leptos::prelude::*;

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

/// The HTML document. The server calls it for the page; the client hydrates `<body>` only.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    let base = path_base();
    let instance = use_context::<Instance>().unwrap_or_default().0;
    // The stylesheet cargo-leptos writes beside the client: named by the same settings as the
    // client's .js and .wasm (LEPTOS_SITE_PKG_DIR, LEPTOS_OUTPUT_NAME), so a rename keeps them together.
    let css = stylesheet(&base, &options);
    let data = api::page_data();
    let data_json = data.as_ref().map(event::page_data_json).unwrap_or_default();
    if let Some(data) = data {
        provide_context(data);
    }
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <meta name="path-base" content=base.clone()/>
                <meta name="instance" content=instance/>
                <title>"Live events"</title>
                <link rel="icon" type="image/svg+xml" href=format!("{base}/favicon.svg")/>
                <link rel="stylesheet" id="leptos" href=css/>
                <script type="application/json" id="page-data" inner_html=data_json></script>
                <AutoReload options=options.clone()/>
                <HydrationScripts options root=base/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

/// `{base}/{pkg dir}/{output name}.css`.
fn stylesheet(base: &str, options: &LeptosOptions) -> String {
    format!(
        "{base}/{}/{}.css",
        options.site_pkg_dir, options.output_name
    )
}

/// The document for a path that is not the page (the server answers it with 404).
pub fn not_found(options: LeptosOptions) -> impl IntoView {
    let base = path_base();
    let css = stylesheet(&base, &options);
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <title>"Not found"</title>
                <link rel="stylesheet" href=css/>
            </head>
            <body>
                <p class="not-found">"Page not found. "<a href=format!("{base}/")>"The live view"</a></p>
            </body>
        </html>
    }
}

#[component]
pub fn App() -> impl IntoView {
    let data = use_context::<PageData>();
    view! { <views::LivePage data/> }
}

/// The WebAssembly entry point, called by the script that `HydrationScripts` renders.
#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    // Panic messages in the console in debug builds. The release client (panic = "abort") goes
    // without the hook and its formatting, 0.7 KB gzip of a budget of 100 KB: a panic there
    // shows as `RuntimeError: unreachable`, and the debug build tells what it was.
    #[cfg(debug_assertions)]
    console_error_panic_hook::set_once();
    let document = leptos::prelude::document();
    let meta = |name: &str| {
        document
            .query_selector(&format!("meta[name={name}]"))
            .ok()
            .flatten()
            .and_then(|m| m.get_attribute("content"))
            .unwrap_or_default()
    };
    let base = meta("path-base");
    let instance = Instance(meta("instance"));
    let data = document
        .get_element_by_id("page-data")
        .and_then(|e| e.text_content())
        .and_then(|text| json::page_data(&text));
    leptos::mount::hydrate_body(move || {
        provide_context(PathBase(base));
        provide_context(instance);
        if let Some(data) = data {
            provide_context(data);
        }
        view! { <App/> }
    });
}
