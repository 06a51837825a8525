//! Hidden pages: the leader lets the stream go when every tab of the view has been hidden for
//! a while, and resumes it from the last id as soon as one of them is visible again.
//!
//! A hidden tab costs the server a connection and the browser a wake-up per event for rows
//! nobody looks at; a dashboard left open in a background tab all weekend is the common case.
//! Resuming is cheap (the server replays what was missed), so the stream is released once
//! nobody has looked for [`DEFAULT_HIDDEN_RELEASE_MS`].
//!
//! # Configuration
//! The delay comes from the page URL's query: `?hidden_release_ms=60000` releases after a
//! minute, `?hidden_release_ms=0` releases as soon as every tab is hidden, and
//! `?hidden_release_ms=off` never releases. Without it, or with a value that does not parse,
//! it is ten minutes. The leader tab's own URL decides (the tabs of one browser normally share
//! it).
//!
//! Tabs report their visibility over the leader's channel; a tab that closes says so
//! (`pagehide`). A tab that vanished without a word keeps counting as it was last seen, so a
//! crash can only keep a stream open, never lose one.

/// Ten minutes.
pub const DEFAULT_HIDDEN_RELEASE_MS: u32 = 10 * 60 * 1000;

/// The query parameter that sets the delay.
pub const QUERY_PARAM: &str = "hidden_release_ms";

/// The release delay from the query parameter's value (`None` when the URL has none):
/// `Some(ms)`, or `None` for "never". In the browser, `URLSearchParams` finds the value.
pub fn hidden_release_from_value(value: Option<&str>) -> Option<u32> {
    match value.map(str::trim) {
        None => Some(DEFAULT_HIDDEN_RELEASE_MS),
        Some("off") | Some("never") => None,
        Some(v) => Some(v.parse().unwrap_or(DEFAULT_HIDDEN_RELEASE_MS)),
    }
}

/// What the leader knows about who is looking: its own tab, and the other tabs by id (a few
/// tabs: a list is smaller in the client than a map).
#[derive(Debug)]
pub struct Viewers {
    own: bool,
    others: Vec<(String, bool)>,
}

impl Viewers {
    pub fn new(own_visible: bool) -> Self {
        Viewers {
            own: own_visible,
            others: Vec::new(),
        }
    }

    pub fn set_own(&mut self, visible: bool) {
        self.own = visible;
    }

    pub fn set(&mut self, tab: &str, visible: bool) {
        match self.others.iter_mut().find(|(t, _)| t == tab) {
            Some((_, v)) => *v = visible,
            None => self.others.push((tab.to_string(), visible)),
        }
    }

    pub fn gone(&mut self, tab: &str) {
        self.others.retain(|(t, _)| t != tab);
    }

    /// True when no tab of the view is visible.
    pub fn all_hidden(&self) -> bool {
        !self.own && !self.others.iter().any(|(_, v)| *v)
    }
}

#[cfg(feature = "hydrate")]
pub(super) use browser::*;

#[cfg(feature = "hydrate")]
mod browser {
    use wasm_bindgen::{prelude::Closure, JsCast, JsValue};

    /// `document.visibilityState` is not `"hidden"`. Read through the object rather than the
    /// prototype's getter, so a page (or a test) that overrides it is believed. Visible when
    /// the browser cannot tell.
    pub fn is_visible() -> bool {
        let Some(document) = web_sys::window().and_then(|w| w.document()) else {
            return true;
        };
        js_sys::Reflect::get(&document, &JsValue::from_str("visibilityState"))
            .ok()
            .and_then(|v| v.as_string())
            .is_none_or(|v| v != "hidden")
    }

    /// The release delay configured for this page (see the module documentation).
    pub fn hidden_release_ms() -> Option<u32> {
        let value = web_sys::window()
            .and_then(|w| w.location().search().ok())
            .and_then(|search| web_sys::UrlSearchParams::new_with_str(&search).ok())
            .and_then(|params| params.get(super::QUERY_PARAM));
        super::hidden_release_from_value(value.as_deref())
    }

    type Listener = (web_sys::EventTarget, &'static str, Closure<dyn FnMut()>);

    /// Calls `on_change(visible)` on every `visibilitychange`, and `on_leave()` on `pagehide`,
    /// for as long as it is kept.
    pub struct Watch {
        listeners: Vec<Listener>,
    }

    impl Watch {
        pub fn new(on_change: impl Fn(bool) + 'static, on_leave: impl Fn() + 'static) -> Self {
            let mut watch = Watch {
                listeners: Vec::new(),
            };
            let Some(window) = web_sys::window() else {
                return watch;
            };
            if let Some(document) = window.document() {
                watch.listen(
                    document.into(),
                    "visibilitychange",
                    Closure::new(move || on_change(is_visible())),
                );
            }
            watch.listen(window.into(), "pagehide", Closure::new(on_leave));
            watch
        }

        fn listen(
            &mut self,
            target: web_sys::EventTarget,
            name: &'static str,
            f: Closure<dyn FnMut()>,
        ) {
            if target
                .add_event_listener_with_callback(name, f.as_ref().unchecked_ref())
                .is_ok()
            {
                self.listeners.push((target, name, f));
            }
        }
    }

    impl Drop for Watch {
        fn drop(&mut self) {
            for (target, name, f) in &self.listeners {
                let _ =
                    target.remove_event_listener_with_callback(name, f.as_ref().unchecked_ref());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_comes_from_the_query_value() {
        let release = hidden_release_from_value;
        assert_eq!(release(None), Some(DEFAULT_HIDDEN_RELEASE_MS));
        assert_eq!(release(Some("1500")), Some(1500));
        assert_eq!(release(Some(" 0 ")), Some(0));
        assert_eq!(release(Some("off")), None);
        assert_eq!(release(Some("never")), None);
        assert_eq!(release(Some("soon")), Some(DEFAULT_HIDDEN_RELEASE_MS));
        assert_eq!(release(Some("")), Some(DEFAULT_HIDDEN_RELEASE_MS));
    }

    #[test]
    fn hidden_only_when_nobody_looks() {
        let mut v = Viewers::new(true);
        assert!(!v.all_hidden());
        v.set_own(false);
        assert!(v.all_hidden());
        v.set("b", true);
        assert!(!v.all_hidden());
        v.set("b", false);
        v.set("c", false);
        assert!(v.all_hidden());
        v.set("c", true);
        v.gone("c");
        assert!(v.all_hidden());
    }
}
