//! The event model (from `events-core`, shared with the server) and what the page loads.

pub use events_core::event::*;
use serde::{Deserialize, Serialize};

/// What the page needs to render and then go live. The server writes it into the page as JSON
/// (`<script type="application/json" id="page-data">`); the client reads it back to hydrate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PageData {
    /// Topics this viewer may read; the client listens for exactly these event names.
    pub topics: Vec<String>,
    /// Topics this viewer may publish on: the form offers these.
    pub publish_topics: Vec<String>,
    /// Who the server takes the viewer to be (a Windows account, a token's name); `None`:
    /// anonymous.
    pub viewer: Option<String>,
    /// Names the browser's shared stream: tabs share one only when they are the same viewer.
    pub scope: String,
    /// The most recent events, oldest first, already in the server-rendered page.
    pub events: Vec<LiveEvent>,
    /// How many rows the live list keeps.
    pub max_rows: usize,
    /// The application's path base (`""` at the site root, `/live` under an IIS application).
    pub base: String,
    /// Why the form post that led here was refused (a form posted without JavaScript comes
    /// back to the page with its error).
    pub form_error: Option<String>,
    /// Who was watching when the page was rendered; `presence` events update it.
    #[serde(default)]
    pub presence: Presence,
}

/// The page data as JSON that is safe inside `<script>`: no `<` can end the element early.
pub fn page_data_json(data: &PageData) -> String {
    serde_json::to_string(data)
        .unwrap_or_default()
        .replace('<', "\\u003c")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_data_cannot_close_its_script() {
        let data = PageData {
            topics: vec!["chat".into()],
            publish_topics: vec!["chat".into()],
            viewer: Some("</script>".into()),
            scope: "token:</script>".into(),
            events: vec![LiveEvent {
                id: 1,
                topic: "chat".into(),
                text: "</script><script>alert(1)</script>".into(),
                sent_ms: 2,
            }],
            max_rows: 10,
            base: String::new(),
            form_error: None,
            presence: Presence {
                watching: 2,
                names: vec!["</script>".into()],
            },
        };
        let json = page_data_json(&data);
        assert!(!json.contains('<'), "{json}");
        assert_eq!(
            serde_json::from_str::<PageData>(&json).expect("parses"),
            data
        );
    }
}
