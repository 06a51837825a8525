//! The two browser APIs the tabs coordinate with, as small owned wrappers that undo
//! themselves when dropped: the application's `BroadcastChannel` and its Web Lock.

use super::{leader::Input, relay::Relay};
use futures::channel::mpsc::UnboundedSender;
use std::{cell::RefCell, rc::Rc};
use wasm_bindgen::{prelude::Closure, JsCast, JsValue};

/// The `BroadcastChannel` of this application's tabs.
pub(super) struct Channel {
    channel: web_sys::BroadcastChannel,
    _on_message: Closure<dyn FnMut(web_sys::MessageEvent)>,
}

impl Channel {
    /// `None` where the browser has no `BroadcastChannel`.
    pub(super) fn open(name: &str, tx: UnboundedSender<Input>) -> Option<Self> {
        let channel = web_sys::BroadcastChannel::new(name).ok()?;
        let on_message =
            Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |e: web_sys::MessageEvent| {
                match Relay::from_js(&e.data()) {
                    Some(relay) => {
                        let _ = tx.unbounded_send(Input::Relay(relay));
                    }
                    // Another version of the page, during a deployment: not ours to read.
                    None => leptos::logging::warn!("ignoring a message from another tab"),
                }
            });
        channel.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        Some(Channel {
            channel,
            _on_message: on_message,
        })
    }

    pub(super) fn post(&self, relay: &Relay) {
        let _ = self.channel.post_message(&relay.to_js());
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        self.channel.set_onmessage(None);
        self.channel.close();
    }
}

/// A request for the Web Lock, held from its grant until this is dropped. Through
/// `js_sys::Reflect` because web-sys exposes the Web Locks API only behind
/// `--cfg=web_sys_unstable_apis`.
pub(super) struct Lock {
    release: Rc<RefCell<Option<js_sys::Function>>>,
}

impl Lock {
    /// Queues the request; `Input::Lead` arrives when it is granted. `None` where the browser
    /// has no `navigator.locks`.
    pub(super) fn request(name: &str, tx: UnboundedSender<Input>) -> Option<Self> {
        let get = |target: &JsValue, key: &str| {
            js_sys::Reflect::get(target, &JsValue::from_str(key))
                .ok()
                .filter(|v| !v.is_undefined() && !v.is_null())
        };
        let navigator = get(web_sys::window()?.as_ref(), "navigator")?;
        let locks = get(&navigator, "locks")?;
        let request: js_sys::Function = get(&locks, "request")?.dyn_into().ok()?;

        let release = Rc::new(RefCell::new(None));
        let slot = release.clone();
        let granted_tx = tx.clone();
        // Owned by JavaScript and freed when called, so a grant that comes after this tab's
        // component is gone finds no dangling closure: it returns at once, releasing the lock.
        let on_grant = Closure::once_into_js(move |_lock: JsValue| -> JsValue {
            if granted_tx.unbounded_send(Input::Lead).is_err() {
                return JsValue::UNDEFINED;
            }
            // Held until this promise resolves: until `Lock` is dropped, or the tab goes.
            js_sys::Promise::new(&mut |resolve, _reject| {
                *slot.borrow_mut() = Some(resolve);
            })
            .into()
        });
        let pending = request
            .call2(&locks, &JsValue::from_str(name), &on_grant)
            .ok()?;
        // Should the request ever fail, this tab leads alone rather than wait for nothing.
        let on_fail = Closure::once_into_js(move |e: JsValue| {
            // The error itself goes to the console as an object (no Debug formatting in the wasm).
            web_sys::console::warn_2(
                &"the Web Lock request failed; this tab streams alone:".into(),
                &e,
            );
            let _ = tx.unbounded_send(Input::Lead);
        });
        if let Some(catch) =
            get(&pending, "catch").and_then(|c| c.dyn_into::<js_sys::Function>().ok())
        {
            let _ = catch.call1(&pending, &on_fail);
        }
        Some(Lock { release })
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if let Some(resolve) = self.release.borrow_mut().take() {
            let _ = resolve.call0(&JsValue::UNDEFINED);
        }
    }
}
