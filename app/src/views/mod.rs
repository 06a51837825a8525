//! The live view's components, one per file; they read the [`crate::stream::Feed`] signals and
//! never touch the connection.

mod controls;
mod delay_chart;
mod event_list;
mod instance;
mod live;
mod publish_form;
mod status;

pub use live::LivePage;
