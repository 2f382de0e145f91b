//! POP3 as bytes in, values out: no sockets, no runtime.

pub mod crlf;
