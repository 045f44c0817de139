//! Blob outboards come from peers before the blob itself (and back from disk). Decoding
//! must not panic and is canonical; every query on a decoded outboard returns; an outboard
//! computed from data hashes up to blake3 of that data and survives encode → decode.
#![no_main]

use hearth::store::{Outboard, CHUNK_SIZE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(o) = Outboard::from_bytes(data) {
        assert_eq!(
            o.to_bytes(),
            data,
            "outboard accepted a non-canonical encoding"
        );
        let count = o.chunk_count();
        assert!(count >= 1);
        for i in [0, count / 2, count - 1, count, u32::MAX] {
            let _ = o.chunk_len(i);
        }
        let root = o.root().expect("a decoded outboard is well formed");
        assert!(o.verify(&root));
        let _ = o.verify_chunk(
            &root,
            count - 1,
            &data[..o.chunk_len(count - 1).min(data.len())],
        );
        let _ = o.verify_chunk(&root, count, &[]);
    }
    let o = Outboard::compute(data);
    let root = blake3::hash(data);
    assert_eq!(o.root(), Some(root));
    assert!(o.verify(&root));
    if data.len() <= CHUNK_SIZE {
        assert!(o.verify_chunk(&root, 0, data));
    }
    assert_eq!(Outboard::from_bytes(&o.to_bytes()).ok().as_ref(), Some(&o));
});
