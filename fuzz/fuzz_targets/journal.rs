//! The daemon's state store reader (crates/rvs/src/persist.rs, `Store::open_with`) on
//! arbitrary snapshot, journal and old-journal files.
//!
//! rvs is a binary crate: rather than give it a library target, this compiles its
//! persist.rs (with state.rs and procfs.rs, which it needs) into the fuzzer as modules.
//!
//! Input: three pieces, each a 2-byte big-endian length and its bytes (the last takes
//! the rest): the state file, the journal, the old journal (an empty piece: no file).
//! Property: a store that opened opens again (its torn tail cut) to the same configuration.
#![no_main]

#[allow(unused_imports)]
#[path = "../../crates/rvs/src/persist.rs"]
mod persist;
#[allow(dead_code, unused_imports)]
#[path = "../../crates/rvs/src/procfs.rs"]
mod procfs;
#[allow(dead_code, unused_imports)]
#[path = "../../crates/rvs/src/state.rs"]
mod state;

use libfuzzer_sys::fuzz_target;
use persist::{Store, StoreOptions};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

fn pieces(mut data: &[u8]) -> [&[u8]; 3] {
    let mut out: [&[u8]; 3] = [b""; 3];
    for (i, slot) in out.iter_mut().enumerate() {
        if i == 2 {
            *slot = data;
            break;
        }
        let Some((l, rest)) = data.split_first_chunk::<2>() else {
            break;
        };
        let n = usize::from(u16::from_be_bytes(*l)).min(rest.len());
        *slot = &rest[..n];
        data = &rest[n..];
    }
    out
}

/// The store's directory, made once per process: creating and removing it for every input
/// was most of an execution (system calls). Each input writes its pieces over the files of
/// the last one and removes those it does not have; the store itself removes its `.tmp`.
fn dir() -> &'static Path {
    static DIR: LazyLock<PathBuf> = LazyLock::new(|| {
        let d = std::env::temp_dir().join(format!("rvs-fuzz-journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    });
    &DIR
}

const OPTS: StoreOptions = StoreOptions {
    compact_records: u64::MAX,
    compact_bytes: u64::MAX,
    background: false,
};

fuzz_target!(|data: &[u8]| {
    let state = dir().join("state.json");
    let [snap, journal, old] = pieces(data);
    for (suffix, bytes) in [("", snap), (".journal", journal), (".journal.old", old)] {
        let mut p = state.clone().into_os_string();
        p.push(suffix);
        if bytes.is_empty() {
            match std::fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => panic!("remove: {e}"),
                _ => {}
            }
        } else {
            std::fs::write(p, bytes).expect("write");
        }
    }
    let first = Store::open_with(&state, OPTS).map(|(store, rec)| {
        drop(store);
        rec.config
    });
    if let Ok(config) = first {
        let (store, again) =
            Store::open_with(&state, OPTS).expect("a store that opened opens again");
        drop(store);
        assert_eq!(again.config, config, "reopening changed the configuration");
        assert!(!again.torn_tail, "the torn tail was not cut off");
    }
});
