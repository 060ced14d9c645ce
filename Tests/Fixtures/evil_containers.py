"""Builds hostile container payloads with Python's tarfile and the zstd CLI.

    evil_containers.py OUTDIR

writes OUTDIR/<case>.zst for every case below: a tar stream that breaks one
rule of fedbatch-bundle(5), compressed by the real `zstd` program. The Swift
tests seal each one with an (empty) signature slot and check that the
reader refuses it with the expected reason code.
"""
import hashlib
import io
import json
import subprocess
import sys
import tarfile



def safetensors_bytes():
    header = b'{"x":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}'
    header += b" " * (-(8 + len(header)) % 8)
    return len(header).to_bytes(8, "little") + header + b"\x01\x02\x03\x04"


def manifest(members):
    m = {
        "format": "fedbatch", "version": 2, "kind": "update",
        "model": {"id": "demo", "arch": "mlp:4-3-2"},
        "base": {"number": 0, "digest": "ab" * 32},
        "site": {"id": "site-1", "seq": 1}, "num_examples": 10,
        "created": "2026-01-01T00:00:00Z", "codec": "fp32", "fedbatch_version": "test",
        "metrics": {},
        "members": [{"name": n, "length": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in members],
    }
    return json.dumps(m, sort_keys=True).encode()


def add(tar, name, data, **kw):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    for k, v in kw.items():
        setattr(info, k, v)
    tar.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)


def build(entries, trailer=b""):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            add(tar, *e[:2], **(e[2] if len(e) > 2 else {}))
    return buf.getvalue() + trailer


def cases():
    st = safetensors_bytes()
    good = [("tensors.safetensors", st)]
    m = manifest(good)
    yield "valid", build([("manifest.json", m), ("tensors.safetensors", st)])
    yield "dotdot", build([("manifest.json", m), ("../tensors.safetensors", st)])
    yield "absolute", build([("manifest.json", m), ("/etc/tensors.safetensors", st)])
    yield "symlink", build([("manifest.json", m), ("tensors.safetensors", b"", {"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"})])
    yield "hardlink", build([("manifest.json", m), ("tensors.safetensors", b"", {"type": tarfile.LNKTYPE, "linkname": "manifest.json"})])
    yield "directory", build([("manifest.json", m), ("tensors.safetensors", b"", {"type": tarfile.DIRTYPE})])
    yield "fifo", build([("manifest.json", m), ("tensors.safetensors", b"", {"type": tarfile.FIFOTYPE})])
    yield "duplicate", build([("manifest.json", m), ("tensors.safetensors", st), ("tensors.safetensors", st)])
    yield "extra", build([("manifest.json", m), ("tensors.safetensors", st), ("notes.txt", b"hello")])
    m2 = manifest(good + [("metrics.json", b"{}")])
    yield "missing", build([("manifest.json", m2), ("tensors.safetensors", st)])
    yield "hash", build([("manifest.json", m), ("tensors.safetensors", st[:-1] + b"\x09")])
    yield "size", build([("manifest.json", m), ("tensors.safetensors", st + b"\x00")])
    yield "manifest-not-first", build([("tensors.safetensors", st), ("manifest.json", m)])
    yield "manifest-json", build([("manifest.json", b'{"format": "fedbatch", "format": "x"}'), ("tensors.safetensors", st)])
    yield "trailing", build([("manifest.json", m), ("tensors.safetensors", st)], trailer=b"GARBAGE" * 100)
    # A header that declares 10^12 bytes, with no data behind it.
    mi = tarfile.TarInfo("manifest.json")
    mi.size = len(m)
    head = mi.tobuf(format=tarfile.PAX_FORMAT) + m + b"\0" * (-len(m) % 512)
    info = tarfile.TarInfo("tensors.safetensors")
    info.size = 10**12
    yield "huge-size", head + info.tobuf(format=tarfile.PAX_FORMAT) + b"\0" * 1024
    # 100k tiny entries, 30k of them listed, so the manifest itself is valid.
    listed = [("tensors.safetensors", st)] + [(f"m/{i:05d}", b"x") for i in range(30000)]
    many = build([("manifest.json", manifest(listed)), ("tensors.safetensors", st)]
                 + [(f"m/{i:05d}", b"x") for i in range(100000)])
    yield "many-entries", many


def bomb_header(out, size):
    """The tar prefix of a bomb: a manifest that lists a SIZE-byte member,
    then that member's header; the caller appends SIZE bytes of zeros."""
    size = int(size)
    m = manifest([])
    m = json.loads(m)
    m["members"] = [{"name": "tensors.safetensors", "length": size, "sha256": "00" * 32}]
    m = json.dumps(m, sort_keys=True).encode()
    mi = tarfile.TarInfo("manifest.json")
    mi.size = len(m)
    info = tarfile.TarInfo("tensors.safetensors")
    info.size = size
    with open(out, "wb") as fh:
        fh.write(mi.tobuf(format=tarfile.PAX_FORMAT) + m + b"\0" * (-len(m) % 512) + info.tobuf(format=tarfile.PAX_FORMAT))


def huge_number(out):
    """A partial aggregate whose base generation is 2^63 - 1: every number
    a manifest carries is input, and this one once trapped a + 1."""
    st = safetensors_bytes()
    m = json.loads(manifest([("tensors.safetensors", st)]))
    m.update(kind="partial", codec="exact-sum", base={"number": 2**63 - 1, "digest": "ab" * 32},
             site={"id": "site-1", "seq": 1},
             included=[{"digest": "cd" * 32, "site": "site-2", "signer": "EF" * 20, "seq": 1, "num_examples": 10,
                        "weight": 10.0, "base": 0, "staleness": 0}])
    data = build([("manifest.json", json.dumps(m, sort_keys=True).encode()), ("tensors.safetensors", st)])
    subprocess.run(["zstd", "-q", "-f", "-3", "-o", out], input=data, check=True)


def main(outdir):
    names = []
    for name, data in cases():
        subprocess.run(["zstd", "-q", "-f", "-3", "-o", f"{outdir}/{name}.zst"], input=data, check=True)
        names.append(name)
    print(json.dumps(names))


if __name__ == "__main__":
    if sys.argv[1] == "bomb-header":
        bomb_header(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "huge-number":
        huge_number(sys.argv[2])
    else:
        main(sys.argv[1])
