#!/usr/bin/env python3
"""A partner platform's consumer of Clew's Kafka topics, written with nothing
of Clew but its proto files.

It reads the sequenced, checkpoint and rejected topics from the beginning,
decodes every ledger entry (clew.v1.SequencedEntry -> Envelope -> Event),
checks each producer's Ed25519 signature over the DSSE pre-authentication
encoding against the key that the stream itself registered earlier, checks
each checkpoint's C2SP signed-note signature with the ledger's verifier key,
and recomputes the RFC 6962 Merkle tree root for every checkpoint size.
With --witness keys (C2SP tlog-cosignature, cosignature/v1) it also checks
the witnesses' cosignatures the checkpoints carry, and refuses a latest
checkpoint cosigned by fewer than --quorum of them, naming those missing.

Prints progress on stderr and one JSON report as its last stdout line; exits
non-zero when anything fails to verify.
"""

import argparse
import base64
import hashlib
import importlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

PAYLOAD_TYPE = "application/vnd.clew.event+protobuf"


def compile_protos(proto_dir: Path, out: Path):
    """Generates Python modules from proto/ with the protoc bundled in grpcio-tools."""
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    files = [str(p) for p in sorted(proto_dir.rglob("*.proto"))]
    cmd = [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_dir}", f"-I{include}",
           f"--python_out={out}", *files]
    subprocess.run(cmd, check=True)
    sys.path.insert(0, str(out))
    return (importlib.import_module("clew.v1.envelope_pb2"),
            importlib.import_module("clew.v1.events_pb2"))


def parse_key(text: str, algorithm: int, what: str):
    """<name>+<hex key ID>+<base64(algorithm byte || Ed25519 key)>, the key ID
    being SHA-256(name || 0x0A || algorithm byte || key)[:4]."""
    name, keyhash, b64 = text.strip().split("+", 2)
    raw = base64.b64decode(b64)
    if raw[0] != algorithm or len(raw) != 33:
        raise ValueError(f"not {what}: {text}")
    key_id = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    if key_id.hex() != keyhash:
        raise ValueError(f"key hash does not match: {text}")
    return name, key_id, Ed25519PublicKey.from_public_bytes(raw[1:])


def parse_vkey(text: str):
    """c2sp.org/signed-note Ed25519 verifier key (algorithm 0x01)."""
    return parse_key(text, 0x01, "an Ed25519 verifier key")


def parse_witness_vkey(text: str):
    """c2sp.org/tlog-cosignature cosignature/v1 verifier key (algorithm 0x04)."""
    return parse_key(text, 0x04, "a cosignature/v1 verifier key")


def note_lines(note: bytes):
    """A signed note's text (with its final newline) and its signature lines."""
    text, sep, sigs = note.partition(b"\n\n")
    if not sep:
        raise ValueError("note has no signature block")
    return text + b"\n", [l for l in sigs.decode().splitlines() if l.startswith("\u2014 ")]


def cosigned_by(note: bytes, witnesses):
    """c2sp.org/tlog-cosignature: the witnesses whose cosignature/v1 line
    (key ID || 8-byte big-endian time || Ed25519 signature of
    "cosignature/v1\ntime <t>\n" + checkpoint text) verifies; and the names of
    those whose line is there but does not verify."""
    text, lines = note_lines(note)
    good, bad = set(), set()
    for line in lines:
        signer, _, blob = line[2:].partition(" ")
        raw = base64.b64decode(blob)
        for name, key_id, key in witnesses:
            if signer != name or raw[:4] != key_id:
                continue
            if len(raw) != 4 + 8 + 64:
                bad.add(name)
                continue
            t = int.from_bytes(raw[4:12], "big")
            try:
                key.verify(raw[12:], b"cosignature/v1\ntime %d\n" % t + text)
                good.add(name)
            except InvalidSignature:
                bad.add(name)
    return good, bad


def merge_notes(a: bytes, b: bytes) -> bytes:
    """The same checkpoint published twice (again with cosignatures): one
    note with every signature line either carried."""
    text_a, lines_a = note_lines(a)
    text_b, lines_b = note_lines(b)
    if text_a != text_b:
        raise ValueError("two different checkpoints for one tree size")
    lines = lines_a + [l for l in lines_b if l not in lines_a]
    return text_a + b"\n" + "".join(l + "\n" for l in lines).encode()


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE protocol.md: PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body."""
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def verify_note(note: bytes, name: str, key_id: bytes, key) -> bytes:
    """c2sp.org/signed-note: text, a blank line, then '— <name> <base64(keyid || sig)>' lines."""
    text, sep, sigs = note.partition(b"\n\n")
    if not sep:
        raise ValueError("note has no signature block")
    text += b"\n"
    for line in sigs.decode().splitlines():
        if not line.startswith("\u2014 "):
            continue
        signer, _, blob = line[2:].partition(" ")
        raw = base64.b64decode(blob)
        if signer == name and raw[:4] == key_id:
            key.verify(raw[4:], text)  # raises InvalidSignature
            return text
    raise ValueError(f"no signature by {name} on the note")


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()  # RFC 6962 section 2.1


def tree_root(hashes):
    """RFC 6962 section 2.1 Merkle Tree Hash over leaf hashes."""
    n = len(hashes)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashes[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + tree_root(hashes[:k]) + tree_root(hashes[k:])).digest()


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic-prefix", default="clew")
    ap.add_argument("--ledger-vkey", required=True)
    ap.add_argument("--proto-dir", required=True)
    ap.add_argument("--expect-leaves", type=int, required=True)
    ap.add_argument("--timeout-s", type=float, default=120)
    ap.add_argument("--witness", action="append", default=[],
                    help="a witness's cosignature/v1 verifier key (repeatable)")
    ap.add_argument("--quorum", type=int, default=None,
                    help="cosignatures the latest checkpoint needs (default: every --witness)")
    args = ap.parse_args()
    witnesses = [parse_witness_vkey(w) for w in args.witness]
    quorum = len(witnesses) if args.quorum is None else args.quorum
    if quorum > len(witnesses):
        ap.error(f"a quorum of {quorum} needs at least {quorum} --witness keys")

    with tempfile.TemporaryDirectory() as gen:
        envelope_pb2, events_pb2 = compile_protos(Path(args.proto_dir), Path(gen))
        ledger_name, ledger_key_id, ledger_key = parse_vkey(args.ledger_vkey)

        topics = {f"{args.topic_prefix}.{s}": s for s in ("sequenced", "checkpoints", "rejected")}
        consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": "partner-check",
                             "enable.auto.commit": False})
        consumer.assign([TopicPartition(t, 0, OFFSET_BEGINNING) for t in topics])

        leaves = {}          # leaf index -> envelope bytes (first copy)
        checkpoints = {}     # tree size -> note bytes
        rejected = set()
        problems = []
        deadline = time.time() + args.timeout_s
        while time.time() < deadline:
            latest = checkpoints.get(args.expect_leaves)
            witnessed = latest is not None and (
                not witnesses or len(cosigned_by(latest, witnesses)[0]) >= quorum)
            if len(leaves) >= args.expect_leaves and witnessed:
                # Drain what is already there, then stop.
                batch = consumer.consume(10000, timeout=1.5)
                if not batch:
                    break
            else:
                batch = consumer.consume(10000, timeout=0.5)
            for m in batch:
                if m.error():
                    print(f"consumer: {m.error()}", file=sys.stderr)
                    continue
                stream = topics[m.topic()]
                if stream == "sequenced":
                    e = envelope_pb2.SequencedEntry.FromString(m.value())
                    first = leaves.setdefault(e.leaf_index, e.envelope)
                    if first != e.envelope:
                        problems.append(f"leaf {e.leaf_index} was published with different bytes")
                elif stream == "checkpoints":
                    c = envelope_pb2.CheckpointRecord.FromString(m.value())
                    held = checkpoints.get(c.tree_size)
                    try:
                        checkpoints[c.tree_size] = (c.signed_note if held is None
                                                    else merge_notes(held, c.signed_note))
                    except ValueError as e:
                        problems.append(f"checkpoint {c.tree_size}: {e}")
                else:
                    r = envelope_pb2.RejectedSubmission.FromString(m.value())
                    rejected.add(r.rejection_index)
        consumer.close()
        print(f"read {len(leaves)} leaves, {len(checkpoints)} checkpoints "
              f"(largest {max(checkpoints, default=0)}), {len(rejected)} rejections",
              file=sys.stderr)

        n = len(leaves)
        if sorted(leaves) != list(range(n)):
            problems.append("the sequenced topic has a gap")
        # Producer signatures, with keys registered by the stream itself.
        keys = {}
        signatures = 0
        for i in range(n):
            env = envelope_pb2.Envelope.FromString(leaves[i])
            if env.payload_type != PAYLOAD_TYPE:
                problems.append(f"leaf {i}: payload type {env.payload_type}")
                continue
            event = events_pb2.Event.FromString(env.payload)
            body = event.WhichOneof("body")
            registered = None
            if body == "principal_registered" and event.principal_registered.verifier_key:
                registered = parse_vkey(event.principal_registered.verifier_key)
            for sig in env.signatures:
                key = keys.get(sig.keyid)
                if key is None and i == 0 and registered:
                    key = registered[2]  # the genesis administrator signs its own registration
                if key is None:
                    problems.append(f"leaf {i}: key {sig.keyid} was never registered")
                    continue
                try:
                    key.verify(sig.sig, pae(env.payload_type, env.payload))
                    signatures += 1
                except InvalidSignature:
                    problems.append(f"leaf {i}: signature by {sig.keyid} does not verify")
            if registered:
                name, kid, key = registered
                keys[f"{name}+{kid.hex()}"] = key
            if body == "key_revoked":
                keys.pop(event.key_revoked.key_id, None)

        # Checkpoints: ledger signature, then the root over the leaves we hold.
        hashes = [leaf_hash(leaves[i]) for i in range(n)]
        verified = 0
        cosignatures = 0
        witnessed_sizes = []
        for size, note in sorted(checkpoints.items()):
            try:
                text = verify_note(note, ledger_name, ledger_key_id, ledger_key)
            except (ValueError, InvalidSignature) as e:
                problems.append(f"checkpoint {size}: {e}")
                continue
            origin, tsize, root = text.decode().splitlines()[:3]
            if origin != ledger_name or int(tsize) != size:
                problems.append(f"checkpoint {size}: body says {origin} {tsize}")
                continue
            if size > n:
                problems.append(f"checkpoint {size} is beyond the {n} leaves received")
                continue
            if base64.b64decode(root) != tree_root(hashes[:size]):
                problems.append(f"checkpoint {size}: root does not match the leaves")
                continue
            verified += 1
            print(f"checkpoint {size} verified", file=sys.stderr)
            if witnesses:
                good, bad = cosigned_by(note, witnesses)
                cosignatures += len(good)
                for name in sorted(bad):
                    problems.append(f"checkpoint {size}: the cosignature by {name} does not verify")
                if len(good) >= quorum:
                    witnessed_sizes.append(size)

        latest_size = max(checkpoints) if checkpoints else 0
        if witnesses and latest_size and latest_size not in witnessed_sizes:
            good, _ = cosigned_by(checkpoints[latest_size], witnesses)
            missing = [name for name, _, _ in witnesses if name not in good]
            problems.append(
                f"checkpoint {latest_size} is cosigned by {len(good)} of the {quorum} witnesses "
                f"required (quorum {quorum} of {len(witnesses)}); missing: {', '.join(missing)}")
        report = {
            "leaves": n,
            "cosignatures_verified": cosignatures,
            "witnessed_checkpoints": len(witnessed_sizes),
            "latest_witnessed_size": max(witnessed_sizes, default=0),
            "signatures_verified": signatures,
            "checkpoints_verified": verified,
            "latest_checkpoint_size": max(checkpoints) if checkpoints else 0,
            "rejected": len(rejected),
            "problems": problems,
        }
        print(json.dumps(report))
        return 0 if not problems and n == args.expect_leaves else 1


if __name__ == "__main__":
    sys.exit(main())
