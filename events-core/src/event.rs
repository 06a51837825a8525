//! The one event type that travels from the publisher through the hub and the stream to every
//! browser, the stream's control events, and the rules for topic names. Server and client
//! both (de)serialise these with serde, so the format is defined in exactly one place.

use serde::{Deserialize, Serialize};

/// One published event, as carried in the `data:` field of the stream (compact JSON).
///
/// `id` doubles as the SSE `id:`; it only grows, also across restarts of the server (see the
/// hub), so a `Last-Event-ID` from an earlier process is recognised instead of being mistaken
/// for a position in this one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveEvent {
    pub id: u64,
    pub topic: String,
    pub text: String,
    /// When the server published it, in Unix milliseconds: the browser shows its own clock
    /// minus this as the delivery delay.
    pub sent_ms: u64,
}

/// Sent once per connection after any replay: tells the client where the stream stands, so a
/// client that has received no event yet can still resume exactly (its `id:` is `head`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    /// The newest id the server had issued when this connection started.
    pub head: u64,
    /// How often the server sends a keep-alive, so a client can tell a held stream from a quiet one.
    pub heartbeat_ms: u64,
    /// The server instance this stream is connected to (`EVENTS_INSTANCE`): with several
    /// instances behind a load balancer, the page shows which one it streams from.
    #[serde(default)]
    pub instance: String,
}

/// Sent before a replay that cannot continue where the client stopped: the client's id is older
/// than the history, or from another server process. The client must treat what it holds as
/// possibly incomplete; the full history follows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reset {
    /// What the client asked to resume from, as it sent it.
    pub requested: String,
    /// The oldest id the server still holds, if any.
    pub oldest: Option<u64>,
    pub head: u64,
}

/// The names of the stream's control events. Topics may not use them.
pub const READY_EVENT: &str = "ready";
pub const RESET_EVENT: &str = "reset";
/// The keep-alive. A named event rather than an SSE comment because comments are invisible to
/// the browser's EventSource API, and the client's watchdog must see the stream breathe to
/// tell a quiet stream from one that something in between is holding. It carries no `id:`, so
/// it does not move the client's resume position; it costs 20 bytes per interval.
pub const PING_EVENT: &str = "ping";
/// The last event of a stream opened with a token, at the token's expiry: the client renews
/// its token and reconnects from its last id. No `id:`, as `ping`.
pub const EXPIRED_EVENT: &str = "expired";
/// Who is watching, sent to streams that ask for it (`?presence=1`) when it changes. No `id:`:
/// it is not history, and it does not move the client's resume position.
pub const PRESENCE_EVENT: &str = "presence";

/// The `presence` event's data, and the page's first figure.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    /// Open streams, on every instance: one per browser for the page (its tabs share one).
    pub watching: u64,
    /// The signed-in watchers' names, sorted, at most [`MAX_PRESENCE_NAMES`]; empty unless
    /// the server is set to show them (`EVENTS_PRESENCE_NAMES=on`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
}

/// The most names a `presence` event carries: it goes to every watching page at each change,
/// so a crowd of ten thousand must not make it ten thousand names long.
pub const MAX_PRESENCE_NAMES: usize = 50;

/// Longest topic name accepted.
pub const MAX_TOPIC_LEN: usize = 32;

/// Why a topic name is refused. The message is shown to whoever sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TopicError {
    Empty,
    TooLong,
    BadChar(char),
    Reserved,
}

impl std::fmt::Display for TopicError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TopicError::Empty => write!(f, "topic must not be empty"),
            TopicError::TooLong => write!(f, "topic is longer than {MAX_TOPIC_LEN} characters"),
            TopicError::BadChar(c) => write!(
                f,
                "topic contains {c:?}; use letters, digits, '-', '_' and '.' only"
            ),
            TopicError::Reserved => write!(
                f,
                "topic names 'ready', 'reset', 'ping', 'expired' and 'message' are reserved"
            ),
        }
    }
}

impl std::error::Error for TopicError {}

/// A topic becomes the SSE `event:` field and a DOM listener name, so it is kept to a small,
/// safe alphabet: nothing in it can end a line or inject another field.
pub fn validate_topic(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong);
    }
    if let Some(c) = topic
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(TopicError::BadChar(c));
    }
    if [
        READY_EVENT,
        RESET_EVENT,
        PING_EVENT,
        EXPIRED_EVENT,
        PRESENCE_EVENT,
        "message",
    ]
    .contains(&topic)
    {
        return Err(TopicError::Reserved);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_a_safe_alphabet() {
        assert_eq!(validate_topic("chat"), Ok(()));
        assert_eq!(validate_topic("build.v2-ok_1"), Ok(()));
        assert_eq!(validate_topic(""), Err(TopicError::Empty));
        assert_eq!(
            validate_topic(&"a".repeat(MAX_TOPIC_LEN + 1)),
            Err(TopicError::TooLong)
        );
        assert_eq!(validate_topic("a\nb"), Err(TopicError::BadChar('\n')));
        assert_eq!(validate_topic("a b"), Err(TopicError::BadChar(' ')));
        assert_eq!(validate_topic("é"), Err(TopicError::BadChar('é')));
        assert_eq!(validate_topic("ready"), Err(TopicError::Reserved));
        assert_eq!(validate_topic("message"), Err(TopicError::Reserved));
        assert_eq!(validate_topic("ping"), Err(TopicError::Reserved));
    }

    #[test]
    fn event_json_escapes_every_line_break() {
        let ev = LiveEvent {
            id: 1,
            topic: "chat".into(),
            text: "a\r\nb\rc\nd\u{0}\u{2028}".into(),
            sent_ms: 5,
        };
        let json = serde_json::to_string(&ev).expect("serialises");
        assert!(!json.contains('\n') && !json.contains('\r'));
        assert_eq!(
            serde_json::from_str::<LiveEvent>(&json).expect("parses"),
            ev
        );
    }
}
