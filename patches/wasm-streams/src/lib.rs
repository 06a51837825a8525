//! Stands in for the `wasm-streams` crate in this workspace (`[patch.crates-io]` in the root
//! `Cargo.toml`).
//!
//! Why: Leptos always turns on `server_fn/browser`, which depends on `wasm-streams`, and that
//! crate's `#[wasm_bindgen]` classes (`IntoUnderlyingSource`, `IntoUnderlyingByteSource`,
//! `IntoUnderlyingSink`) are exports, so they and everything they reach stay in the client
//! whether anything uses them or not: 6.8 KB of the wasm and 0.7 KB of its js loader, gzip,
//! measured, in a page whose budget is 100 KB for both. This page has no server functions
//! (its form posts to a plain endpoint), so nothing calls into them; `wasm-opt` cannot drop
//! exports that the function table keeps alive.
//!
//! What is here is exactly what `server_fn` 0.8 names: [`ReadableStream::from_raw`] and
//! [`ReadableStream::into_stream`] (reading a response body as a stream: works, through the
//! browser's own reader), [`ReadableStream::into_raw`], and [`ReadableStream::from_stream`]
//! (a streaming request body), which throws: a server function with a streaming request would
//! fail loudly, not silently. A Leptos upgrade that needs more of the API fails to compile
//! here; then compare with upstream wasm-streams and drop or extend this crate.

pub mod readable {
    use futures_util::{ready, Stream};
    use std::{
        future::Future,
        pin::Pin,
        task::{Context, Poll},
    };
    use wasm_bindgen::{JsCast, JsValue};
    use wasm_bindgen_futures::JsFuture;

    pub mod sys {
        pub use web_sys::ReadableStream;
    }

    /// A browser `ReadableStream`.
    pub struct ReadableStream {
        raw: sys::ReadableStream,
    }

    impl ReadableStream {
        pub fn from_raw(raw: sys::ReadableStream) -> Self {
            ReadableStream { raw }
        }

        /// Streaming request bodies: not in this stand-in (see the crate's doc).
        pub fn from_stream<St>(_stream: St) -> Self
        where
            St: Stream<Item = Result<JsValue, JsValue>> + 'static,
        {
            wasm_bindgen::throw_str(
                "wasm-streams stand-in (patches/wasm-streams): a streaming request body is not supported",
            )
        }

        pub fn into_raw(self) -> sys::ReadableStream {
            self.raw
        }

        /// The stream's chunks, read one at a time with the browser's default reader.
        pub fn into_stream(self) -> IntoStream {
            let reader: web_sys::ReadableStreamDefaultReader =
                self.raw.get_reader().unchecked_into();
            IntoStream {
                reader: Some(reader),
                read: None,
            }
        }
    }

    pub struct IntoStream {
        /// `None` once the stream ended or failed.
        reader: Option<web_sys::ReadableStreamDefaultReader>,
        read: Option<JsFuture>,
    }

    impl Stream for IntoStream {
        type Item = Result<JsValue, JsValue>;

        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            let this = &mut *self;
            let Some(reader) = &this.reader else {
                return Poll::Ready(None);
            };
            let read = this
                .read
                .get_or_insert_with(|| JsFuture::from(reader.read()));
            let result = ready!(Pin::new(read).poll(cx));
            this.read = None;
            let field = |v: &JsValue, k: &str| js_sys::Reflect::get(v, &JsValue::from_str(k));
            match result {
                Ok(chunk) => {
                    let done = field(&chunk, "done")
                        .ok()
                        .and_then(|d| d.as_bool())
                        .unwrap_or(true);
                    if done {
                        this.reader = None;
                        Poll::Ready(None)
                    } else {
                        Poll::Ready(Some(Ok(
                            field(&chunk, "value").unwrap_or(JsValue::UNDEFINED)
                        )))
                    }
                }
                Err(e) => {
                    this.reader = None;
                    Poll::Ready(Some(Err(e)))
                }
            }
        }
    }
}

pub use readable::ReadableStream;
