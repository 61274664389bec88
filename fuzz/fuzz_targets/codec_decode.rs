//! Fuzz target: arbitrary bytes decoded as typed messages must give a value
//! or a decode error, and every value must re-encode to bytes that decode to
//! the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;

type Message = (u32, String, Vec<u8>, Option<(i64, f64)>, Vec<String>);

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = ipc_core::codec::decode::<Message>(data) {
        let mut again = Vec::new();
        ipc_core::codec::encode_into(&value, &mut again).unwrap();
        let round: Message = ipc_core::codec::decode(&again).unwrap();
        assert_eq!(format!("{round:?}"), format!("{value:?}"));
    }
});
