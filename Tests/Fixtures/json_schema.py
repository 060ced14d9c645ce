"""Checks fedbatch's --json output against man/fedbatch-json.7.

The man page is the schema: each object is a `.SS "KIND: NAME"` heading and
each field a `.TP` paragraph whose first line is `\\fBname\\fR \\(em TYPE`.
Python's json module tells booleans, integers and floats apart, which the
check needs.

usage: json_schema.py MAN_PAGE RUNS.json
RUNS.json is a list of {"summary": NAME or null, "stdout": str, "stderr": str}:
one command's output each, with the summary object the command must print
(null for a run that must fail with an error message). Prints each problem
and exits 1 if there is any; also fails when a documented summary, status or
message is never seen, so that no command escapes the check.
"""
import json
import re
import sys

HEADING = re.compile(r'^\.SS "(message|status|summary|object): ([a-z_ ]+)"$')
FIELD = re.compile(r'^\\fB([a-z][a-z0-9_]*)\\fR \\\(em (.+)$')


def parse_schema(path):
    objects, current, expect_field = {}, None, False
    for line in open(path, encoding="utf-8"):
        line = line.rstrip("\n")
        m = HEADING.match(line)
        if m:
            current = (m.group(1), m.group(2))
            objects[current] = {}
            continue
        if line.startswith(".SH"):
            current = None
        if current and expect_field:
            f = FIELD.match(line)
            if f:
                objects[current][f.group(1)] = f.group(2).strip()
        expect_field = line == ".TP"
    return objects


def check(value, type_, objects, where, problems):
    nullable = type_.endswith(" or null")
    if nullable:
        type_ = type_[: -len(" or null")]
        if value is None:
            return
    if type_.startswith('"'):
        if value != json.loads(type_):
            problems.append(f"{where}: expected {type_}, got {value!r}")
    elif type_ == "string":
        if not isinstance(value, str):
            problems.append(f"{where}: expected a string, got {value!r}")
    elif type_ == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{where}: expected an integer, got {value!r}")
    elif type_ == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"{where}: expected a number, got {value!r}")
    elif type_ == "boolean":
        if not isinstance(value, bool):
            problems.append(f"{where}: expected a boolean, got {value!r}")
    elif type_ == "manifest":
        if not isinstance(value, dict) or "kind" not in value:
            problems.append(f"{where}: expected a manifest object, got {value!r}")
    elif type_ == "map of number":
        if not isinstance(value, dict):
            problems.append(f"{where}: expected an object, got {value!r}")
        else:
            for k, v in value.items():
                check(v, "number", objects, f"{where}.{k}", problems)
    elif type_.startswith("array of "):
        if not isinstance(value, list):
            problems.append(f"{where}: expected an array, got {value!r}")
        else:
            for i, v in enumerate(value):
                check(v, type_[len("array of "):], objects, f"{where}[{i}]", problems)
    elif type_.startswith("object "):
        check_object(value, ("object", type_[len("object "):]), objects, where, problems)
    else:
        problems.append(f"{where}: the man page gives an unknown type {type_!r}")


def check_object(value, key, objects, where, problems):
    if key not in objects:
        problems.append(f"{where}: the man page documents no {key[0]} {key[1]!r}")
        return
    if not isinstance(value, dict):
        problems.append(f"{where}: expected an object, got {value!r}")
        return
    fields = objects[key]
    for extra in sorted(set(value) - set(fields)):
        problems.append(f"{where}: field {extra!r} is not documented in {key[0]} {key[1]!r}")
    for missing in sorted(set(fields) - set(value)):
        problems.append(f"{where}: documented field {missing!r} is missing")
    for name, type_ in fields.items():
        if name in value:
            check(value[name], type_, objects, f"{where}.{name}", problems)


def lines(text, where, problems):
    out = []
    for i, line in enumerate(text.splitlines()):
        try:
            out.append(json.loads(line))
        except ValueError:
            problems.append(f"{where} line {i + 1}: not JSON: {line!r}")
    return out


def main():
    objects = parse_schema(sys.argv[1])
    runs = json.load(open(sys.argv[2], encoding="utf-8"))
    problems, seen = [], set()
    for n, run in enumerate(runs):
        name = run.get("summary")
        where = f"run {n} ({run.get('label', name)})"
        stdout = lines(run["stdout"], where + " stdout", problems)
        stderr = lines(run["stderr"], where + " stderr", problems)
        for i, msg in enumerate(stdout):
            kind = msg.get("message_type") if isinstance(msg, dict) else None
            last = i == len(stdout) - 1
            if kind == "summary" and last and name:
                check_object(msg, ("summary", name), objects, f"{where} summary", problems)
                seen.add(("summary", name))
            elif kind == "status" and not last:
                status = msg.get("phase")
                key = ("status", "train" if status == "train" else "merge")
                check_object(msg, key, objects, f"{where} status {i}", problems)
                seen.add(key)
            else:
                problems.append(f"{where} stdout line {i + 1}: unexpected {kind!r} message here")
        if name and not (stdout and stdout[-1].get("message_type") == "summary"):
            problems.append(f"{where}: no summary line on stdout")
        if not name and stdout:
            problems.append(f"{where}: a failed run printed to stdout")
        for i, msg in enumerate(stderr):
            kind = msg.get("message_type") if isinstance(msg, dict) else None
            if kind not in ("warning", "error"):
                problems.append(f"{where} stderr line {i + 1}: unexpected {kind!r} message on stderr")
                continue
            check_object(msg, ("message", kind), objects, f"{where} stderr {i + 1}", problems)
            seen.add(("message", kind))
        if not name and not (stderr and stderr[-1].get("message_type") == "error"):
            problems.append(f"{where}: a failed run gave no error message")
    for key in sorted(objects):
        if key[0] != "object" and key not in seen:
            problems.append(f"never checked: {key[0]} {key[1]!r} (add a run that prints it)")
    for p in problems:
        print(p)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
