"""Crafted manifests, and an independent manifest reader written from
fedbatch-bundle(5) alone, for a differential test against fedbatch.

    manifest_differential.py OUTDIR

writes OUTDIR/<case>.zst (a container payload: pax tar of manifest.json,
tensors.safetensors and, for some generations, included.jsonl, compressed
by the zstd CLI) for every case, and OUTDIR/verdicts.json: {case: {"ok":
bool, "num_examples": int|null, "bundles": int|null, "why": str}} as this
reader sees each manifest. The Swift test reads each payload with fedbatch
and expects the same verdict and the same counts.
"""
import datetime
import hashlib
import io
import json
import math
import re
import subprocess
import sys
import tarfile

IDENT = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")
CREATED = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})Z$")
I64 = (-(2 ** 63), 2 ** 63 - 1)


class Refused(Exception):
    pass


# --- the reader, from the man page -----------------------------------------

def no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise Refused("duplicate key")
    return dict(pairs)


def no_constants(name):
    raise Refused("not JSON: " + name)


def depth(v, d=1):
    if d > 64:
        raise Refused("nested deeper than 64")
    if isinstance(v, dict):
        for x in v.values():
            depth(x, d + 1)
    elif isinstance(v, list):
        for x in v:
            depth(x, d + 1)


def integer(o, k, minimum=None):
    v = o.get(k)
    if isinstance(v, bool) or not isinstance(v, int) or not I64[0] <= v <= I64[1]:
        raise Refused(k + " is not a 64-bit integer")
    if minimum is not None and v < minimum:
        raise Refused(k + " below " + str(minimum))
    return v


def string(o, k):
    v = o.get(k)
    if not isinstance(v, str):
        raise Refused(k + " is not a string")
    return v


def obj(o, k):
    v = o.get(k)
    if not isinstance(v, dict):
        raise Refused(k + " is not an object")
    return v


def number(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise Refused("not a finite number")
    return v


def identifier(s):
    if not IDENT.match(s) or s[0] in ".-":
        raise Refused("bad identifier")


def created_ok(s):
    m = CREATED.match(s)
    if not m:
        raise Refused("created not RFC 3339 UTC")
    try:
        datetime.datetime(*map(int, m.groups()))
    except ValueError:
        raise Refused("created not a calendar time")


def generation_ref(o, k):
    r = obj(o, k)
    integer(r, "number", 0)
    if not HEX64.match(string(r, "digest")):
        raise Refused("digest")


def present(o, k):
    return k in o and o[k] is not None


def included_entry(e, g):
    """One entry of a generation's list of bundles (fedbatch-bundle(5),
    INCLUDED BUNDLES)."""
    if not isinstance(e, dict):
        raise Refused("included entry")
    if not HEX64.match(string(e, "digest")):
        raise Refused("included digest")
    string(e, "site")
    string(e, "signer")
    integer(e, "seq", 0)
    integer(e, "num_examples", 0)
    if number(e.get("weight")) < 0:
        raise Refused("negative weight")
    if present(e, "base"):
        b = integer(e, "base", 0)
        if not (b < g and e.get("staleness") == g - 1 - b):
            raise Refused("base and staleness do not fit the generation")
    return e["digest"]


def included_list(data, count, g):
    """included.jsonl: `count` newline-terminated lines, digests increasing."""
    if count == 0:
        if data:
            raise Refused("lines beyond included_count")
        return 0
    if not data.endswith(b"\n"):
        raise Refused("no final newline")
    lines = data[:-1].split(b"\n")
    if len(lines) != count:
        raise Refused("line count is not included_count")
    previous = None
    for line in lines:
        if len(line) > 4096:
            raise Refused("line too long")
        try:
            e = json.loads(line.decode("utf-8"), object_pairs_hook=no_duplicates, parse_constant=no_constants)
        except (UnicodeDecodeError, json.JSONDecodeError) as x:
            raise Refused("line not JSON: %s" % x)
        digest = included_entry(e, g)
        if previous is not None and not previous < digest:
            raise Refused("digests not increasing")
        previous = digest
    return count


def read(raw, extra=None):
    """The manifest's num_examples (None for a generation) and how many
    bundles it lists (None for none), or Refused. `extra` holds the
    members beside the manifest and tensors."""
    extra = extra or {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused("not UTF-8")
    try:
        m = json.loads(text, object_pairs_hook=no_duplicates, parse_constant=no_constants)
    except json.JSONDecodeError as e:
        raise Refused("not JSON: %s" % e)
    depth(m)
    if not isinstance(m, dict):
        raise Refused("not an object")
    if string(m, "format") != "fedbatch":
        raise Refused("format")
    version = integer(m, "version")
    if version not in (2, 3):
        raise Refused("version")
    kind = string(m, "kind")
    if kind not in ("update", "generation"):
        raise Refused("kind")
    model = obj(m, "model")
    identifier(string(model, "id"))
    string(model, "arch")
    created_ok(string(m, "created"))
    codec = string(m, "codec")
    if codec not in ("fp32", "fp16", "bf16", "int8", "topk"):
        raise Refused("codec")
    if kind == "generation" and codec != "fp32":
        raise Refused("a generation's codec must be fp32")
    string(m, "fedbatch_version")
    members = m.get("members")
    if not isinstance(members, list):
        raise Refused("members")
    names = set()
    for e in members:
        if not isinstance(e, dict):
            raise Refused("member")
        n = string(e, "name")
        if n == "manifest.json" or len(n.encode()) > 255 or not all(s and s not in (".", "..") and SEGMENT.match(s) for s in n.split("/")):
            raise Refused("member name")
        if n in names:
            raise Refused("member twice")
        names.add(n)
        length = integer(e, "length", 0)
        sha = string(e, "sha256")
        if not HEX64.match(sha):
            raise Refused("member sha256")
        if n in extra and (len(extra[n]) != length or hashlib.sha256(extra[n]).hexdigest() != sha):
            raise Refused("member length or sha256 differs")
    if "tensors.safetensors" not in names:
        raise Refused("no tensors")
    for v in obj(m, "metrics").values():
        number(v)
    for k in ("base", "parent"):
        if present(m, k):
            generation_ref(m, k)
    if kind == "update":
        if not present(m, "site") or not present(m, "base") or not present(m, "num_examples"):
            raise Refused("update fields")
        site = obj(m, "site")
        identifier(string(site, "id"))
        integer(site, "seq", 0)
        n = integer(m, "num_examples", 1)
        if present(m, "included") or present(m, "included_count") or "included.jsonl" in names:
            raise Refused("an update lists no bundles")
        bundles = None
    else:
        if not present(m, "generation"):
            raise Refused("generation number")
        g = integer(m, "generation", 0)
        if g > 0 and not present(m, "parent"):
            raise Refused("parent")
        n = None
        if present(m, "included") and version == 3:
            raise Refused("version 3 lists bundles in included.jsonl")
        if present(m, "included_count") and version == 2:
            raise Refused("version 2 lists bundles inline")
        if present(m, "included_count") != ("included.jsonl" in names):
            raise Refused("included_count and the included.jsonl member go together")
        if present(m, "included_count"):
            bundles = included_list(extra.get("included.jsonl", b""), integer(m, "included_count", 0), g)
        elif present(m, "included"):
            if not isinstance(m["included"], list):
                raise Refused("included")
            digests = [included_entry(e, g) for e in m["included"]]
            if len(set(digests)) != len(digests):
                raise Refused("a bundle twice")
            bundles = len(digests)
        else:
            bundles = None
    if present(m, "num_examples") and kind != "update":
        integer(m, "num_examples")
    return n, bundles


# --- the cases ---------------------------------------------------------------

def tensors():
    header = b'{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    header += b" " * (-(8 + len(header)) % 8)
    return len(header).to_bytes(8, "little") + header + b"\x00\x00\x80\x3f"


TENSORS = tensors()
MEMBERS = '[{"length": %d, "name": "tensors.safetensors", "sha256": "%s"}]' % (len(TENSORS), hashlib.sha256(TENSORS).hexdigest())
BASE = '"base": {"digest": "%s", "number": 0}' % ("ab" * 32)


def update(**over):
    fields = {
        "format": '"fedbatch"', "version": "2", "kind": '"update"',
        "model": '{"arch": "mlp:4-3-2", "id": "demo"}', "base": '{"digest": "%s", "number": 0}' % ("ab" * 32),
        "site": '{"id": "site-1", "seq": 1}', "num_examples": "100",
        "created": '"2026-01-01T00:00:00Z"', "codec": '"fp32"', "fedbatch_version": '"test"',
        "metrics": '{"loss": 0.5}', "members": MEMBERS,
    }
    extra = over.pop("_extra", "")
    for k, v in over.items():
        if v is None:
            fields.pop(k)
        else:
            fields[k] = v
    body = ", ".join('"%s": %s' % (k, v) for k, v in fields.items())
    return ("{" + body + extra + "}").encode()


def entry(i, **over):
    e = {"digest": "%02x" % i * 32, "site": "site-%d" % i, "signer": "EF" * 20, "seq": 1, "num_examples": 10 * i,
         "weight": 10.0 * i, "base": 0, "staleness": 0}
    e.update(over)
    return json.dumps({k: v for k, v in e.items() if v is not None}, sort_keys=True, separators=(",", ":"))


def generation(lines=None, count=None, member=True, inline=None, listed=None, version=3):
    """Generation 1 on generation 0, its bundles in included.jsonl (lines
    joined by newlines, each ending in one unless given raw bytes)."""
    data = lines if isinstance(lines, bytes) else "".join(x + "\n" for x in (lines or [])).encode()
    members = [{"length": len(TENSORS), "name": "tensors.safetensors", "sha256": hashlib.sha256(TENSORS).hexdigest()}]
    listed_bytes = data if listed is None else listed
    if member:
        members.append({"length": len(listed_bytes), "name": "included.jsonl",
                        "sha256": hashlib.sha256(listed_bytes).hexdigest()})
    fields = {
        "format": '"fedbatch"', "version": str(version), "kind": '"generation"', "generation": "1",
        "model": '{"arch": "mlp:4-3-2", "id": "demo"}', "parent": '{"digest": "%s", "number": 0}' % ("ab" * 32),
        "created": '"2026-01-01T00:00:00Z"', "codec": '"fp32"', "fedbatch_version": '"test"',
        "metrics": "{}", "members": json.dumps(members),
    }
    if count is not None:
        fields["included_count"] = str(count)
    if inline is not None:
        fields["included"] = "[" + ",".join(inline) + "]"
    body = ", ".join('"%s": %s' % (k, v) for k, v in fields.items())
    return ("{" + body + "}").encode(), ({"included.jsonl": data} if member else {})


GENERATIONS = {
    "gen-list": generation([entry(1), entry(2), entry(3)], 3),
    "gen-list-empty": generation([], 0),
    "gen-list-count-low": generation([entry(1), entry(2), entry(3)], 2),
    "gen-list-count-high": generation([entry(1), entry(2)], 3),
    "gen-list-unsorted": generation([entry(2), entry(1)], 2),
    "gen-list-twice": generation([entry(1), entry(1)], 2),
    "gen-list-no-newline": generation(entry(1).encode() + b"\n" + entry(2).encode(), 2),
    "gen-list-blank-line": generation(entry(1).encode() + b"\n\n" + entry(2).encode() + b"\n", 2),
    "gen-list-and-inline": generation([entry(1)], 1, inline=[entry(1)]),
    "gen-member-no-count": generation([entry(1)], None),
    "gen-count-no-member": generation([entry(1)], 1, member=False),
    "gen-list-camel-alias": generation([entry(1, numExamples=99999), entry(2)], 2),
    "gen-list-seq-fraction": generation([entry(1, seq=1.5)], 1),
    "gen-list-digest-upper": generation([entry(1, digest="AB" * 32)], 1),
    "gen-list-weight-string": generation([entry(1, weight="10")], 1),
    "gen-list-staleness-wrong": generation([entry(1, staleness=3)], 1),
    "gen-list-signer-missing": generation([entry(1, signer=None)], 1),
    "gen-list-duplicate-key": generation([entry(1)[:-1] + ',"seq":2}'], 1),
    "gen-list-sha-differs": generation([entry(1)], 1, listed=b"x"),
    "gen-list-long-line": generation([entry(1, signer="E" * 4100)], 1),
    "gen-list-long-ok": generation([entry(1, signer="E" * 3800)], 1),
    "gen-inline-v2": generation(member=False, inline=[entry(1), entry(2)], version=2),
    "gen-inline-v3": generation(member=False, inline=[entry(1), entry(2)]),
    "gen-list-v2": generation([entry(1)], 1, version=2),
    "gen-no-list-v2": generation(member=False, version=2),
}

CASES = {
    "valid": update(),
    "camel-alias": update(_extra=', "numExamples": 99999999'),
    "camel-only": update(num_examples=None, _extra=', "numExamples": 100'),
    "duplicate-key": update(_extra=', "num_examples": 5'),
    "count-fraction": update(num_examples="100.0"),
    "count-exponent": update(num_examples="1e2"),
    "count-string": update(num_examples='"100"'),
    "count-zero": update(num_examples="0"),
    "count-negative": update(num_examples="-5"),
    "count-huge": update(num_examples="1000000000000"),
    "seq-too-big": update(site='{"id": "site-1", "seq": 9223372036854775808}'),
    "seq-fraction": update(site='{"id": "site-1", "seq": 1.5}'),
    "version-fraction": update(version="2.0"),
    "version-1": update(version="1"),
    "version-3": update(version="3"),
    "version-4": update(version="4"),
    "created-space": update(created='"2026-01-01 00:00:00Z"'),
    "created-offset": update(created='"2026-01-01T00:00:00+01:00"'),
    "created-fraction": update(created='"2026-01-01T00:00:00.5Z"'),
    "created-feb-30": update(created='"2026-02-30T00:00:00Z"'),
    "codec-int8": update(codec='"int8"'),
    "codec-topk": update(codec='"topk"'),
    "codec-zip": update(codec='"zip"'),
    "codec-upper": update(codec='"FP32"'),
    "codec-missing": update(codec=None),
    "unknown-field": update(_extra=', "future": {"a": [1, 2, {"b": null}]}'),
    "unknown-nested": update(site='{"id": "site-1", "seq": 1, "zone": "eu"}'),
    "metric-infinite": update(metrics='{"loss": 1e999}'),
    "metric-string": update(metrics='{"loss": "low"}'),
    "site-bad-id": update(site='{"id": "../etc", "seq": 1}'),
    "kind-partial": update(kind='"partial"'),
    "base-missing": update(base=None),
    "base-null": update(base="null"),
    "too-deep": update(_extra=', "deep": ' + "[" * 70 + "]" * 70),
    "nan-literal": update(metrics='{"loss": NaN}'),
    "model-id-dash": update(model='{"arch": "mlp:4-3-2", "id": "-demo"}'),
    "bool-count": update(num_examples="true"),
}


def payload(manifest, extra):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in [("manifest.json", manifest), ("tensors.safetensors", TENSORS)] + sorted(extra.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return subprocess.run(["zstd", "-q", "-c"], input=buf.getvalue(), check=True, stdout=subprocess.PIPE).stdout


def main(out):
    verdicts = {}
    cases = [(k, v, {}) for k, v in CASES.items()] + [(k, m, x) for k, (m, x) in GENERATIONS.items()]
    for name, manifest, extra in cases:
        with open("%s/%s.zst" % (out, name), "wb") as f:
            f.write(payload(manifest, extra))
        try:
            n, bundles = read(manifest, extra)
            verdicts[name] = {"ok": True, "num_examples": n, "bundles": bundles, "why": ""}
        except Refused as e:
            verdicts[name] = {"ok": False, "num_examples": None, "bundles": None, "why": str(e)}
    with open(out + "/verdicts.json", "w") as f:
        json.dump(verdicts, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main(sys.argv[1])
