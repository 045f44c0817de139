//! Integration tests for the content store: real sled databases on disk in temp dirs.

use std::io::Write;

use hearth::store::{Outboard, Store, StoreError, CHUNK_SIZE};
use proptest::prelude::*;

/// The byte pattern of docs/storage.md: byte i is `i mod 251`.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Opens the store in `dir`. A store dropped just before, in this process, may still hold
/// sled's file lock for a moment (its flusher thread ends on its own time; under load that
/// took long enough to fail a reopen here), so a lock held by someone is waited out, up to
/// 10 s, as a restarted node does (`node.rs`, `wait_unlocked`).
fn open(dir: &tempfile::TempDir) -> Store {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Store::open(dir.path()) {
            Ok(store) => return store,
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Err(e) => panic!("open store: {e}"),
        }
    }
}

/// Reading a large blob from async code must not hold the runtime's thread. A worker read
/// its shard's input (100 MB in `cargo bench --bench net`'s job) with `get_bytes` on the
/// runtime, and every task sharing that thread, the network's among them, waited as long as
/// reading and hashing took. On a one-thread runtime a task counting its turns gets turns
/// while `Store::read` runs; it got none while the blob was read in place.
#[test]
fn an_async_read_leaves_the_runtime_free() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let data = pattern(64 << 20);
    let hash = store.put_bytes(&data).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (turns, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let ticker = {
            let (turns, stop) = (turns.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    turns.fetch_add(1, Ordering::Relaxed);
                    tokio::task::yield_now().await;
                }
            })
        };
        tokio::task::yield_now().await;
        let before = turns.load(Ordering::Relaxed);
        let read = store.read(hash).await.unwrap();
        let during = turns.load(Ordering::Relaxed) - before;
        stop.store(true, Ordering::Relaxed);
        ticker.await.unwrap();
        assert!(read == data, "the blob read back differs");
        assert!(during > 0, "no other task ran while 64 MiB were read");
        assert!(matches!(
            store.read(blake3::hash(b"absent")).await,
            Err(StoreError::NotFound(_))
        ));
    });
}

/// Raw sled access to the store's trees, to damage them like a failing disk would.
fn chunk_key(hash: &blake3::Hash, index: u32) -> Vec<u8> {
    let mut key = hash.as_bytes().to_vec();
    key.extend_from_slice(&index.to_be_bytes());
    key
}

#[test]
fn put_get_has_list_delete_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let a = pattern(1000);
    let b = pattern(3 * CHUNK_SIZE + 5);
    let ha = store.put_bytes(&a).unwrap();
    let hb = store.put_bytes(&b).unwrap();
    assert_eq!(ha, blake3::hash(&a));
    assert_eq!(hb, blake3::hash(&b));
    // Storing again is a no-op returning the same hash.
    assert_eq!(store.put_bytes(&a).unwrap(), ha);

    assert!(store.has(&ha).unwrap());
    assert_eq!(store.get_bytes(&ha).unwrap(), a);
    assert_eq!(store.get_bytes(&hb).unwrap(), b);
    assert_eq!(store.len(&hb).unwrap(), Some(b.len() as u64));
    let mut listed = store.list().unwrap();
    listed.sort_by_key(|(_, len)| *len);
    assert_eq!(listed, vec![(ha, 1000), (hb, b.len() as u64)]);

    assert!(store.delete(&hb).unwrap());
    assert!(!store.delete(&hb).unwrap());
    assert!(!store.has(&hb).unwrap());
    assert_eq!(store.len(&hb).unwrap(), None);
    assert!(store.outboard(&hb).unwrap().is_none());
    assert!(
        matches!(store.get_bytes(&hb), Err(StoreError::NotFound(h)) if h == hb.to_hex().as_str())
    );
    assert_eq!(store.list().unwrap(), vec![(ha, 1000)]);
}

#[test]
fn delete_removes_chunk_groups_from_sled() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let store = Store::with_db(&db).unwrap();
    let data = pattern(2 * CHUNK_SIZE + 1);
    let hash = store.put_bytes(&data).unwrap();
    let chunks = db.open_tree("store/chunks").unwrap();
    assert_eq!(chunks.scan_prefix(hash.as_bytes()).count(), 3);
    assert!(store.delete(&hash).unwrap());
    assert_eq!(chunks.scan_prefix(hash.as_bytes()).count(), 0);
    assert!(db.open_tree("store/blobs").unwrap().is_empty());
}

#[test]
fn empty_blob() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let hash = store.put_bytes(&[]).unwrap();
    assert_eq!(hash, blake3::hash(b""));
    assert_eq!(store.get_bytes(&hash).unwrap(), Vec::<u8>::new());
    assert_eq!(store.len(&hash).unwrap(), Some(0));
    let ob = store.outboard(&hash).unwrap().unwrap();
    assert_eq!(ob.chunk_count(), 1);
    assert_eq!(ob.chunk_len(0), 0);
    assert_eq!(ob.cvs, vec![*hash.as_bytes()]);
    assert_eq!(store.read_chunk(&hash, 0).unwrap(), Vec::<u8>::new());
    let mut out = Vec::new();
    assert_eq!(store.write_to(&hash, &mut out).unwrap(), 0);
}

#[test]
fn blobs_at_the_chunk_size_boundary() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    for (len, groups) in [
        (CHUNK_SIZE - 1, 1),
        (CHUNK_SIZE, 1),
        (CHUNK_SIZE + 1, 2),
        (2 * CHUNK_SIZE, 2),
    ] {
        let data = pattern(len);
        let hash = store.put_bytes(&data).unwrap();
        assert_eq!(hash, blake3::hash(&data), "len {len}");
        let ob = store.outboard(&hash).unwrap().unwrap();
        assert_eq!(ob.chunk_count(), groups, "len {len}");
        assert!(ob.verify(&hash));
        assert_eq!(store.get_bytes(&hash).unwrap(), data, "len {len}");
        let last = groups - 1;
        let tail = store.read_chunk(&hash, last).unwrap();
        assert_eq!(tail, &data[last as usize * CHUNK_SIZE..], "len {len}");
        assert!(matches!(
            store.read_chunk(&hash, groups),
            Err(StoreError::NoSuchChunk { index, count, .. }) if index == groups && count == groups
        ));
    }
}

/// A `Write` that only hashes, so a large blob is never held in memory.
struct HashingWriter(blake3::Hasher, u64);

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        self.1 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn large_blob_via_put_file_streams_back() {
    const LEN: usize = 64 * 1024 * 1024;
    const BLOCK: usize = 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);

    // Write the file block by block, each block different, hashing as we go.
    let path = dir.path().join("big.bin");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut expected = blake3::Hasher::new();
    let mut block = vec![0u8; BLOCK];
    for b in 0..LEN / BLOCK {
        for (i, byte) in block.iter_mut().enumerate() {
            *byte = (i as u32).wrapping_mul(31).wrapping_add(b as u32 * 7) as u8;
        }
        file.write_all(&block).unwrap();
        expected.update(&block);
    }
    file.into_inner().unwrap().sync_all().unwrap();
    drop(block);
    let expected = expected.finalize();

    let hash = store.put_file(&path).unwrap();
    assert_eq!(hash, expected);
    assert_eq!(store.len(&hash).unwrap(), Some(LEN as u64));
    assert_eq!(store.outboard(&hash).unwrap().unwrap().chunk_count(), 256);

    let mut sink = HashingWriter(blake3::Hasher::new(), 0);
    assert_eq!(store.write_to(&hash, &mut sink).unwrap(), LEN as u64);
    assert_eq!(sink.1, LEN as u64);
    assert_eq!(sink.0.finalize(), expected);
}

#[test]
fn put_file_small_and_missing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let path = dir.path().join("small.bin");
    let data = pattern(CHUNK_SIZE + 17);
    std::fs::write(&path, &data).unwrap();
    let hash = store.put_file(&path).unwrap();
    assert_eq!(hash, blake3::hash(&data));
    assert_eq!(store.get_bytes(&hash).unwrap(), data);

    let empty = dir.path().join("empty.bin");
    std::fs::write(&empty, b"").unwrap();
    assert_eq!(store.put_file(&empty).unwrap(), blake3::hash(b""));

    let missing = dir.path().join("nope.bin");
    assert!(
        matches!(store.put_file(&missing), Err(StoreError::File { path, .. }) if path == missing)
    );
}

#[test]
fn outboard_test_vector_600k() {
    // docs/storage.md quotes these bytes; change both together.
    let data = pattern(600 * 1024);
    let ob = Outboard::compute(&data);
    let hash = blake3::hash(&data);
    assert_eq!(ob.len, 614_400);
    assert_eq!(ob.chunk_count(), 3);
    assert_eq!(
        (ob.chunk_len(0), ob.chunk_len(1), ob.chunk_len(2)),
        (CHUNK_SIZE, CHUNK_SIZE, 90_112)
    );
    let cvs: Vec<String> = ob.cvs.iter().map(hex::encode).collect();
    assert_eq!(
        cvs,
        [
            "69febc864103726f98eba5f7437ed4da193c9d6cb02d46036729c1ea9dc3ffad",
            "fbdad66a00633e69d549ba33eea2a863640581ce5e5f58b15125cc71f674a33c",
            "93ff0a8da71df61c56a253957f2e2d520a716bcad685cf4dc687fcbb847988aa",
        ]
    );
    assert_eq!(
        hash.to_hex().as_str(),
        "27af5686ea3cabc8fb1095b3dc0a7d15ea74666c82a7c8893bef3905f5f601f5"
    );
    assert!(ob.verify(&hash));
    // The tree merge spelled out, as docs/storage.md does it.
    use blake3::hazmat::{merge_subtrees_non_root, merge_subtrees_root, Mode};
    let parent = merge_subtrees_non_root(&ob.cvs[0], &ob.cvs[1], Mode::Hash);
    assert_eq!(
        hex::encode(parent),
        "d6e5fed3f31a513c1ff297ed6bba1a203f493c5a4220e5af3622bc2310b02643"
    );
    assert_eq!(merge_subtrees_root(&parent, &ob.cvs[2], Mode::Hash), hash);
    let bytes = ob.to_bytes();
    assert_eq!(bytes.len(), 9 + 3 * 32);
    assert_eq!(hex::encode(&bytes[..9]), "010060090000000000");
    assert_eq!(hex::encode(&bytes[9..41]), cvs[0]);
}

#[test]
fn outboard_verify_rejects_tampering() {
    let data = pattern(5 * CHUNK_SIZE + 3);
    let hash = blake3::hash(&data);
    let ob = Outboard::compute(&data);
    assert!(ob.verify(&hash));
    assert!(!ob.verify(&blake3::hash(b"something else")));
    for i in 0..ob.cvs.len() {
        let mut bad = ob.clone();
        bad.cvs[i][7] ^= 1;
        assert!(!bad.verify(&hash), "tampered cv {i} accepted");
    }
    let mut swapped = ob.clone();
    swapped.cvs.swap(0, 1);
    assert!(!swapped.verify(&hash));
    // A length that changes the number of groups changes the tree: rejected.
    let mut longer = ob.clone();
    longer.len += CHUNK_SIZE as u64;
    assert!(!longer.verify(&hash));
    // A length off by a few bytes inside the last group keeps the tree shape, so the
    // outboard alone cannot catch it (blake3 commits to it only through the last group's
    // data); the last group is then refused, so no wrong blob can ever complete.
    let mut off_by_one = ob.clone();
    off_by_one.len += 1;
    assert!(off_by_one.verify(&hash));
    let last = ob.chunk_count() - 1;
    let tail = &data[last as usize * CHUNK_SIZE..];
    assert!(ob.verify_chunk(&hash, last, tail));
    assert!(!off_by_one.verify_chunk(&hash, last, tail));
    let mut padded = tail.to_vec();
    padded.push(0);
    assert!(!off_by_one.verify_chunk(&hash, last, &padded));
    let mut extra = ob.clone();
    extra.cvs.push([0; 32]);
    assert!(!extra.verify(&hash));
    // A single-group blob: the outboard is the root itself.
    let small = Outboard::compute(b"hi");
    assert!(small.verify(&blake3::hash(b"hi")));
    let mut bad_small = small.clone();
    bad_small.cvs[0][0] ^= 1;
    assert!(!bad_small.verify(&blake3::hash(b"hi")));
}

#[test]
fn outboard_from_bytes_is_strict() {
    let ob = Outboard::compute(&pattern(2 * CHUNK_SIZE + 1));
    let bytes = ob.to_bytes();
    assert_eq!(bytes.len(), 9 + 3 * 32);
    assert_eq!(Outboard::from_bytes(&bytes).unwrap(), ob);
    let bad = |b: &[u8]| matches!(Outboard::from_bytes(b), Err(StoreError::BadOutboard));
    assert!(bad(&[]));
    assert!(bad(&bytes[..bytes.len() - 1]));
    assert!(bad(&bytes[..bytes.len() - 32]));
    assert!(bad(&[&bytes[..], &[0u8; 32][..]].concat()));
    let mut wrong_version = bytes.clone();
    wrong_version[0] = 2;
    assert!(bad(&wrong_version));
    // A huge claimed length is refused before anything is allocated.
    let mut huge = bytes.clone();
    huge[1..9].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(bad(&huge));
}

#[test]
fn verify_chunk_rejects_a_flipped_byte() {
    let data = pattern(3 * CHUNK_SIZE + 100);
    let hash = blake3::hash(&data);
    let ob = Outboard::compute(&data);
    for i in 0..ob.chunk_count() {
        let start = i as usize * CHUNK_SIZE;
        let mut group = data[start..start + ob.chunk_len(i)].to_vec();
        assert!(ob.verify_chunk(&hash, i, &group));
        let last = group.len() - 1;
        group[last / 2] ^= 0x80;
        assert!(
            !ob.verify_chunk(&hash, i, &group),
            "flipped byte in group {i}"
        );
        group[last / 2] ^= 0x80;
        // Right bytes at the wrong index, or truncated, are rejected too.
        assert!(!ob.verify_chunk(&hash, (i + 1) % ob.chunk_count(), &group));
        assert!(!ob.verify_chunk(&hash, i, &group[..last]));
    }
    assert!(!ob.verify_chunk(&hash, ob.chunk_count(), b""));
    // Single group: hashed whole against the root.
    let small = pattern(100);
    let small_ob = Outboard::compute(&small);
    let mut flipped = small.clone();
    flipped[3] ^= 1;
    assert!(small_ob.verify_chunk(&blake3::hash(&small), 0, &small));
    assert!(!small_ob.verify_chunk(&blake3::hash(&small), 0, &flipped));
}

#[test]
fn import_out_of_order_rejects_bad_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let data = pattern(4 * CHUNK_SIZE + 9);
    let hash = blake3::hash(&data);
    let ob = Outboard::compute(&data);
    let group = |i: u32| &data[i as usize * CHUNK_SIZE..i as usize * CHUNK_SIZE + ob.chunk_len(i)];

    let mut tampered = ob.clone();
    tampered.cvs[2][0] ^= 1;
    assert!(matches!(
        store.begin_import(&hash, &tampered),
        Err(StoreError::BadOutboard)
    ));

    let import = store.begin_import(&hash, &ob).unwrap();
    assert_eq!(import.missing(), vec![0, 1, 2, 3, 4]);
    import.put_chunk(4, group(4)).unwrap();
    import.put_chunk(1, group(1)).unwrap();

    let mut bad = group(3).to_vec();
    bad[10] ^= 1;
    assert!(matches!(
        import.put_chunk(3, &bad),
        Err(StoreError::BadChunk { index: 3, .. })
    ));
    assert!(matches!(
        import.put_chunk(7, group(0)),
        Err(StoreError::BadChunk { index: 7, .. })
    ));
    assert_eq!(import.missing(), vec![0, 2, 3]);
    // Not visible while incomplete.
    assert!(!store.has(&hash).unwrap());
    assert!(store.list().unwrap().is_empty());

    import.put_chunk(3, group(3)).unwrap();
    import.put_chunk(0, group(0)).unwrap();
    import.put_chunk(2, group(2)).unwrap();
    import.put_chunk(2, group(2)).unwrap();
    assert!(import.missing().is_empty());
    assert_eq!(import.finish().unwrap(), hash);
    assert_eq!(store.get_bytes(&hash).unwrap(), data);
}

#[test]
fn finish_refuses_an_incomplete_import() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let data = pattern(2 * CHUNK_SIZE);
    let hash = blake3::hash(&data);
    let ob = Outboard::compute(&data);
    let import = store.begin_import(&hash, &ob).unwrap();
    import.put_chunk(0, &data[..CHUNK_SIZE]).unwrap();
    assert!(matches!(
        import.finish(),
        Err(StoreError::Incomplete { missing: 1, .. })
    ));
    assert!(!store.has(&hash).unwrap());
}

#[test]
fn import_resumes_after_reopening_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(5 * CHUNK_SIZE + 1);
    let hash = blake3::hash(&data);
    let ob = Outboard::compute(&data);
    let group = |i: u32| &data[i as usize * CHUNK_SIZE..i as usize * CHUNK_SIZE + ob.chunk_len(i)];
    {
        let store = open(&dir);
        let import = store.begin_import(&hash, &ob).unwrap();
        for i in [5, 0, 3] {
            import.put_chunk(i, group(i)).unwrap();
        }
        store.flush().unwrap();
        // Import and store dropped here, as if the peer went away and the node restarted.
    }
    let store = open(&dir);
    assert!(!store.has(&hash).unwrap());
    let import = store.begin_import(&hash, &ob).unwrap();
    assert_eq!(import.missing(), vec![1, 2, 4]);
    for i in import.missing() {
        import.put_chunk(i, group(i)).unwrap();
    }
    assert_eq!(import.finish().unwrap(), hash);
    assert_eq!(store.get_bytes(&hash).unwrap(), data);
    // Importing a blob that is already complete needs nothing.
    let again = store.begin_import(&hash, &ob).unwrap();
    assert!(again.missing().is_empty());
    assert_eq!(again.finish().unwrap(), hash);
}

#[test]
fn resume_drops_a_damaged_partial_group() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let store = Store::with_db(&db).unwrap();
    let data = pattern(3 * CHUNK_SIZE);
    let hash = blake3::hash(&data);
    let ob = Outboard::compute(&data);
    let import = store.begin_import(&hash, &ob).unwrap();
    import.put_chunk(0, &data[..CHUNK_SIZE]).unwrap();
    import
        .put_chunk(1, &data[CHUNK_SIZE..2 * CHUNK_SIZE])
        .unwrap();
    drop(import);
    let chunks = db.open_tree("store/chunks").unwrap();
    let mut group = chunks.get(chunk_key(&hash, 1)).unwrap().unwrap().to_vec();
    group[0] ^= 1;
    chunks.insert(chunk_key(&hash, 1), group).unwrap();
    let import = store.begin_import(&hash, &ob).unwrap();
    assert_eq!(import.missing(), vec![1, 2]);
}

#[test]
fn delete_cancels_a_running_import() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let data = pattern(2 * CHUNK_SIZE + 5);
    let hash = blake3::hash(&data);
    let ob = Outboard::compute(&data);
    let import = store.begin_import(&hash, &ob).unwrap();
    import.put_chunk(0, &data[..CHUNK_SIZE]).unwrap();
    assert!(store.delete(&hash).unwrap());
    assert!(matches!(
        import.put_chunk(1, &data[CHUNK_SIZE..2 * CHUNK_SIZE]),
        Err(StoreError::ImportCancelled(_))
    ));
    // A fresh import starts from nothing.
    assert_eq!(
        store.begin_import(&hash, &ob).unwrap().missing(),
        vec![0, 1, 2]
    );
}

#[test]
fn corrupted_chunk_is_detected_and_blob_removed() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let store = Store::with_db(&db).unwrap();
    let data = pattern(3 * CHUNK_SIZE + 77);
    let hash = store.put_bytes(&data).unwrap();
    let other = store.put_bytes(b"a neighbour that must survive").unwrap();

    let chunks = db.open_tree("store/chunks").unwrap();
    let key = chunk_key(&hash, 2);
    let mut group = chunks.get(&key).unwrap().expect("group 2 stored").to_vec();
    group[1234] ^= 0x01;
    chunks.insert(&key, group).unwrap();

    match store.get_bytes(&hash) {
        Err(StoreError::Corrupt { hash: h, reason }) => {
            assert_eq!(h, hash.to_hex().as_str());
            assert!(reason.contains("piece 2"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(!store.has(&hash).unwrap());
    assert!(matches!(
        store.get_bytes(&hash),
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(chunks.scan_prefix(hash.as_bytes()).count(), 0);
    assert_eq!(
        store.get_bytes(&other).unwrap(),
        b"a neighbour that must survive"
    );
}

#[test]
fn corrupted_single_group_and_outboard_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let store = Store::with_db(&db).unwrap();
    let chunks = db.open_tree("store/chunks").unwrap();
    let blobs = db.open_tree("store/blobs").unwrap();

    // Small blob: the one group is checked against the root.
    let small = store.put_bytes(b"small blob").unwrap();
    chunks
        .insert(chunk_key(&small, 0), &b"Small blob"[..])
        .unwrap();
    let mut sink = Vec::new();
    assert!(matches!(
        store.write_to(&small, &mut sink),
        Err(StoreError::Corrupt { .. })
    ));
    assert!(!store.has(&small).unwrap());

    // Damaged outboard entry: caught by read_chunk, and by list.
    let big = store.put_bytes(&pattern(2 * CHUNK_SIZE + 1)).unwrap();
    let mut ob = blobs.get(big.as_bytes()).unwrap().unwrap().to_vec();
    ob[20] ^= 1;
    blobs.insert(big.as_bytes(), ob.clone()).unwrap();
    assert!(matches!(
        store.read_chunk(&big, 0),
        Err(StoreError::Corrupt { .. })
    ));
    assert!(!store.has(&big).unwrap());

    let again = store.put_bytes(&pattern(2 * CHUNK_SIZE + 1)).unwrap();
    blobs.insert(again.as_bytes(), ob).unwrap();
    assert!(store.list().unwrap().is_empty());
    assert!(!store.has(&again).unwrap());
}

#[test]
fn missing_group_of_a_complete_blob_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let store = Store::with_db(&db).unwrap();
    let hash = store.put_bytes(&pattern(2 * CHUNK_SIZE + 1)).unwrap();
    db.open_tree("store/chunks")
        .unwrap()
        .remove(chunk_key(&hash, 1))
        .unwrap();
    assert!(store.read_chunk(&hash, 0).is_ok());
    assert!(matches!(
        store.read_chunk(&hash, 1),
        Err(StoreError::Corrupt { .. })
    ));
    assert!(!store.has(&hash).unwrap());
}

#[test]
fn reopening_the_store_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(CHUNK_SIZE * 2 + 3);
    let hash = {
        let store = open(&dir);
        store.put_bytes(&data).unwrap()
    };
    // sled's background flusher holds the database (and its file lock) for a moment after the
    // last handle is dropped: reopen within a few seconds, as a restarted node would.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let store = loop {
        match Store::open(dir.path()) {
            Ok(store) => break store,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("reopening: {e}; retrying");
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => panic!("reopen store: {e}"),
        }
    };
    assert!(store.has(&hash).unwrap());
    assert_eq!(store.get_bytes(&hash).unwrap(), data);
    assert_eq!(store.list().unwrap(), vec![(hash, data.len() as u64)]);
}

#[test]
fn store_handles_are_shared_across_threads() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let handles: Vec<_> = (0..4u8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let data = vec![t; CHUNK_SIZE + t as usize];
                store.put_bytes(&data).unwrap()
            })
        })
        .collect();
    for (t, h) in handles.into_iter().enumerate() {
        let hash = h.join().unwrap();
        assert_eq!(
            store.get_bytes(&hash).unwrap(),
            vec![t as u8; CHUNK_SIZE + t]
        );
    }
    assert_eq!(store.list().unwrap().len(), 4);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn outboard_verifies_and_round_trips(
        // Lengths around the interesting boundaries, content from a seed.
        len in prop_oneof![0usize..3000, (CHUNK_SIZE - 2)..(CHUNK_SIZE + 2), 0usize..(5 * CHUNK_SIZE)],
        seed in any::<u8>(),
    ) {
        let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(seed | 1).wrapping_add(seed)).collect();
        let ob = Outboard::compute(&data);
        prop_assert!(ob.verify(&blake3::hash(&data)));
        prop_assert_eq!(Outboard::from_bytes(&ob.to_bytes()).unwrap(), ob.clone());
        let streamed = Outboard::compute_reader(&mut &data[..]).unwrap();
        prop_assert_eq!(streamed, ob);
    }
}

#[test]
fn quota_refuses_imports_from_peers_and_counts_everything() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let own = pattern(CHUNK_SIZE + 10);
    store.put_bytes(&own).unwrap();
    assert_eq!(store.usage().unwrap(), own.len() as u64);
    store.set_quota(2 * CHUNK_SIZE as u64);
    // A blob from a peer that would take the store past its quota is refused at the
    // outboard, before a single piece is stored.
    let big = pattern(CHUNK_SIZE);
    let hash = blake3::hash(&big);
    let err = store
        .begin_import(&hash, &Outboard::compute(&big))
        .unwrap_err();
    assert!(matches!(err, StoreError::QuotaExceeded { .. }), "{err:?}");
    assert!(err.to_string().contains("quota"), "{err}");
    assert_eq!(store.usage().unwrap(), own.len() as u64);
    // One that fits is accepted, and a partial import counts at its full length.
    let small = pattern(1000);
    let small_hash = blake3::hash(&small);
    let import = store
        .begin_import(&small_hash, &Outboard::compute(&small))
        .unwrap();
    assert_eq!(store.usage().unwrap(), own.len() as u64 + 1000);
    // Resuming it is not a new import: it passes even under a tighter quota.
    drop(import);
    store.set_quota(own.len() as u64);
    let import = store
        .begin_import(&small_hash, &Outboard::compute(&small))
        .unwrap();
    import.put_chunk(0, &small).unwrap();
    import.finish().unwrap();
    // The household's own blobs are not refused by the quota.
    store.put_bytes(&pattern(3000)).unwrap();
}

/// The disk floor, against this filesystem's real free space (read with `statvfs` as the
/// store does): a floor above what is free refuses every new blob, own or a peer's, before
/// anything of it is stored; one well below it refuses nothing; resuming an import is not a
/// new blob. Margins of 1 GiB keep other writers on this disk from changing the outcome.
#[test]
fn the_disk_floor_refuses_blobs_that_would_leave_less_free() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let small = pattern(1000);
    let small_hash = blake3::hash(&small);
    let started = store
        .begin_import(&small_hash, &Outboard::compute(&small))
        .unwrap();
    drop(started);
    let free = hearth::store::free_bytes(dir.path()).expect("statvfs");
    store.set_disk_floor(free + (1 << 30));
    let big = pattern(2 * CHUNK_SIZE);
    let err = store.put_bytes(&big).unwrap_err();
    assert!(
        matches!(err, StoreError::DiskLow { len, floor, .. }
            if len == big.len() as u64 && floor == free + (1 << 30)),
        "{err:?}"
    );
    assert!(err.to_string().contains("keeps free on its disk"), "{err}");
    let peers = pattern(5 * CHUNK_SIZE);
    let err = store
        .begin_import(&blake3::hash(&peers), &Outboard::compute(&peers))
        .unwrap_err();
    assert!(matches!(err, StoreError::DiskLow { .. }), "{err:?}");
    assert!(
        store.list().unwrap().is_empty(),
        "a refused blob was stored"
    );
    assert_eq!(store.usage().unwrap(), 1000, "only the import begun before");
    // Resuming the import begun before is not a new blob.
    let resumed = store
        .begin_import(&small_hash, &Outboard::compute(&small))
        .unwrap();
    resumed.put_chunk(0, &small).unwrap();
    resumed.finish().unwrap();
    if free > 2 << 30 {
        store.set_disk_floor(free - (1 << 30));
        store.put_bytes(&big).unwrap();
        store.put_bytes(&peers).unwrap();
    }
    store.set_disk_floor(0);
    store.put_bytes(&pattern(3000)).unwrap();
}

#[test]
fn kept_blobs_survive_delete_unless_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mine = store.put_bytes(b"mine").unwrap();
    let theirs = store.put_bytes_unkept(b"theirs").unwrap();
    assert!(!store.delete_unless_kept(&mine).unwrap());
    assert!(store.delete_unless_kept(&theirs).unwrap());
    assert!(store.has(&mine).unwrap() && !store.has(&theirs).unwrap());
    // Storing a blob as one's own later keeps it too.
    let shared = store.put_bytes_unkept(b"shared").unwrap();
    store.put_bytes(b"shared").unwrap();
    assert!(!store.delete_unless_kept(&shared).unwrap());
    // An explicit delete removes a kept blob, and the mark with it.
    assert!(store.delete(&mine).unwrap());
    store.put_bytes_unkept(b"mine").unwrap();
    assert!(store.delete_unless_kept(&mine).unwrap());
}

// ------------------------------------------------------------------ the blob directory

/// A store as a node opens it: sled in `dir/db`, large blobs as files in `dir/blobs`.
fn open_with_files(dir: &std::path::Path) -> (sled::Db, Store) {
    let db = sled::open(dir.join("db")).unwrap();
    let store = Store::with_files(&db, &dir.join("blobs")).unwrap();
    (db, store)
}

fn blob_file(dir: &std::path::Path, hash: &blake3::Hash) -> std::path::PathBuf {
    dir.join("blobs").join(hash.to_hex().as_str())
}

#[test]
fn large_blobs_are_files_small_ones_stay_in_sled() {
    let dir = tempfile::tempdir().unwrap();
    let (db, store) = open_with_files(dir.path());
    let small = pattern(hearth::store::INLINE_MAX as usize);
    let large = pattern(hearth::store::INLINE_MAX as usize + 1);
    let hs = store.put_bytes(&small).unwrap();
    let hl = store.put_bytes(&large).unwrap();
    let chunks = db.open_tree("store/chunks").unwrap();
    assert_eq!(
        chunks.scan_prefix(hs.as_bytes()).count(),
        4,
        "small: in sled"
    );
    assert_eq!(
        chunks.scan_prefix(hl.as_bytes()).count(),
        0,
        "large: not in sled"
    );
    assert_eq!(std::fs::read(blob_file(dir.path(), &hl)).unwrap(), large);
    assert!(!blob_file(dir.path(), &hs).exists());
    assert_eq!(store.get_bytes(&hl).unwrap(), large);
    assert_eq!(store.get_bytes(&hs).unwrap(), small);
    let mut range = Vec::new();
    store.read_chunks(&hl, 1, 4, &mut range).unwrap();
    assert_eq!(range, &large[CHUNK_SIZE..]);
    assert_eq!(store.usage().unwrap(), (small.len() + large.len()) as u64);
    // Garbage collection and deletes remove the file.
    let theirs = pattern(5 * CHUNK_SIZE + 7);
    let ht = store.put_bytes_unkept(&theirs).unwrap();
    assert!(blob_file(dir.path(), &ht).exists());
    assert!(store.delete_unless_kept(&ht).unwrap());
    assert!(!blob_file(dir.path(), &ht).exists());
    assert!(store.delete(&hl).unwrap());
    assert!(!blob_file(dir.path(), &hl).exists());
    assert!(!store.has(&hl).unwrap());
}

/// `get_into` (how a core shard's input goes straight into its linear memory) reads what
/// `get_bytes` reads, from a file or from sled, refuses a buffer of another length, and
/// finds a damaged piece as `get_bytes` does.
#[test]
fn get_into_reads_a_blob_into_a_buffer_of_its_length_verified() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, store) = open_with_files(dir.path());
    let large = pattern(6 * CHUNK_SIZE + 3);
    let small = pattern(CHUNK_SIZE + 5);
    for data in [&large, &small] {
        let hash = store.put_bytes(data).unwrap();
        let mut buffer = vec![0; data.len()];
        store.get_into(&hash, &mut buffer).unwrap();
        assert_eq!(&buffer, data);
        let mut short = vec![0; data.len() - 1];
        let err = store.get_into(&hash, &mut short).unwrap_err();
        assert!(err.to_string().contains("not the"), "{err}");
        assert!(store.has(&hash).unwrap(), "a wrong buffer is not damage");
    }
    let hash = blake3::hash(&large);
    let path = blob_file(dir.path(), &hash);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[5 * CHUNK_SIZE + 1] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let mut buffer = vec![0; large.len()];
    match store.get_into(&hash, &mut buffer) {
        Err(StoreError::Corrupt { reason, .. }) => assert!(reason.contains("piece 5"), "{reason}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(!store.has(&hash).unwrap());
}

#[test]
fn a_damaged_or_truncated_blob_file_is_detected_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, store) = open_with_files(dir.path());
    let data = pattern(6 * CHUNK_SIZE + 3);
    let hash = store.put_bytes(&data).unwrap();
    let neighbour = store.put_bytes(&pattern(5 * CHUNK_SIZE)).unwrap();
    // One flipped byte in group 4.
    let path = blob_file(dir.path(), &hash);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[4 * CHUNK_SIZE + 10] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    assert!(
        store.read_chunk(&hash, 3).is_ok(),
        "the groups before it are fine"
    );
    match store.read_chunk(&hash, 4) {
        Err(StoreError::Corrupt { reason, .. }) => assert!(reason.contains("piece 4"), "{reason}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(!store.has(&hash).unwrap());
    assert!(!path.exists(), "the damaged file is removed");
    // A truncated file: the missing piece is damage too.
    let hash = store.put_bytes(&data).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(2 * CHUNK_SIZE as u64)
        .unwrap();
    let mut sink = HashingWriter(blake3::Hasher::new(), 0);
    assert!(matches!(
        store.write_to(&hash, &mut sink),
        Err(StoreError::Corrupt { .. })
    ));
    assert!(!store.has(&hash).unwrap());
    // A file that vanished.
    let hash = store.put_bytes(&data).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(
        store.get_bytes(&hash),
        Err(StoreError::Corrupt { .. })
    ));
    assert_eq!(
        store.get_bytes(&neighbour).unwrap(),
        pattern(5 * CHUNK_SIZE)
    );
}

#[test]
fn a_file_import_resumes_from_what_reached_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(7 * CHUNK_SIZE + 1);
    let hash = blake3::hash(&data);
    let ob = Outboard::compute(&data);
    let group = |i: u32| &data[i as usize * CHUNK_SIZE..][..ob.chunk_len(i)];
    {
        let (_db, store) = open_with_files(dir.path());
        let import = store.begin_import(&hash, &ob).unwrap();
        for i in [0, 3, 7] {
            import.put_chunk(i, group(i)).unwrap();
        }
        assert!(dir
            .path()
            .join("blobs")
            .join(format!("{}.part", hash.to_hex()))
            .exists());
        assert!(!store.has(&hash).unwrap(), "invisible until finished");
    }
    // Restarted (sled may hold its lock a moment after the last handle is dropped).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let (db, store) = loop {
        match sled::open(dir.path().join("db")) {
            Ok(db) => {
                let store = Store::with_files(&db, &dir.path().join("blobs")).unwrap();
                break (db, store);
            }
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50))
            }
            Err(e) => panic!("reopen: {e}"),
        }
    };
    let import = store.begin_import(&hash, &ob).unwrap();
    assert_eq!(import.missing(), vec![1, 2, 4, 5, 6]);
    // Written by another thread, as the network layer does.
    let writer = import.clone();
    let data2 = data.clone();
    std::thread::spawn(move || {
        for i in writer.missing() {
            let g = &data2[i as usize * CHUNK_SIZE..][..writer.outboard().chunk_len(i)];
            writer.put_chunk(i, g).unwrap();
        }
    })
    .join()
    .unwrap();
    assert_eq!(import.finish().unwrap(), hash);
    assert_eq!(store.get_bytes(&hash).unwrap(), data);
    // A crash after the rename but before the sled commit: the complete file sits under a
    // partial entry; it is taken back and verified, not trusted.
    let partial = db.open_tree("store/partial").unwrap();
    let blobs = db.open_tree("store/blobs").unwrap();
    partial
        .insert(
            hash.as_bytes(),
            blobs.remove(hash.as_bytes()).unwrap().unwrap(),
        )
        .unwrap();
    let store = Store::with_files(&db, &dir.path().join("blobs")).unwrap();
    let import = store.begin_import(&hash, &ob).unwrap();
    assert!(import.missing().is_empty());
    assert_eq!(import.finish().unwrap(), hash);
    assert_eq!(store.get_bytes(&hash).unwrap(), data);
}

#[test]
fn files_nothing_refers_to_are_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (db, store) = open_with_files(dir.path());
    let kept = store.put_bytes(&pattern(5 * CHUNK_SIZE)).unwrap();
    drop(store);
    let orphan = dir
        .path()
        .join("blobs")
        .join(blake3::hash(b"x").to_hex().as_str());
    let orphan_part = dir
        .path()
        .join("blobs")
        .join(format!("{}.part", blake3::hash(b"y").to_hex()));
    let other = dir.path().join("blobs").join("README");
    for p in [&orphan, &orphan_part, &other] {
        std::fs::write(p, b"left by a crash").unwrap();
    }
    let store = Store::with_files(&db, &dir.path().join("blobs")).unwrap();
    assert!(!orphan.exists() && !orphan_part.exists());
    assert!(other.exists(), "names that are not blobs are left alone");
    assert_eq!(store.get_bytes(&kept).unwrap(), pattern(5 * CHUNK_SIZE));
}

#[test]
fn stores_from_before_the_blob_directory_stay_readable() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path().join("db")).unwrap();
    let old = pattern(6 * CHUNK_SIZE);
    let hash_old = Store::with_db(&db).unwrap().put_bytes(&old).unwrap();
    // The same database opened as a node opens it now.
    let store = Store::with_files(&db, &dir.path().join("blobs")).unwrap();
    assert_eq!(store.get_bytes(&hash_old).unwrap(), old);
    let new = pattern(6 * CHUNK_SIZE + 1);
    let hash_new = store.put_bytes(&new).unwrap();
    assert!(blob_file(dir.path(), &hash_new).exists());
    // Opened without its directory, a file blob is an error, not damage: nothing is removed.
    let bare = Store::with_db(&db).unwrap();
    assert!(matches!(
        bare.get_bytes(&hash_new),
        Err(StoreError::NoBlobDir(_))
    ));
    assert!(bare.has(&hash_new).unwrap());
    assert_eq!(store.get_bytes(&hash_new).unwrap(), new);
}
