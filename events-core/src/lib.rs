//! The event model, without a web framework: what an event is and which topics are allowed
//! ([`event`]), how it is framed on the stream ([`wire`]), what a publisher sends
//! ([`publish`]), (feature `hub`) the hub that numbers, keeps and broadcasts events, and
//! (feature `head`) how a new connection's request head is read.
//! The server and the client use it; the fuzz targets build only this crate.

pub mod event;
#[cfg(feature = "head")]
pub mod head;
#[cfg(feature = "hub")]
pub mod hub;
pub mod publish;
pub mod wire;
