//! `Accept-Encoding` negotiation on arbitrary values: never a panic, only
//! codings the policy offers, each once, and never one the value refuses
//! (`q=0`) by name; the precompressed order holds the same codings.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tqserver::http::encode::{Encoding, Policy};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    let policy = Policy::default();
    let got = policy.acceptable(value);
    let mut seen = Vec::new();
    for e in &got {
        assert!(policy.encodings.contains(e));
        assert!(!seen.contains(e), "{e:?} twice for {value:?}");
        seen.push(*e);
    }
    for e in Encoding::ALL {
        let refused = value.split(',').any(|item| {
            let mut parts = item.split(';');
            let token = parts.next().unwrap_or("").trim();
            Encoding::parse(token) == Some(e)
                && parts.any(|p| matches!(p.trim(), "q=0" | "q=0." | "q=0.0" | "q=0.00" | "q=0.000"))
        });
        let listed_once = value
            .split(',')
            .filter(|item| Encoding::parse(item.split(';').next().unwrap_or("").trim()) == Some(e))
            .count()
            == 1;
        if refused && listed_once {
            assert!(!got.contains(&e), "{e:?} accepted from {value:?}");
        }
    }
    let mut siblings = policy.siblings(value);
    let mut sorted = got.clone();
    siblings.sort_by_key(|e| e.as_str());
    sorted.sort_by_key(|e| e.as_str());
    assert_eq!(siblings, sorted);
});
