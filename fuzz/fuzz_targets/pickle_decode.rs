//! Fuzz target: arbitrary bytes read by the pickle codec must give a value
//! or an error, never a panic, a stack overflow or an allocation far
//! beyond the input. A value without sets or dicts must re-encode to a
//! pickle that decodes to the same value, and be the value serde-pickle, a
//! second decoder, reads where it reads the message at all. (Sets and dict
//! keys sit in `Value`'s sorted containers, whose order is not total across
//! numeric types (True and 1, a float and a big int), so their members may
//! land differently, and serde-pickle's own sort of them panics; Python
//! judges those in the corpus test of ipc-tests. serde-pickle also takes
//! some messages Python refuses, such as an unquoted `STRING`, so one
//! decoder refusing what the other reads is not a failure here.)
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let typed = ipc_core::pickle::decode::<(u32, String, Vec<u8>, Option<Vec<i64>>)>(data);
    drop(typed);
    let Ok(ours) = ipc_core::pickle::decode_value(data) else {
        return;
    };
    let shown = format!("{ours:?}");
    if ["NaN", "Dict(", "Set("].iter().any(|s| shown.contains(s)) {
        return;
    }
    let mut again = Vec::new();
    if ipc_core::pickle::encode_value_into(&ours, &mut again).is_ok() {
        let round = ipc_core::pickle::decode_value(&again).unwrap();
        assert_eq!(round, ours);
    }
    if let Ok(theirs) = serde_pickle::value_from_slice(data, serde_pickle::DeOptions::new()) {
        assert_eq!(ours, theirs);
    }
});
