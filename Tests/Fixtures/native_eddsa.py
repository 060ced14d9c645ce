"""Native Ed25519 (algorithm 27) and Ed448 (28) keys and v4 signatures,
built from RFC 9580 with the `cryptography` package, independently of
fedbatch: gpg 2.2 cannot make or read them, so this is what fedbatch's
in-process verifier is checked against for these two algorithms.

Usage: native_eddsa.py OUTDIR. For each curve it writes NAME.key (a binary
public key packet), NAME.statement, NAME.sig (a binary signature packet
over the statement), NAME.bad.sig (the same with S changed) and
NAME.fpr (the v4 fingerprint, uppercase hex).
"""

import hashlib
import os
import struct
import sys

from cryptography.hazmat.primitives.asymmetric import ed448, ed25519
from cryptography.hazmat.primitives import serialization


def packet(tag, body):
    """An old-format packet header of the shortest length (RFC 4880 4.2.1)."""
    if len(body) < 256:
        return bytes([0x80 | tag << 2, len(body)]) + body
    return bytes([0x81 | tag << 2]) + struct.pack(">H", len(body)) + body


def subpacket(kind, data):
    return bytes([len(data) + 1, kind]) + data


def main(out):
    created = 1700000000
    for name, algo, make, hash_id, hasher in [
        ("ed25519", 27, ed25519.Ed25519PrivateKey.generate, 8, hashlib.sha256),
        ("ed448", 28, ed448.Ed448PrivateKey.generate, 10, hashlib.sha512),
    ]:
        secret = make()
        raw = secret.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        key_body = bytes([4]) + struct.pack(">I", created) + bytes([algo]) + raw
        fpr = hashlib.sha1(bytes([0x99]) + struct.pack(">H", len(key_body)) + key_body).digest()
        statement = ("a statement signed with native %s\n" % name).encode()
        hashed = subpacket(33, bytes([4]) + fpr) + subpacket(2, struct.pack(">I", created + 60))
        head = bytes([4, 0x00, algo, hash_id]) + struct.pack(">H", len(hashed)) + hashed
        trailer = bytes([4, 0xFF]) + struct.pack(">I", len(head))
        digest = hasher(statement + head + trailer).digest()
        # RFC 9580 5.2.4: EdDSA signs the digest itself.
        value = secret.sign(digest)
        unhashed = subpacket(16, fpr[-8:])
        body = head + struct.pack(">H", len(unhashed)) + unhashed + digest[:2]
        bad = bytearray(value)
        bad[-1] ^= 0x01
        files = {
            ".key": packet(6, key_body),
            ".statement": statement,
            ".sig": packet(2, body + value),
            ".bad.sig": packet(2, body + bytes(bad)),
            ".fpr": fpr.hex().upper().encode(),
        }
        for suffix, data in files.items():
            with open(os.path.join(out, name + suffix), "wb") as f:
                f.write(data)


if __name__ == "__main__":
    main(sys.argv[1])
