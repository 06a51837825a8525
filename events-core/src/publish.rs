//! The body of `POST /api/publish` and its answer.

use serde::{Deserialize, Serialize};

/// `{"topic": "...", "text": "..."}`; anything else in it is refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    pub topic: String,
    pub text: String,
}

#[derive(Serialize)]
pub struct Published {
    pub id: u64,
    pub topic: String,
    pub sent_ms: u64,
}
