//! Whatever a client sends, split however the network splits it: the framer
//! stays bounded and the parser answers every line without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pop3_proto::{Line, LineReader};

fuzz_target!(|data: &[u8]| {
    let Some((&split, input)) = data.split_first() else { return };
    let mut reader = LineReader::new(64);
    for chunk in input.chunks(usize::from(split).max(1)) {
        reader.push(chunk);
        assert!(reader.buffered() <= 65);
        while let Some(line) = reader.next_line() {
            if let Line::Complete(line) = line {
                let _ = pop3_proto::command::parse(&line);
                let _ = pop3_proto::sasl::decode_plain(&line);
            }
        }
    }
});
