//! POP3 as bytes in, values out: no sockets, no runtime.
//!
//! - [`line`] frames command lines from whatever chunks the socket gives,
//!   with a bounded buffer;
//! - [`command`] parses a line into a [`command::Command`];
//! - [`response`] and [`capa`] serialise responses;
//! - [`encode`] turns a stored message into a RETR/TOP body chunk by chunk;
//! - [`crlf`] holds the line-ending rules that define a message's POP3 size;
//! - [`sasl`] decodes SASL PLAIN and base64.

pub mod capa;
pub mod command;
pub mod crlf;
pub mod encode;
#[doc(hidden)]
pub mod fuzzing;
pub mod line;
pub mod response;
pub mod sasl;

pub use command::{Command, ParseError, Secret};
pub use line::{Line, LineReader};
pub use response::Code;
