"""Thirty crafted CSV files and what Python's csv module makes of them.

usage: csv_differential.py OUT.json
Writes a JSON list of {"name", "delimiter", "data" (base64), "rows"}:
"rows" is the list of records Python's csv.reader returns in strict mode
(blank lines left out, a UTF-8 byte-order mark dropped as the utf-8-sig
codec does), or null when it refuses the file. fedbatch must read the same
cells, or refuse the same files.
"""
import base64
import csv
import io
import json
import sys

CASES = [
    ("plain", ",", b"a,b,c\n1,2,3\n"),
    ("crlf", ",", b"a,b\r\n1,2\r\n"),
    ("lone cr", ",", b"a,b\r1,2\r"),
    ("no final newline", ",", b"a,b\n1,2"),
    ("bom", ",", b"\xef\xbb\xbfa,b\n1,2\n"),
    ("blank lines", ",", b"a,b\n\n1,2\n\r\n\n3,4\n\n"),
    ("quote all", ",", b'"a","b"\n"1","2"\n'),
    ("quoted delimiter", ",", b'id,x\n"Doe, J",1\n'),
    ("doubled quote", ",", b'id,x\n"say ""hi""",1\n'),
    ("quoted newline", ",", b'id,x\n"two\nlines",1\n'),
    ("quoted crlf", ",", b'id,x\r\n"two\r\nlines",1\r\n'),
    ("empty quoted", ",", b'a,b\n"",1\n'),
    ("empty fields", ",", b"a,b,c\n,,\n"),
    ("trailing delimiter", ",", b"a,b,\n1,2,\n"),
    ("quote inside unquoted", ",", b'a,b\nx"y,2\n'),
    ("space before quote", ",", b'a,b\n1, "2"\n'),
    ("spaces kept", ",", b"a,b\n 1 , 2 \n"),
    ("unicode", ",", "name,x\nZoë,1\n日本,2\n".encode()),
    ("semicolon", ";", b"a;b\n1,5;2\n"),
    ("semicolon quoted", ";", b'a;b\n"x;y";2\n'),
    ("tab", "\t", b"a\tb\n1\t2\n"),
    ("tab quoted", "\t", b'a\tb\n"x\ty"\t2\n'),
    ("bar", "|", b"a|b\n1|2\n"),
    ("quoted header", ",", b'"width\n(cm)",label\n1.5,0\n'),
    ("only header", ",", b"a,b\n"),
    ("many columns", ",", (",".join(f"c{i}" for i in range(50)) + "\n" + ",".join(str(i) for i in range(50)) + "\n").encode()),
    ("unclosed quote", ",", b'a,b\n"open,2\n3,4\n'),
    ("text after closing quote", ",", b'a,b\n"x"y,2\n'),
    ("space after closing quote", ",", b'a,b\n"x" ,2\n'),
    ("unclosed at end", ",", b'a,b\n1,"2'),
]


def python_reads(data, delimiter):
    text = data.decode("utf-8-sig")
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True))
    except csv.Error:
        return None
    return [r for r in rows if r != []]


def main():
    assert len(CASES) == 30
    out = [
        {"name": n, "delimiter": d, "data": base64.b64encode(b).decode(), "rows": python_reads(b, d)}
        for n, d, b in CASES
    ]
    json.dump(out, open(sys.argv[1], "w"))


if __name__ == "__main__":
    main()
