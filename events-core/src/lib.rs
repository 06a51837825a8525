//! The event model, without a web framework: what an event is and which topics are allowed
//! ([`event`]), how it is framed on the stream ([`wire`]), what a publisher sends
//! ([`publish`]), and (feature `hub`) the hub that numbers, keeps and broadcasts events.
//! The server and the client use it; the fuzz targets build only this crate.

pub mod event;
#[cfg(feature = "hub")]
pub mod hub;
pub mod publish;
pub mod wire;
