//! `NodeRecord::parse` on arbitrary bytes: it never panics, and a record it
//! accepts writes back (`to_json`) to one line that parses to the same record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use polis_discovery::NodeRecord;

fuzz_target!(|data: &[u8]| {
    let Ok(record) = NodeRecord::parse(data) else { return };
    let json = record.to_json();
    assert!(!json.contains('\n'), "a record is one line: {json}");
    match NodeRecord::parse(json.as_bytes()) {
        Ok(again) => assert_eq!(again, record, "{json}"),
        Err(e) => panic!("a written record does not parse ({e}): {json}"),
    }
});
