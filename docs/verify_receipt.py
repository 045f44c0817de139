#!/usr/bin/env python3
"""An independent verifier of hearth heat-work receipts, written from docs/receipts.md alone.

    pip install blake3                                # cryptography too, for the naive-library demo
    python3 docs/verify_receipt.py receipts.json      # an export of `hearth receipts export --json`
    python3 docs/verify_receipt.py receipts.json --trusted submitters.txt   # and what they vouched for
    python3 docs/verify_receipt.py receipts.json --trusted submitters.txt --json   # the credit as JSON
    python3 docs/verify_receipt.py receipts.json --audit log.json   # and what auditors logged (repeatable)
    python3 docs/verify_receipt.py receipts.json --revoked statement.json   # a key's revocation (repeatable)
    python3 docs/verify_receipt.py receipts.json --keys key-log.json   # a household's key log (repeatable)
    python3 docs/verify_receipt.py --example          # the worked examples and test vectors

An export may carry inclusion proofs (format hearth-receipts/3): each is checked against its
receipt and the coordinator's signed commitment (docs/receipts.md, "Commitments and inclusion
proofs").

Ed25519 is verified here in pure Python (RFC 8032, cofactorless, with the strict checks of
docs/receipts.md): OpenSSL, behind the `cryptography` package, accepts small-order keys and R
points, so it cannot be the verifier on its own. Exits 0 when everything verifies, 1 otherwise.
"""
import bisect
import hashlib
import json
import os
import struct
import sys

import blake3

RECORD_LEN, CLAIM_LEN, TERMS_LEN = 250, 314, 17
RECEIPT_LEN = RECORD_LEN + 64 + TERMS_LEN + 64  # 395
WORKER_DOMAIN = b"hearth/receipt/worker/v1"
SUBMITTER_DOMAIN = b"hearth/receipt/submitter/v2"
EXPORT_FORMAT = "hearth-receipts/3"
EXPORT_FORMATS = ("hearth-receipts/2", EXPORT_FORMAT)  # format 2 has no inclusions
COMMIT_DOMAIN = b"hearth/commitment/v1"
COMMIT_BODY_LEN = 97
COMMITMENT_LEN = COMMIT_BODY_LEN + 64  # 161
MAX_LEAVES, MAX_PATH = 1 << 16, 16
REVOKE_DOMAIN = b"hearth/revocation/v1"
REVOKE_BODY_LEN = 53
REVOCATION_LEN = REVOKE_BODY_LEN + 64  # 117
REVOCATION_FORMAT = "hearth-revocation/1"
KEY_EVENT_DOMAIN = b"hearth/key-event/v1"
NEXT_KEY_DOMAIN = b"hearth/next-key/v1"
KEY_EVENT_BODY_LEN = 117
KEY_EVENT_LEN = KEY_EVENT_BODY_LEN + 64  # 181
KEY_EVENT_FORMAT = "hearth-key-event/1"
MAX_WATTS = 3680  # W; W x ms = mJ
MAX_WINDOW_MS = 24 * 3600 * 1000
METHODS = {1: "rapl", 2: "cpu_estimate", 3: "simulated"}
BASES = {1: "claimed", 2: "replica_reference", 3: "household_history", 4: "power_ceiling"}
VERIFIED_BY = {1: "quorum", 2: "trusted_spot_checked", 3: "trusted_unchecked"}
U64_MAX = 2**64 - 1

# ---------------------------------------------------------------- Ed25519, strict (RFC 8032)
P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)
IDENTITY = (0, 1, 1, 0)  # extended coordinates (X, Y, Z, T)


def _add(a, b):
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    aa = (y1 - x1) * (y2 - x2) % P
    bb = (y1 + x1) * (y2 + x2) % P
    cc = 2 * t1 * t2 * D % P
    dd = 2 * z1 * z2 % P
    e, f, g, h = bb - aa, dd - cc, dd + cc, bb + aa
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _mul(k, pt):
    acc = IDENTITY
    while k:
        if k & 1:
            acc = _add(acc, pt)
        pt = _add(pt, pt)
        k >>= 1
    return acc


def _is_neutral(pt):
    x, y, z, _ = pt
    return x % P == 0 and (y - z) % P == 0


def _encode(pt):
    x, y, z, _ = pt
    zi = pow(z, P - 2, P)
    x, y = x * zi % P, y * zi % P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def _decode(b):
    """RFC 8032 5.1.3, refusing non-canonical encodings (y >= p, or x = 0 with the sign bit)."""
    v = int.from_bytes(b, "little")
    sign, y = v >> 255, v & ((1 << 255) - 1)
    if y >= P:
        return None
    u, w = (y * y - 1) % P, (D * y * y + 1) % P
    x = u * pow(w, 3, P) * pow(u * pow(w, 7, P), (P - 5) // 8, P) % P
    if (w * x * x - u) % P != 0:
        x = x * SQRT_M1 % P
        if (w * x * x - u) % P != 0:
            return None
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = P - x
    return (x, y, 1, x * y % P)


BASE = _decode((4 * pow(5, P - 2, P) % P).to_bytes(32, "little"))


def strict_verify(key: bytes, msg: bytes, sig: bytes):
    """None if the signature verifies under docs/receipts.md's strict rules, else the reason."""
    if len(key) != 32 or len(sig) != 64:
        return "wrong length"
    s = int.from_bytes(sig[32:], "little")
    if s >= L:
        return "S is not below L"
    a = _decode(key)
    if a is None:
        return "the key is not a canonical point encoding"
    if _is_neutral(_mul(8, a)):
        return "the key is a point of small order"
    r = _decode(sig[:32])
    if r is None:
        return "R is not a canonical point encoding"
    if _is_neutral(_mul(8, r)):
        return "R is a point of small order"
    k = int.from_bytes(hashlib.sha512(sig[:32] + key + msg).digest(), "little") % L
    neg_a = ((-a[0]) % P, a[1], a[2], (-a[3]) % P)
    if _encode(_add(_mul(s, BASE), _mul(k, neg_a))) != sig[:32]:
        return "the equation does not hold"
    return None


def sign(seed: bytes, msg: bytes) -> bytes:
    """RFC 8032 signing, for the self-tests only."""
    h = hashlib.sha512(seed).digest()
    a = int.from_bytes(h[:32], "little") & ((1 << 254) - 8) | (1 << 254)
    pub = _encode(_mul(a, BASE))
    r = int.from_bytes(hashlib.sha512(h[32:] + msg).digest(), "little") % L
    big_r = _encode(_mul(r, BASE))
    k = int.from_bytes(hashlib.sha512(big_r + pub + msg).digest(), "little") % L
    return big_r + ((r + k * a) % L).to_bytes(32, "little")


def public_key(seed: bytes) -> bytes:
    h = hashlib.sha512(seed).digest()
    a = int.from_bytes(h[:32], "little") & ((1 << 254) - 8) | (1 << 254)
    return _encode(_mul(a, BASE))


# ---------------------------------------------------------------- receipts
def decode(receipt: bytes) -> dict:
    """Steps 1-4 of "Verifying a receipt": layout, magics, versions, known tags."""
    if len(receipt) != RECEIPT_LEN:
        raise ValueError(f"a receipt is {RECEIPT_LEN} bytes, not {len(receipt)}")
    record, terms = receipt[:RECORD_LEN], receipt[CLAIM_LEN:CLAIM_LEN + TERMS_LEN]
    if record[0:4] != b"HRCP" or record[4] != 1:
        raise ValueError("bad record magic or version")
    if terms[0:4] != b"HRCT" or terms[4] != 1:
        raise ValueError("bad terms magic or version")
    (shard,) = struct.unpack_from("<I", record, 37)
    fuel, energy_mj = struct.unpack_from("<QQ", record, 201)
    start_ms, end_ms = struct.unpack_from("<QQ", record, 218)
    (credited_mj,) = struct.unpack_from("<Q", terms, 5)
    method, basis, verified_by, agreeing, replicas = record[217], terms[13], terms[14], terms[15], terms[16]
    if method not in METHODS or basis not in BASES or verified_by not in VERIFIED_BY:
        raise ValueError("unknown energy method, credit basis or verification kind")
    return {
        "id": blake3.blake3(record + terms).hexdigest(),
        "job": record[5:37].hex(), "shard": shard, "module": record[41:73].hex(),
        "input": record[73:105].hex(), "output": record[105:137].hex(),
        "worker": record[137:169].hex(), "submitter": record[169:201].hex(),
        "fuel": fuel, "energy_mj": energy_mj, "energy_method": METHODS[method],
        "start_ms": start_ms, "end_ms": end_ms, "nonce": record[234:250].hex(),
        "worker_sig": receipt[RECORD_LEN:CLAIM_LEN].hex(),
        "credited_mj": credited_mj, "basis": BASES[basis], "verified_by": VERIFIED_BY[verified_by],
        "agreeing": agreeing, "replicas": replicas,
        "submitter_sig": receipt[CLAIM_LEN + TERMS_LEN:].hex(),
        "canonical": receipt.hex(),
    }


def verify(receipt: bytes) -> dict:
    """All steps of "Verifying a receipt"; returns the decoded fields or raises ValueError."""
    f = decode(receipt)
    # Physics (arbitrary-precision integers: no overflow).
    if f["end_ms"] < f["start_ms"]:
        raise ValueError("physics: it ends before it starts")
    window = f["end_ms"] - f["start_ms"]
    if window > MAX_WINDOW_MS:
        raise ValueError(f"physics: it covers {window} ms, more than 24 h")
    if f["energy_mj"] > MAX_WATTS * window:
        raise ValueError(f"physics: {f['energy_mj']} mJ in {window} ms is above {MAX_WATTS} W")
    # Terms.
    if f["credited_mj"] > f["energy_mj"]:
        raise ValueError("terms: credits more than the worker claimed")
    if not 1 <= f["agreeing"] <= f["replicas"]:
        raise ValueError("terms: agreeing must be between 1 and replicas")
    # Signatures.
    record, terms = receipt[:RECORD_LEN], receipt[CLAIM_LEN:CLAIM_LEN + TERMS_LEN]
    for key, msg, sig, role in (
        (record[137:169], WORKER_DOMAIN + record, receipt[RECORD_LEN:CLAIM_LEN], "worker"),
        (record[169:201], SUBMITTER_DOMAIN + record + terms, receipt[CLAIM_LEN + TERMS_LEN:], "submitter"),
    ):
        why = strict_verify(key, msg, sig)
        if why:
            raise ValueError(f"the {role} signature does not verify: {why}")
    return f


# ---------------------------------------------------------------- commitments and inclusion
def leaf_hash(receipt_id: bytes) -> bytes:
    return blake3.blake3(b"\x00" + receipt_id).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return blake3.blake3(b"\x01" + left + right).digest()


def root_from_path(leaf: bytes, index: int, count: int, path):
    """RFC 9162 2.1.3.2: the root that a leaf at `index` of `count` and its audit path (bottom
    first) lead to, or None when the path's length does not fit index and count."""
    if index >= count:
        return None
    fn, sn, r = index, count - 1, leaf
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return r if sn == 0 else None


def merkle_root(leaves):
    """RFC 6962 MTH over leaf hashes (at least one): split at the largest power of two below n."""
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node_hash(merkle_root(leaves[:k]), merkle_root(leaves[k:]))


def decode_commitment(c: bytes) -> dict:
    """A signed commitment's 161 bytes: "HCMT", version 1, coordinator, seq (u64 LE), count
    (u32 LE), root, first_ms and last_ms (u64 LE), then the signature."""
    if len(c) != COMMITMENT_LEN or c[:5] != b"HCMT\x01":
        raise ValueError("bad commitment magic, version or length")
    seq, count = struct.unpack_from("<QI", c, 37)
    first_ms, last_ms = struct.unpack_from("<QQ", c, 81)
    return {
        "commitment": blake3.blake3(c[:COMMIT_BODY_LEN]).hexdigest(), "body": c[:COMMIT_BODY_LEN],
        "coordinator": c[5:37].hex(), "seq": seq, "count": count, "root": c[49:81].hex(),
        "first_ms": first_ms, "last_ms": last_ms, "commitment_sig": c[COMMIT_BODY_LEN:].hex(),
    }


def verify_commitment(f: dict):
    """A decoded commitment's count bound and its signature (strict Ed25519 over
    COMMIT_DOMAIN ‖ body) under its coordinator; raises ValueError."""
    if not 1 <= f["count"] <= MAX_LEAVES:
        raise ValueError(f"a commitment covers 1 to {MAX_LEAVES} receipts, not {f['count']}")
    why = strict_verify(bytes.fromhex(f["coordinator"]), COMMIT_DOMAIN + f["body"],
                        bytes.fromhex(f["commitment_sig"]))
    if why:
        raise ValueError(f"the commitment signature does not verify: {why}")


def decode_inclusion(b: bytes) -> dict:
    """An inclusion proof's bytes: "HINC", version 1, the signed commitment, the leaf index
    (u32 LE), the path length (u8, at most 16) and the path's 32-byte hashes."""
    if b[:5] != b"HINC\x01":
        raise ValueError("bad inclusion magic or version")
    f = decode_commitment(b[5:5 + COMMITMENT_LEN])
    rest = b[5 + COMMITMENT_LEN:]
    if len(rest) < 5:
        raise ValueError("inclusion proof ends early")
    (index,), n = struct.unpack_from("<I", rest, 0), rest[4]
    if n > MAX_PATH or len(rest) != 5 + 32 * n:
        raise ValueError("inclusion path too long, or bytes left over")
    f.update(index=index, path=[rest[5 + 32 * i:37 + 32 * i].hex() for i in range(n)])
    return f


def verify_inclusion(proof: bytes, receipt: dict) -> dict:
    """The commitment's count bound and signature (strict Ed25519 over COMMIT_DOMAIN ‖ body),
    its coordinator is the receipt's submitter, and the path leads from the receipt's leaf to
    the committed root. Returns the decoded proof or raises ValueError."""
    f = decode_inclusion(proof)
    verify_commitment(f)
    if f["coordinator"] != receipt["submitter"]:
        raise ValueError("the commitment is not the receipt's submitter's")
    root = root_from_path(leaf_hash(bytes.fromhex(receipt["id"])), f["index"], f["count"],
                          [bytes.fromhex(p) for p in f["path"]])
    if root is None or root.hex() != f["root"]:
        raise ValueError("the path does not lead from the receipt to the committed root")
    return f


INCLUSION_KEYS = {
    "receipt": "hex32", "commitment": "hex32", "coordinator": "hex32", "seq": "u64",
    "count": "u32", "root": "hex32", "first_ms": "u64", "last_ms": "u64",
    "commitment_sig": "hex64", "index": "u32", "path": "path", "canonical": "hexany",
}


def check_inclusions(inclusions, receipts, listed, audit=None) -> tuple:
    """Each proof names a receipt of the export (by id), once, its readable fields match its
    canonical bytes, and it verifies. `receipts`: the valid receipts' fields; `listed`: every
    id the export lists (a proof of a receipt that already failed is not counted twice).
    `audit`: what auditors' logs hold (`add_audit_log`), or None. Returns (lines, failures,
    the ids proven included mapped to their commitment's seq, those of them in a commitment
    the logs hold)."""
    if not isinstance(inclusions, list):
        raise ValueError("inclusions: expected a list")
    by_id = {r["id"]: r for r in receipts}
    lines, bad, seen, commitments, audited = [], 0, {}, set(), set()
    for n, j in enumerate(inclusions):
        try:
            _exact_keys(j, INCLUSION_KEYS, (), f"inclusion {n}")
            readable = {k: _field(kind, j[k], f"inclusion {n} {k}") for k, kind in INCLUSION_KEYS.items()}
            if readable["receipt"] in listed and readable["receipt"] not in by_id:
                continue
            if readable["receipt"] not in by_id:
                raise ValueError(f"names receipt {readable['receipt']} that this export does not hold")
            if readable["receipt"] in seen:
                raise ValueError("a second proof for the same receipt")
            f = verify_inclusion(bytes.fromhex(readable["canonical"]), by_id[readable["receipt"]])
            for k, v in readable.items():
                if k not in ("receipt", "canonical") and f[k] != v:
                    raise ValueError(f"field {k!r} does not match the canonical bytes")
            seen[readable["receipt"]] = f["seq"]
            commitments.add(f["commitment"])
            if audit is not None and audit.get((f["coordinator"], f["seq"])) == f["commitment"]:
                audited.add(readable["receipt"])
        except (ValueError, KeyError) as e:
            bad += 1
            lines.append(f"inclusion {n}: INVALID: {e}")
    lines.append(f"{len(seen)} receipts proven included in {len(commitments)} signed commitments; "
                 f"{len(receipts) - len(seen)} without an inclusion proof")
    return lines, bad, seen, audited


def add_audit_log(audit: dict, text: str, revoked=None, keys=None):
    """docs/receipts.md "What an export credits", auditors' logs: every entry's signed bytes
    checked (decode, strict signature, the log's coordinator, its own seq and id); a
    (coordinator, seq) holding two different commitments maps to None. The log's
    `revocation`, if any, is checked as `read_revocation` does, must be its coordinator's, and
    goes into `revoked` (key hex -> smallest keep). Its key events (`key_events`, both of each of
    `key_contests`), each checked as `read_key_event` does and of the log's household, go into
    `keys["events"]`, and the one heard first under each (household, seq) into
    `keys["first"]` (None where logs disagree). Raises ValueError."""
    log = json.loads(text)
    if not isinstance(log, dict) or not isinstance(log.get("coordinator"), str):
        raise ValueError('no "coordinator"')
    coordinator = log["coordinator"]

    def read(what, i, entry):
        try:
            f = decode_commitment(bytes.fromhex(entry["signed"]))
            verify_commitment(f)
            if f["coordinator"] != coordinator:
                raise ValueError("signed by another coordinator than the log's")
            if entry.get("seq") != f["seq"] or entry.get("id") != f["commitment"]:
                raise ValueError("its seq or id is not its signed bytes'")
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{what} {i}: {e}")
        key = (f["coordinator"], f["seq"])
        if audit.setdefault(key, f["commitment"]) != f["commitment"]:
            audit[key] = None
    for key in ("commitments", "equivocations"):
        if not isinstance(log.get(key, []), (list, type(None))):
            raise ValueError(f'"{key}" is not a list')
    for i, entry in enumerate(log.get("commitments") or []):
        read("commitment", i, entry)
    if log.get("revocation") is not None:
        try:
            key, keep = read_revocation(log["revocation"])
        except ValueError as e:
            raise ValueError(f"revocation: {e}")
        if key != coordinator:
            raise ValueError("revocation: of another key than the log's coordinator")
        if revoked is not None:
            revoked[key] = min(keep, revoked.get(key, keep))
    for i, e in enumerate(log.get("equivocations") or []):
        e = e if isinstance(e, dict) else {}
        read("equivocation (first)", i, e.get("first"))
        read("equivocation (second)", i, e.get("second"))

    def event(what, i, obj):
        try:
            e = read_key_event(obj)
        except ValueError as err:
            raise ValueError(f"{what} {i}: {err}")
        if e["household"] != coordinator:
            raise ValueError(f"{what} {i}: of another household than the log's")
        return e
    for key in ("key_events", "key_contests"):
        if not isinstance(log.get(key, []), (list, type(None))):
            raise ValueError(f'"{key}" is not a list')
    keys = {"events": [], "first": {}} if keys is None else keys
    firsts = [event("key event", i, obj) for i, obj in enumerate(log.get("key_events") or [])]
    for i, c in enumerate(log.get("key_contests") or []):
        c = c if isinstance(c, dict) else {}
        first, second = event("key contest (first)", i, c.get("first")), event("key contest (second)", i, c.get("second"))
        if first["seq"] != second["seq"] or first["signed"] == second["signed"]:
            raise ValueError(f"key contest {i}: not two events under one number")
        keys["events"].append(second)
        firsts.append(first)
    for e in firsts:
        slot = (e["household"], e["seq"])
        if keys["first"].setdefault(slot, e["signed"]) != e["signed"]:
            keys["first"][slot] = None
        keys["events"].append(e)


def _signed(obj, fmt: str, header: bytes, length: int, what: str) -> bytes:
    """The signed bytes of a statement's JSON form (a revocation, a key event): `format` is
    `fmt`, `signed` is hex of exactly `length` bytes starting with `header` (magic and
    version). Raises ValueError."""
    if not isinstance(obj, dict) or obj.get("format") != fmt:
        raise ValueError(f'"format" is not {fmt!r}')
    signed = obj.get("signed")
    if not isinstance(signed, str) or len(signed) % 2 or any(c not in "0123456789abcdefABCDEF" for c in signed):
        raise ValueError('no hex "signed"')
    b = bytes.fromhex(signed)
    if len(b) != length or b[:5] != header:
        raise ValueError(f"bad {what} magic, version or length")
    return b


def read_revocation(obj) -> tuple:
    """docs/receipts.md "Revoking a key": one statement in its JSON form. Its signed bytes are
    "HREV", version 1, the key, keep and issued_ms (u64 LE), then a strict Ed25519 signature
    by that key over REVOKE_DOMAIN ‖ body; its readable fields must be those bytes'. Returns
    (key hex, keep) or raises ValueError."""
    b = _signed(obj, REVOCATION_FORMAT, b"HREV\x01", REVOCATION_LEN, "revocation")
    key = b[5:37]
    keep, issued_ms = struct.unpack_from("<QQ", b, 37)
    why = strict_verify(key, REVOKE_DOMAIN + b[:REVOKE_BODY_LEN], b[REVOKE_BODY_LEN:])
    if why:
        raise ValueError(f"the revocation's signature is not its key's: {why}")
    if (obj.get("key") != key.hex() or type(obj.get("keep")) is not int or obj["keep"] != keep
            or type(obj.get("issued_ms")) is not int or obj["issued_ms"] != issued_ms):
        raise ValueError("its key, keep or issued_ms is not its signed bytes'")
    return key.hex(), keep


def add_revocations(revoked: dict, text: str):
    """Every statement of a file (one statement, or a list of them) into `revoked`, key hex ->
    the smallest keep of all its statements. Raises ValueError."""
    value = json.loads(text)
    for i, obj in enumerate(value if isinstance(value, list) else [value]):
        try:
            key, keep = read_revocation(obj)
        except ValueError as e:
            raise ValueError(f"statement {i}: {e}" if isinstance(value, list) else str(e))
        revoked[key] = min(keep, revoked.get(key, keep))


def revocation_check(revoked: dict, submitter: str, seq) -> str:
    """Why a receipt countersigned by `submitter`, whose proof names commitment `seq` (None
    without a proof), no longer counts; "" when it does."""
    keep = revoked.get(submitter)
    if keep is None or (seq is not None and seq < keep):
        return ""
    place = "this receipt has no inclusion proof" if seq is None else f"this receipt is in commitment #{seq}"
    return f"its submitter {submitter} revoked its key, vouching only for commitments below #{keep}; {place}"


# ---------------------------------------------------------------- rotating a key
def next_digest(key: bytes) -> str:
    """The hash a key event commits to for the key after it: blake3(NEXT_KEY_DOMAIN ‖ key)."""
    return blake3.blake3(NEXT_KEY_DOMAIN + key).hexdigest()


def read_key_event(obj) -> dict:
    """docs/receipts.md "Rotating a key": one event in its JSON form. Its signed bytes are
    "HKEY", version 1, household, seq (u64 LE), key, next, issued_ms (u64 LE), then a strict
    Ed25519 signature by `key` over KEY_EVENT_DOMAIN ‖ body; event #0 is signed by the household
    itself; its readable fields must be those bytes'. Raises ValueError."""
    b = _signed(obj, KEY_EVENT_FORMAT, b"HKEY\x01", KEY_EVENT_LEN, "key event")
    household, key, nxt = b[5:37], b[45:77], b[77:109]
    (seq,) = struct.unpack_from("<Q", b, 37)
    (issued_ms,) = struct.unpack_from("<Q", b, 109)
    if seq == 0 and key != household:
        raise ValueError("event #0 is not signed by the household's own key")
    why = strict_verify(key, KEY_EVENT_DOMAIN + b[:KEY_EVENT_BODY_LEN], b[KEY_EVENT_BODY_LEN:])
    if why:
        raise ValueError(f"the key event's signature is not its key's: {why}")
    e = {"household": household.hex(), "seq": seq, "key": key.hex(), "next": nxt.hex(),
         "issued_ms": issued_ms, "signed": b.hex()}
    for k in ("household", "seq", "key", "next", "issued_ms"):
        if type(obj.get(k)) is not type(e[k]) or obj[k] != e[k]:
            raise ValueError("its household, seq, key, next or issued_ms is not its signed bytes'")
    return e


def add_key_log(events: list, text: str):
    """Every event of a key log (one event, or a list of them) into `events`. Raises ValueError."""
    value = json.loads(text)
    for i, obj in enumerate(value if isinstance(value, list) else [value]):
        try:
            events.append(read_key_event(obj))
        except ValueError as e:
            raise ValueError(f"event {i}: {e}" if isinstance(value, list) else str(e))


class KeyChains:
    """Every household's chain of keys built from its events, as docs/receipts.md ("Rotating a
    key") says: households in key order; event #0, then for n = 1, 2, ... the events #n whose
    key hashes to what #n-1 committed to and whose issued_ms is not below it; two different
    events under one number stop the chain at their key (the earlier issued_ms retires the key
    before); a key that is another household's, or already in a chain, stops it before it."""

    def __init__(self, events=(), first=None):
        """`first`: what auditors' logs heard first, (household, seq) -> signed hex, or None
        where logs disagree; where they hold one, only that event is taken under that number."""
        self.chains, self.owner, self.notes = {}, {}, []
        first = first or {}

        def heard_first(e):
            logged = first.get((e["household"], e["seq"]))
            return logged is None or logged == e["signed"]
        logs = {}
        for e in events:
            logs.setdefault(e["household"], {}).setdefault(e["seq"], {})[e["signed"]] = e
        taken = set(logs)
        for household in sorted(logs):
            log = logs[household]
            chain = [[household, None]]
            zero = [e for e in log.get(0, {}).values() if heard_first(e)]
            prev = zero[0] if len(zero) == 1 else None
            if not zero:
                self.notes.append(f"keys of household {household}: no event #0: its key is not rotated")
            elif len(zero) > 1:
                self.notes.append(f"keys of household {household}: two different events #0: "
                                  f"the chain stops at key {household}")
            while prev is not None:
                seq = prev["seq"] + 1
                cands = [e for e in log.get(seq, {}).values()
                         if next_digest(bytes.fromhex(e["key"])) == prev["next"]
                         and e["issued_ms"] >= prev["issued_ms"] and heard_first(e)]
                if not cands:
                    break
                key = cands[0]["key"]
                if key in taken:
                    self.notes.append(f"keys of household {household}: key {key} of event #{seq} is "
                                      f"another household's or already in a chain: the chain stops before it")
                    break
                taken.add(key)
                chain[-1][1] = min(e["issued_ms"] for e in cands)
                chain.append([key, None])
                prev = cands[0] if len(cands) == 1 else None
                if prev is None:
                    self.notes.append(f"keys of household {household}: two different events #{seq}: "
                                      f"the chain stops at key {key}")
            for i, (key, _) in enumerate(chain):
                self.owner[key] = (household, i)
            self.chains[household] = chain

    def household_of(self, key: str) -> str:
        return self.owner.get(key, (key, 0))[0]

    def keys_of(self, household: str) -> list:
        return self.chains.get(household, [[household, None]])

    def retired(self, worker: str, end_ms: int) -> str:
        """Why a receipt crediting `worker` over a window ending at `end_ms` no longer counts;
        "" when it does."""
        if worker not in self.owner:
            return ""
        household, i = self.owner[worker]
        at = self.chains[household][i][1]
        if at is None or end_ms <= at:
            return ""
        return (f"its worker key {worker} of household {household} was retired at {at} ms, "
                f"before its window ended at {end_ms} ms")


# ---------------------------------------------------------------- what an export credits
MJ_PER_WH = 3_600_000


def tally(receipts, committed, trusted, audited=None, chains=None) -> dict:
    """docs/receipts.md "What an export credits": per worker household (each key counted under
    its household by `chains`), what the valid receipts credit, per key, per submitter, in a
    verified commitment, and, with a list of trusted submitters, what those vouched for other
    than the household itself."""
    chains = chains or KeyChains()

    def trusts(key):
        return trusted is not None and any(k in trusted for k, _ in chains.keys_of(chains.household_of(key)))

    households = {}
    for f in receipts:
        household = chains.household_of(f["worker"])
        h = households.get(household)
        if h is None:
            h = households[household] = {
                "n": 0, "credited": 0, "claimed": 0, "by": {}, "committed": [0, 0], "audited": [0, 0],
                "trusted": [0, 0], "keys": [[k, at, 0, 0] for k, at in chains.keys_of(household)]}
        h["n"] += 1
        h["credited"] += f["credited_mj"]
        h["claimed"] += f["energy_mj"]
        for k in h["keys"]:
            if k[0] == f["worker"]:
                k[2] += 1
                k[3] += f["credited_mj"]
        by = h["by"].setdefault(f["submitter"], [0, 0, chains.household_of(f["submitter"]) == household,
                                                 trusts(f["submitter"])])
        by[0] += 1
        by[1] += f["credited_mj"]
        if f["id"] in committed:
            h["committed"][0] += 1
            h["committed"][1] += f["credited_mj"]
        if audited is not None and f["id"] in audited:
            h["audited"][0] += 1
            h["audited"][1] += f["credited_mj"]
        if trusted is not None and chains.household_of(f["submitter"]) != household and trusts(f["submitter"]):
            h["trusted"][0] += 1
            h["trusted"][1] += f["credited_mj"]
    return households


def tally_lines(households, trusted, audited=None) -> list:
    """The tally's lines: households in key order, each one's submitters in key order."""
    lines = []
    for worker, h in sorted(households.items()):
        lines.append(f"credit of household {worker}: {h['n']} receipts, {h['credited']} mJ credited "
                     f"({h['credited'] // MJ_PER_WH} Wh) of {h['claimed']} mJ claimed")
        if len(h["keys"]) > 1:
            for key, at, n, credited in h["keys"]:
                state = "current" if at is None else f"retired at {at} ms"
                lines.append(f"  under key {key} ({state}): {n} receipts, {credited} mJ")
        for submitter, (n, credited, self_dealt, trusts) in sorted(h["by"].items()):
            marks = [m for m, yes in (("self-dealt", self_dealt), ("trusted", trusts)) if yes]
            marks = f" ({', '.join(marks)})" if marks else ""
            lines.append(f"  countersigned by {submitter}{marks}: {n} receipts, {credited} mJ")
        lines.append(f"  in a verified commitment: {h['committed'][0]} receipts, {h['committed'][1]} mJ")
        if audited is not None:
            lines.append(f"  in a commitment an auditor logged: {h['audited'][0]} receipts, {h['audited'][1]} mJ")
        if trusted is not None:
            n, credited = h["trusted"]
            lines.append(f"  countersigned by trusted submitters, not self-dealt: {n} receipts, "
                         f"{credited} mJ ({credited // MJ_PER_WH} Wh)")
    return lines


def tally_json(households, trusted, receipts: int, valid: int, audited=None) -> dict:
    """The tally as one JSON object (docs/receipts.md, "As JSON")."""
    def pair(t):
        return {"receipts": t[0], "credited_mj": t[1]}
    return {
        "format": "hearth-credit/1",
        "receipts": receipts,
        "valid": valid,
        "households": [{
            "household": worker,
            "receipts": h["n"],
            "credited_mj": h["credited"],
            "credited_wh": h["credited"] // MJ_PER_WH,
            "claimed_mj": h["claimed"],
            "keys": [{"key": key, "retired_ms": at, "receipts": n, "credited_mj": credited}
                     for key, at, n, credited in h["keys"]],
            "by_submitter": [{
                "submitter": submitter,
                "self_dealt": self_dealt,
                "trusted": trusts,
                "receipts": n,
                "credited_mj": credited,
            } for submitter, (n, credited, self_dealt, trusts) in sorted(h["by"].items())],
            "committed": pair(h["committed"]),
            "audited": pair(h["audited"]) if audited is not None else None,
            "trusted": pair(h["trusted"]) if trusted is not None else None,
        } for worker, h in sorted(households.items())],
    }


def parse_trusted(text: str) -> set:
    """One household key (64 hex digits, either case) per line; blank lines and lines starting
    with # skipped, surrounding spaces ignored; anything else is an error naming its line."""
    keys = set()
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if len(line) != 64 or any(c not in "0123456789abcdefABCDEF" for c in line):
            raise ValueError(f"line {n}: {line!r} is not a household key (64 hex digits)")
        keys.add(line.lower())
    return keys


# ---------------------------------------------------------------- the export format
RECEIPT_KEYS = {
    "id": "hex32", "job": "hex32", "shard": "u32", "module": "hex32", "input": "hex32",
    "output": "hex32", "worker": "hex32", "submitter": "hex32", "fuel": "u64",
    "energy_mj": "u64", "energy_method": "name", "start_ms": "u64", "end_ms": "u64",
    "nonce": "hex16", "worker_sig": "hex64", "credited_mj": "u64", "basis": "name",
    "verified_by": "name", "agreeing": "u8", "replicas": "u8", "submitter_sig": "hex64",
    "canonical": f"hex{RECEIPT_LEN}",
}


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    dup = {k for k in keys if keys.count(k) > 1}
    if dup:
        raise ValueError(f"duplicate keys {sorted(dup)}")
    return dict(pairs)


def _exact_keys(obj, required, optional=(), where=""):
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected an object")
    missing = set(required) - obj.keys()
    unknown = obj.keys() - set(required) - set(optional)
    if missing or unknown:
        raise ValueError(f"{where}: missing keys {sorted(missing)}, unknown keys {sorted(unknown)}")


def _field(kind, value, where):
    if kind == "hexany":
        if not isinstance(value, str) or len(value) % 2 or any(c not in "0123456789abcdef" for c in value):
            raise ValueError(f"{where}: expected lowercase hex digits")
        return value
    if kind.startswith("hex"):
        n = 2 * int(kind[3:])
        if not isinstance(value, str) or len(value) != n or any(c not in "0123456789abcdef" for c in value):
            raise ValueError(f"{where}: expected {n} lowercase hex digits")
        return value
    if kind == "path":
        if not isinstance(value, list) or len(value) > MAX_PATH:
            raise ValueError(f"{where}: expected a list of at most {MAX_PATH} hashes")
        return [_field("hex32", p, where) for p in value]
    if kind == "u64":
        if not isinstance(value, str) or not value.isascii() or not value.isdigit() \
                or (len(value) > 1 and value[0] == "0") or int(value) > U64_MAX:
            raise ValueError(f"{where}: a u64 is a string of decimal digits without leading zeros")
        return int(value)
    if kind in ("u32", "u8"):
        top = 2**32 - 1 if kind == "u32" else 255
        if type(value) is not int or not 0 <= value <= top:
            raise ValueError(f"{where}: expected an integer 0..{top}")
        return value
    if not isinstance(value, str):
        raise ValueError(f"{where}: expected a name")
    return value


def check_export(export: dict, trusted=None, audit=None, revoked=None, chains=None):
    """docs/receipts.md "Verifying an export", then what it credits (`trusted`: the set of
    submitter keys the reader trusts, or None; `revoked`: `add_revocations`' map, or None;
    `chains`: the households' key chains, `KeyChains`, or None).
    Returns (lines, number of receipts, failures, the credit as JSON)."""
    chains = chains or KeyChains()
    lines, bad = list(chains.notes), 0
    _exact_keys(export, ("format", "receipts"), ("chain", "inclusions"), "export")
    if export["format"] not in EXPORT_FORMATS:
        raise ValueError(f"format {export['format']!r}, expected one of {EXPORT_FORMATS!r}")
    if "inclusions" in export and export["format"] != EXPORT_FORMAT:
        raise ValueError(f"inclusions need format {EXPORT_FORMAT!r}")
    if not isinstance(export["receipts"], list):
        raise ValueError("receipts: expected a list")
    valid, valid_at, slots = [], [], {}
    for i, r in enumerate(export["receipts"]):
        try:
            _exact_keys(r, RECEIPT_KEYS, (), f"receipt {i}")
            readable = {k: _field(kind, r[k], f"receipt {i} {k}") for k, kind in RECEIPT_KEYS.items()}
            fields = verify(bytes.fromhex(readable["canonical"]))
            for k, v in readable.items():
                if fields[k] != v:
                    raise ValueError(f"field {k!r} does not match the canonical bytes")
            household = chains.household_of(fields["worker"])
            slot = (fields["job"], fields["shard"], household)
            if slot in slots:
                if slots[slot] == fields["worker"]:
                    raise ValueError("an earlier receipt covers the same job, shard and worker")
                raise ValueError(f"an earlier receipt covers the same job and shard for household "
                                 f"{household}, under another of its keys")
            slots[slot] = fields["worker"]
            valid.append(fields)
            valid_at.append(i)
            lines.append(f"receipt {i}: valid, id {fields['id']}, shard {fields['shard']}, "
                         f"{fields['credited_mj']} of {fields['energy_mj']} mJ credited "
                         f"({fields['basis']}, {fields['energy_method']})")
        except (ValueError, KeyError) as e:
            bad += 1
            lines.append(f"receipt {i}: INVALID: {e}")
    chain = export.get("chain")
    if chain is not None:
        try:
            lines.append(check_chain(chain, [bytes.fromhex(r["canonical"]) for r in export["receipts"]
                                             if isinstance(r, dict) and isinstance(r.get("canonical"), str)],
                                     chains))
        except ValueError as e:
            bad += 1
            lines.append(f"chain: INVALID: {e}")
    listed = {r.get("id") for r in export["receipts"] if isinstance(r, dict)}
    proof_lines, proof_bad, proven, audited = check_inclusions(export.get("inclusions", []), valid, listed, audit)
    audited = audited if audit is not None else None
    lines += proof_lines
    bad += proof_bad
    # Revocations: a receipt countersigned by a revoked key counts only in a commitment
    # numbered below the line its statements draw; then conservation over what counts.
    kept = []
    for i, fields in zip(valid_at, valid):
        why = revocation_check(revoked or {}, fields["submitter"], proven.get(fields["id"]))
        retired = chains.retired(fields["worker"], fields["end_ms"])
        if why:
            bad += 1
            lines.append(f"receipt {i}: REVOKED: {why}")
        elif retired:
            bad += 1
            lines.append(f"receipt {i}: RETIRED: {retired}")
        else:
            kept.append(fields)
    valid = kept
    why = conservation(valid, chains)
    if why:
        bad += 1
        lines.append(f"conservation: INVALID: {why}")
    households = tally(valid, proven, trusted, audited, chains)
    lines += tally_lines(households, trusted, audited)
    credit = tally_json(households, trusted, len(export["receipts"]), len(valid), audited)
    return lines, len(export["receipts"]), bad, credit


def conservation(receipts, chains=None) -> str:
    """docs/receipts.md "Conservation": for each household and each interval [a, b] from some
    receipt's start to some receipt's end, the energy claimed by its receipts lying inside
    [a, b] is at most MAX_WATTS x (b - a). None if it holds, else what breaks it (the interval
    with the earliest a, and for it the earliest b)."""
    chains = chains or KeyChains()
    households = {}
    for f in receipts:
        households.setdefault(chains.household_of(f["worker"]), []).append(
            (f["start_ms"], f["end_ms"], f["energy_mj"]))
    for household, windows in sorted(households.items()):
        broken = overdrawn(windows)
        if broken:
            a, b, total = broken
            return (f"household {household}: receipts within {a}..{b} ms claim "
                    f"{total} mJ, more than {MAX_WATTS} W can deliver in {b - a} ms")
    return None


def overdrawn(windows):
    """The interval (a, b, energy inside) that breaks conservation with the earliest a, and for
    it the earliest b; None if none does. Every a against every b would take hours for a year
    of receipts, so a sweeps the starts from the latest down, each window joining when a
    reaches its start and adding its energy to S(b) for every end b at or after its own; a
    segment tree over the distinct ends holds S(b) - MAX_WATTS * b, and [a, b] breaks the
    law exactly when that exceeds -MAX_WATTS * a (b >= a). O(n log n)."""
    ends = sorted({w[1] for w in windows})
    n = len(ends)
    size = 1
    while size < n:
        size *= 2
    low = -(1 << 200)
    best = [low] * (2 * size)   # max over a node's leaves, its own pending addition included
    add = [0] * (2 * size)      # addition pending for a node's leaves
    for i, b in enumerate(ends):
        best[size + i] = -MAX_WATTS * b
    for v in range(size - 1, 0, -1):
        best[v] = max(best[2 * v], best[2 * v + 1])

    def add_from(lo, value, v=1, l=0, r=size - 1):
        if r < lo:
            return
        if lo <= l:
            best[v] += value
            add[v] += value
            return
        m = (l + r) // 2
        add_from(lo, value, 2 * v, l, m)
        add_from(lo, value, 2 * v + 1, m + 1, r)
        best[v] = max(best[2 * v], best[2 * v + 1]) + add[v]

    def first_above(lo, t, v=1, l=0, r=size - 1, above=0):
        if r < lo or best[v] + above <= t:
            return None
        if l == r:
            return l, best[v] + above
        m = (l + r) // 2
        above += add[v]
        found = first_above(lo, t, 2 * v, l, m, above)
        return found if found is not None else first_above(lo, t, 2 * v + 1, m + 1, r, above)

    found = None
    by_start = sorted(windows, key=lambda w: -w[0])
    i = 0
    while i < len(by_start):
        a = by_start[i][0]
        while i < len(by_start) and by_start[i][0] == a:
            _, end, energy = by_start[i]
            add_from(bisect.bisect_left(ends, end), energy)
            i += 1
        hit = first_above(bisect.bisect_left(ends, a), -MAX_WATTS * a) if n else None
        if hit is not None:
            at, value = hit
            found = (a, ends[at], value + MAX_WATTS * ends[at])
    return found


def check_chain(chain: dict, receipts, chains=None) -> str:
    chains = chains or KeyChains()
    _exact_keys(chain, ("household", "length", "head", "entries"), (), "chain")
    household = _field("hex32", chain["household"], "chain household")
    length = _field("u64", chain["length"], "chain length")
    if not isinstance(chain["entries"], list):
        raise ValueError("chain entries: expected a list")
    if length != len(chain["entries"]):
        raise ValueError(f"length {length} but {len(chain['entries'])} entries")
    own = set()
    for r in receipts:
        try:
            f = decode(r)
        except ValueError:
            continue
        if chains.household_of(f["worker"]) == household:
            own.add(f["id"])
    prev, seen = bytes(32), set()
    for n, e in enumerate(chain["entries"]):
        _exact_keys(e, ("id", "entry"), (), f"chain entry {n}")
        rid = _field("hex32", e["id"], f"chain entry {n} id")
        entry = _field("hex32", e["entry"], f"chain entry {n} entry")
        if blake3.blake3(prev + bytes.fromhex(rid)).hexdigest() != entry:
            raise ValueError(f"entry {n} does not link to the one before")
        if rid not in own:
            raise ValueError(f"entry {n} names {rid}, not a receipt of this export crediting {household}")
        if rid in seen:
            raise ValueError(f"entry {n} names {rid} twice")
        seen.add(rid)
        prev = bytes.fromhex(entry)
    if _field("hex32", chain["head"], "chain head") != prev.hex():
        raise ValueError("the head is not the last entry")
    missing = own - seen
    if missing:
        raise ValueError(f"receipt {sorted(missing)[0]} credits {household} but is not on its chain")
    return f"chain of household {household}: {length} entries, links, head and receipts agree"


def load_export(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f, object_pairs_hook=_no_duplicates)


# ---------------------------------------------------------------- examples and test vectors
HERE = os.path.dirname(os.path.abspath(__file__))
FORGED_KEY = bytes([1]) + bytes(31)       # the neutral point
FORGED_SIG = bytes([1]) + bytes(31) + bytes(32)  # R = neutral point, S = 0
TORSION_SIG_0 = "70180a56bd154a7f10d2f3a8115b1f3866ef9d32bb7cbcbfe1387bbd2e5248ef49bd7e64de486a9f9d1972d8066bb3b09a4253e83acb9e71aa026d2243250602"


def example() -> bytes:
    doc = open(os.path.join(HERE, "receipts.md"), encoding="utf-8").read()
    block = doc.split("The receipt's 395 bytes,\n32 per line:")[1].split("```text")[1].split("```")[0]
    return bytes.fromhex("".join(block.split()))


def self_test() -> list:
    """The worked examples and the refusals docs/receipts.md promises. Returns failures."""
    failures = []

    def expect(ok, what):
        print(f"{'ok  ' if ok else 'FAIL'} {what}")
        if not ok:
            failures.append(what)

    ex = example()
    f = verify(ex)
    expect(f["id"] == "5439cfefcdf9e94a9b36a67e78a7ebb0c94003705144a63dfc5415741ca2763e",
           f"worked example verifies, id {f['id']}")
    expect(public_key(bytes([1]) * 32).hex() == f["worker"], "worker key from seed 32 x 01")

    # Conservation's sweep against its definition (every start against every end).
    import random
    rng, agree = random.Random(7), True
    for _ in range(400):
        ws = [(s, s + rng.randrange(12), rng.randrange(60_000))
              for s in (rng.randrange(40) for _ in range(rng.randrange(14)))]
        want = None
        for a in sorted({w[0] for w in ws}):
            for b in sorted({w[1] for w in ws if w[1] >= a}):
                inside = sum(e for s, t, e in ws if s >= a and t <= b)
                if inside > MAX_WATTS * (b - a):
                    want = (a, b, inside)
                    break
            if want:
                break
        agree &= overdrawn(ws) == want
    expect(agree, "conservation's sweep finds what its definition finds, on 400 random sets")

    # What the example export credits, with its submitter trusted (docs/receipts.md, "What an
    # export credits"): the lines given there, exactly.
    export = load_export(os.path.join(HERE, "receipts-example.json"))
    audit = {}
    add_audit_log(audit, open(os.path.join(HERE, "audit-example.json"), encoding="utf-8").read())
    lines, _, bad, credit = check_export(export, parse_trusted(f"# the example's submitter\n{f['submitter']}\n"),
                                         audit)
    doc = open(os.path.join(HERE, "receipts.md"), encoding="utf-8").read()
    given = doc.split("prints, for the example export")[1].split("```text")[1].split("```")[0]
    expect(bad == 0 and [l for l in lines if l.startswith(("credit of", "  "))] == given.strip("\n").split("\n"),
           "the example export's credit, with its submitter trusted, is the one docs/receipts.md gives")
    given = doc.split("**As JSON.**")[1].split("```json")[1].split("```")[0]
    expect(credit == json.loads(given), "and as JSON, the object docs/receipts.md gives")
    logged = json.load(open(os.path.join(HERE, "audit-example.json"), encoding="utf-8"))
    edited = json.loads(json.dumps(logged))
    edited["commitments"][0]["seq"] = 5
    try:
        add_audit_log({}, json.dumps(edited))
        expect(False, "an auditor's log whose seq was edited is refused")
    except ValueError:
        expect(True, "an auditor's log whose seq was edited is refused")
    twice = {}
    add_audit_log(twice, json.dumps(logged))
    other = json.loads(json.dumps(logged))
    other["equivocations"] = [{"seq": 0, "first": logged["commitments"][0], "second": logged["commitments"][0]}]
    add_audit_log(twice, json.dumps(other))
    expect(twice[(f["submitter"], 0)] is not None, "the same commitment in two logs still counts")
    _, _, _, unlogged = check_export(export, None, {(f["submitter"], 0): None})
    expect(all(h["audited"]["receipts"] == 0 for h in unlogged["households"]),
           "a commitment the logs hold two bodies for counts for neither")
    # Revoking a key (docs/receipts.md, "Revoking a key"): the example statement keeps the
    # submitter's commitment 0, so all four receipts still count; one keeping none voids them,
    # and of two statements the smaller keep stands.
    statement = json.load(open(os.path.join(HERE, "revocation-example.json"), encoding="utf-8"))
    revoked = {}
    add_revocations(revoked, json.dumps(statement))
    expect(revoked == {f["submitter"]: 1}, "the example revocation verifies: keep 1")
    _, _, bad, kept = check_export(export, None, None, revoked)
    expect(bad == 0 and kept["valid"] == 4, "it leaves the example export's four receipts in commitment 0")
    seed = bytes([2]) * 32
    body = b"HREV\x01" + public_key(seed) + struct.pack("<QQ", 0, 1700000200000)
    none = {"format": REVOCATION_FORMAT, "key": public_key(seed).hex(), "keep": 0,
            "issued_ms": 1700000200000, "signed": (body + sign(seed, REVOKE_DOMAIN + body)).hex()}
    add_revocations(revoked, json.dumps([statement, none]))
    expect(revoked == {f["submitter"]: 0}, "of two statements the smaller keep stands")
    lines, _, bad, voided = check_export(export, None, None, revoked)
    given = doc.split("keeping none instead")[1].split("```text")[1].split("```")[0].strip("\n")
    expect(bad == 4 and voided["valid"] == 0 and voided["households"] == [] and given in lines,
           "a statement keeping none voids all four, saying so as docs/receipts.md gives")
    # An auditor's log carries the revocation its auditor heard; it applies as one given.
    from_log = {}
    add_audit_log({}, json.dumps({**logged, "revocation": {**none, "first_seen_ms": 5}}), from_log)
    expect(from_log == {f["submitter"]: 0}, "an auditor's log's revocation applies")
    try:
        add_audit_log({}, json.dumps({**logged, "revocation": {**none, "keep": 1}}), {})
        expect(False, "an auditor's log with an edited revocation is refused")
    except ValueError:
        expect(True, "an auditor's log with an edited revocation is refused")
    for edit in ({"keep": 2}, {"keep": True}, {"signed": statement["signed"][:-2] + "00"},
                 {"format": "hearth-revocation/2"}, {"signed": " " + statement["signed"][1:]}):
        try:
            add_revocations({}, json.dumps({**statement, **edit}))
            expect(False, f"a revocation edited to {str(edit)[:40]} is refused")
        except ValueError:
            expect(True, f"a revocation edited to {str(edit)[:40]} is refused")
    # Rotating a key (docs/receipts.md, "Rotating a key"): the example log makes the first
    # worker one household under two keys; its receipt that ended after its first key was
    # retired is refused, and the household's lines are the documented ones.
    events = []
    add_key_log(events, open(os.path.join(HERE, "key-log-example.json"), encoding="utf-8").read())
    chains = KeyChains(events)
    expect(chains.household_of(public_key(bytes([4]) * 32).hex()) == public_key(bytes([1]) * 32).hex()
           and not chains.notes, "the example key log chains the first worker's key to seed 04's")
    lines, _, bad, rotated = check_export(export, None, None, None, chains)
    given = doc.split("print for that household:")[1].split("```text")[1].split("```")[0].strip("\n")
    expect(bad == 1 and rotated["valid"] == 3 and all(line in lines for line in given.split("\n")),
           "with the example key log, receipt 2 is retired and the lines are docs/receipts.md's")
    printed = doc.split("Event #1's 181 bytes:")[1].split("```text")[1].split("```")[0]
    expect("".join(printed.split()) == events[1]["signed"], "docs/receipts.md prints event #1's bytes")
    # The export's other worker (seed 03) as the next key: shard 7 twice for one household.
    def key_event(seq, seed, nxt, issued):
        body = (b"HKEY\x01" + public_key(bytes([1]) * 32) + struct.pack("<Q", seq)
                + public_key(bytes([seed]) * 32) + bytes.fromhex(next_digest(public_key(bytes([nxt]) * 32)))
                + struct.pack("<Q", issued))
        b = body + sign(bytes([seed]) * 32, KEY_EVENT_DOMAIN + body)
        return read_key_event({"format": KEY_EVENT_FORMAT, "household": b[5:37].hex(), "seq": seq,
                               "key": b[45:77].hex(), "next": b[77:109].hex(), "issued_ms": issued,
                               "signed": b.hex()})
    twin = KeyChains([key_event(0, 1, 3, 1699999999000), key_event(1, 3, 5, 1700000100000)])
    lines, _, bad, _ = check_export(export, None, None, None, twin)
    expect(any(line.startswith("receipt 3: INVALID: an earlier receipt covers the same job and shard")
               and line.endswith("under another of its keys") for line in lines),
           "a second receipt for one shard under another key of the household is refused")
    # A second event #0 freezes the chain at the first key; an event whose key was not
    # committed to is not followed.
    frozen = KeyChains(events + [key_event(0, 1, 3, 1699999999001)])
    expect(frozen.keys_of(events[0]["household"]) == [[events[0]["household"], None]]
           and "two different events #0" in frozen.notes[0], "two events #0 stop the chain at the first key")
    stray = KeyChains([events[0], key_event(1, 3, 5, 1700000100000)])
    expect(len(stray.keys_of(events[0]["household"])) == 1, "an event by a key not committed to is not followed")
    # An auditor's log that heard the household's #0 first (and the forged one later, as a
    # contest) settles it: the chain is the household's again.
    forged = key_event(0, 1, 3, 1699999999001)
    logged = lambda e: {k: e[k] for k in ("household", "seq", "key", "next", "issued_ms", "signed")} | {
        "format": KEY_EVENT_FORMAT, "first_seen_ms": 7}
    log = {"coordinator": events[0]["household"], "key_events": [logged(e) for e in events],
           "key_contests": [{"seq": 0, "first": logged(events[0]), "second": logged(forged)}]}
    keys = {"events": [], "first": {}}
    add_audit_log({}, json.dumps(log), None, keys)
    settled = KeyChains(keys["events"], keys["first"])
    expect(len(settled.keys_of(events[0]["household"])) == 2 and not settled.notes,
           "an auditor's log that heard the household's event #0 first settles a contest")
    other = {**log, "key_events": [logged(forged)], "key_contests": []}
    add_audit_log({}, json.dumps(other), None, keys)
    disputed = KeyChains(keys["events"], keys["first"])
    expect(len(disputed.keys_of(events[0]["household"])) == 1,
           "auditors' logs that disagree on the first event #0 leave the chain stopped")
    for edit in ({"seq": 2}, {"issued_ms": True}, {"signed": events[1]["signed"][:-2] + "00"},
                 {"format": "hearth-key-event/2"}, {"key": events[0]["key"]}):
        try:
            add_key_log([], json.dumps({**events[1], **edit}))
            expect(False, f"a key event edited to {str(edit)[:40]} is refused")
        except ValueError:
            expect(True, f"a key event edited to {str(edit)[:40]} is refused")

    for text in ("ab" * 31, "ab" * 32 + " x", "0x" + "ab" * 31):
        try:
            parse_trusted(text)
            expect(False, f"a trusted list reading {text!r} is refused")
        except ValueError:
            expect(True, f"a trusted list reading {text[:12]!r}... is refused")

    # The small-order forgery: a naive check accepts it for any message, the strict one never.
    naive = None
    try:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
        naive = Ed25519PublicKey.from_public_bytes(FORGED_KEY)
    except ImportError:
        print("     (python package cryptography absent: naive-library demonstration skipped)")
    for msg in (b"", b"any message", WORKER_DOMAIN + ex[:RECORD_LEN]):
        expect(strict_verify(FORGED_KEY, msg, FORGED_SIG) == "the key is a point of small order",
               f"small-order forgery refused for a {len(msg)}-byte message")
        if naive is not None:
            try:
                naive.verify(FORGED_SIG, msg)
                expect(True, "  ... while OpenSSL (cryptography) accepts it")
            except Exception:
                expect(False, "  ... OpenSSL was expected to accept the forgery")
    forged = bytearray(ex)
    forged[137:169] = FORGED_KEY
    forged[169:201] = FORGED_KEY
    forged[RECORD_LEN:CLAIM_LEN] = FORGED_SIG
    forged[CLAIM_LEN + TERMS_LEN:] = FORGED_SIG
    try:
        verify(bytes(forged))
        expect(False, "a receipt signed with the small-order forgery is refused")
    except ValueError as e:
        expect("small order" in str(e), f"a receipt signed with the small-order forgery is refused ({e})")

    # Non-canonical S (S + L) and a non-canonical key encoding (y = p + 3).
    s_plus_l = ex[CLAIM_LEN + TERMS_LEN:CLAIM_LEN + TERMS_LEN + 32] + \
        (int.from_bytes(ex[-32:], "little") + L).to_bytes(32, "little")
    expect(strict_verify(ex[169:201], SUBMITTER_DOMAIN + ex[:RECORD_LEN] + ex[CLAIM_LEN:CLAIM_LEN + TERMS_LEN],
                         s_plus_l) == "S is not below L", "S + L refused")
    expect(strict_verify((P + 3).to_bytes(32, "little"), b"m", ex[RECORD_LEN:CLAIM_LEN])
           == "the key is not a canonical point encoding", "key y = p + 3 refused")

    # R with a component of order 2 (src/identity.rs TORSION_SIGS[0]): canonical, not of small
    # order, refused by the cofactorless equation alone.
    torsion_key = bytes.fromhex("fd1724385aa0c75b64fb78cd602fa1d991fdebf76b13c58ed702eac835e9f618")
    torsion_sig = bytes.fromhex(TORSION_SIG_0)
    expect(strict_verify(torsion_key, b"torsion-0", torsion_sig) == "the equation does not hold",
           "R with a small-order component refused by the equation")

    # Issue 9: receipts minted by two fresh keys with energy = fuel = end_ms = 2^64 - 1.
    wseed, sseed = os.urandom(32), os.urandom(32)
    wpub, spub = public_key(wseed), public_key(sseed)
    refused, signatures_ok = 0, 0
    for i in range(1000):
        start = (0, U64_MAX - i, U64_MAX - MAX_WINDOW_MS + i, (i * 0x9E3779B97F4A7C15) % 2**64)[i % 4]
        record = ex[:137] + wpub + spub + struct.pack("<QQ", U64_MAX, U64_MAX) + bytes([2]) + \
            struct.pack("<QQ", start, U64_MAX) + ex[234:250]
        record = record[:37] + struct.pack("<I", i) + record[41:]
        terms = b"HRCT\x01" + struct.pack("<Q", U64_MAX) + bytes([1, 1, 1, 1])
        if i < 4:  # signing in pure Python is slow; four real signatures show it is not about them
            wsig, ssig = sign(wseed, WORKER_DOMAIN + record), sign(sseed, SUBMITTER_DOMAIN + record + terms)
            signatures_ok += strict_verify(wpub, WORKER_DOMAIN + record, wsig) is None
        else:
            wsig, ssig = ex[RECORD_LEN:CLAIM_LEN], ex[CLAIM_LEN + TERMS_LEN:]
        try:
            verify(record + wsig + terms + ssig)
        except ValueError as e:
            refused += str(e).startswith("physics")
    expect(signatures_ok == 4 and refused == 1000,
           f"{refused} of 1000 minted 2^64-1 receipts refused for physics")

    # The complete example export, with its chain; then the same export pruned and edited.
    export = load_export(os.path.join(HERE, "receipts-example.json"))
    lines, n, bad, _ = check_export(export)
    for line in lines:
        print(f"     {line}")
    expect(n == 4 and bad == 0, "docs/receipts-example.json verifies, chain included")
    pruned = json.loads(json.dumps(export))
    gone = pruned["receipts"].pop(1)["id"]
    pruned["inclusions"] = [j for j in pruned["inclusions"] if j["receipt"] != gone]
    expect(check_export(pruned)[2] == 1, "a receipt pruned from the export breaks the chain")
    edited = json.loads(json.dumps(export))
    edited["receipts"][0]["credited_mj"] = "42000"
    expect(check_export(edited)[2] == 1, "an edited readable field is caught")
    numbered = json.loads(json.dumps(export))
    numbered["receipts"][2]["fuel"] = int(numbered["receipts"][2]["fuel"])
    expect(check_export(numbered)[2] >= 1, "a u64 written as a JSON number is refused")
    two = [{"worker": "aa", "start_ms": 1000, "end_ms": 2000, "energy_mj": 2_000_000}] * 2
    expect(conservation(two[:1]) is None and conservation(two) is not None,
           "two 2 000 W receipts of one household over the same second break conservation")
    doubled = json.loads(json.dumps(export))
    doubled["receipts"].append(doubled["receipts"][0])
    expect(check_export(doubled)[2] >= 1, "a second receipt for the same job, shard and worker is refused")

    # Inclusion proofs: the example's four receipts are in the submitter's commitment 0.
    proven = [l for l in lines if "proven included" in l]
    expect(proven == ["4 receipts proven included in 1 signed commitments; 0 without an inclusion proof"],
           "every receipt of the example is proven included in one signed commitment")
    ids = sorted(bytes.fromhex(r["id"]) for r in export["receipts"])
    expect(merkle_root([leaf_hash(i) for i in ids]).hex() == export["inclusions"][0]["root"],
           "the committed root is the Merkle root of the sorted receipt ids")
    for what, edit in (
        ("a proof moved to another receipt", lambda j: j[0].update(receipt=j[1]["receipt"])),
        ("a proof with a flipped path hash", lambda j: j[0].update(
            canonical=j[0]["canonical"][:-2] + ("00" if j[0]["canonical"][-2:] != "00" else "01"),
            path=j[0]["path"][:-1] + [j[0]["path"][-1][:-2] + ("00" if j[0]["path"][-1][-2:] != "00" else "01")])),
        ("a proof whose readable root was edited", lambda j: j[0].update(root="00" * 32)),
    ):
        tampered = json.loads(json.dumps(export))
        edit(tampered["inclusions"])
        expect(check_export(tampered)[2] >= 1, f"{what} is refused")
    for count in range(1, 20):
        leaves = [leaf_hash(bytes([i]) * 32) for i in range(count)]
        root = merkle_root(leaves)
        ok = True
        for m in range(count):
            path = []

            def audit(m, d):
                if len(d) <= 1:
                    return
                k = 1
                while k * 2 < len(d):
                    k *= 2
                if m < k:
                    audit(m, d[:k])
                    path.append(merkle_root(d[k:]))
                else:
                    audit(m - k, d[k:])
                    path.append(merkle_root(d[:k]))
            audit(m, leaves)
            ok &= root_from_path(leaves[m], m, count, path) == root
            ok &= count == 1 or root_from_path(leaves[m], (m + 1) % count, count, path) != root
        expect(ok, f"every audit path of a {count}-leaf tree leads to its root, and no other index's")
    return failures


def main() -> int:
    if sys.argv[1:] == ["--example"]:
        failures = self_test()
        print(f"{len(failures)} failures")
        return 1 if failures else 0
    args, trusted, audit, revoked = [], None, None, {}
    keys = {"events": [], "first": {}}
    rest = sys.argv[1:]
    as_json = "--json" in rest
    rest = [a for a in rest if a != "--json"]
    while rest:
        a = rest.pop(0)
        if a in ("--trusted", "--audit", "--revoked", "--keys") and rest:
            path = rest.pop(0)
            try:
                with open(path, encoding="utf-8") as f:
                    text = f.read()
                if a == "--trusted":
                    trusted = parse_trusted(text)
                elif a == "--revoked":
                    add_revocations(revoked, text)
                elif a == "--keys":
                    add_key_log(keys["events"], text)
                else:
                    audit = {} if audit is None else audit
                    add_audit_log(audit, text, revoked, keys)
            except (ValueError, OSError) as e:
                print(f"{path}: {e}", file=sys.stderr)
                return 1
        else:
            args.append(a)
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        lines, n, bad, credit = check_export(load_export(args[0]), trusted, audit, revoked, KeyChains(keys["events"], keys["first"]))
    except (ValueError, OSError) as e:
        print(f"{args[0]}: {e}", file=sys.stderr)
        return 1
    out = sys.stderr if as_json else sys.stdout
    for line in lines:
        if not (as_json and line.startswith(("credit of", "  "))):
            print(line, file=out)
    if as_json:
        print(json.dumps(credit, indent=2, sort_keys=True))
    print(f"{n} receipts, {n - min(bad, n)} valid, {bad} invalid", file=out)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
