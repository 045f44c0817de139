#!/usr/bin/env python3
"""An independent verifier of hearth heat-work receipts, written from docs/receipts.md alone.

    pip install blake3 cryptography
    python3 docs/verify_receipt.py receipts.json      # an export of `hearth receipts export --json`
    python3 docs/verify_receipt.py --example          # the worked example in docs/receipts.md

Exits 0 when every receipt verifies, 1 otherwise.
"""
import json
import struct
import sys

import blake3
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

RECORD_LEN, RECEIPT_LEN = 250, 378
WORKER_DOMAIN = b"hearth/receipt/worker/v1"
SUBMITTER_DOMAIN = b"hearth/receipt/submitter/v1"


def verify(receipt: bytes) -> dict:
    """Runs the steps of docs/receipts.md; returns the decoded fields or raises ValueError."""
    if len(receipt) != RECEIPT_LEN:
        raise ValueError(f"a receipt is {RECEIPT_LEN} bytes, not {len(receipt)}")
    record, worker_sig, submitter_sig = receipt[:250], receipt[250:314], receipt[314:]
    if record[0:4] != b"HRCP" or record[4] != 1:
        raise ValueError("bad magic or version")
    (shard,) = struct.unpack_from("<I", record, 37)
    fuel, energy_mj = struct.unpack_from("<QQ", record, 201)
    method = record[217]
    start_ms, end_ms = struct.unpack_from("<QQ", record, 218)
    if method not in (1, 2, 3) or end_ms < start_ms:
        raise ValueError("bad energy method or time window")
    worker, submitter = record[137:169], record[169:201]
    for key, domain, sig, role in (
        (worker, WORKER_DOMAIN, worker_sig, "worker"),
        (submitter, SUBMITTER_DOMAIN, submitter_sig, "submitter"),
    ):
        try:
            Ed25519PublicKey.from_public_bytes(key).verify(sig, domain + record)
        except InvalidSignature:
            raise ValueError(f"the {role} signature does not verify") from None
    return {
        "id": blake3.blake3(record).hexdigest(),
        "job": record[5:37].hex(),
        "shard": shard,
        "worker": worker.hex(),
        "submitter": submitter.hex(),
        "fuel": fuel,
        "energy_mj": energy_mj,
        "method": {1: "rapl", 2: "cpu_estimate", 3: "simulated"}[method],
    }


def example() -> bytes:
    doc = open(__file__.replace("verify_receipt.py", "receipts.md"), encoding="utf-8").read()
    block = doc.split("The receipt's 378 bytes, 32 per line:")[1].split("```text")[1].split("```")[0]
    return bytes.fromhex("".join(block.split()))


def main() -> int:
    if sys.argv[1:] == ["--example"]:
        receipts = [example()]
    elif len(sys.argv) == 2:
        export = json.load(open(sys.argv[1], encoding="utf-8"))
        if export.get("format") != "hearth-receipts/1":
            print("not a hearth-receipts/1 export", file=sys.stderr)
            return 1
        receipts = [bytes.fromhex(r["canonical"]) for r in export["receipts"]]
    else:
        print(__doc__, file=sys.stderr)
        return 2
    bad = 0
    for i, r in enumerate(receipts):
        try:
            fields = verify(r)
            print(f"receipt {i}: valid, id {fields['id']}, shard {fields['shard']}, "
                  f"{fields['energy_mj']} mJ ({fields['method']})")
        except ValueError as e:
            bad += 1
            print(f"receipt {i}: INVALID: {e}")
    print(f"{len(receipts)} receipts, {len(receipts) - bad} valid, {bad} invalid")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
