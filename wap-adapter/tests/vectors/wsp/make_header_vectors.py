#!/usr/bin/env python3
"""Regenerate headers.txt: WSP header vectors made by Kannel's own codec.

For every input line (the '|' and '<' lines of Kannel's test/header_test,
then extra_headers.txt), run /usr/lib/kannel/test/test_headers on a one-line
file; it packs the header with Kannel's wsp_headers_pack (WSP 1.2), dumps the
packed octets, and unpacks them again. We record the input, the octets and
Kannel's decoded headers.  Usage: python3 make_header_vectors.py > headers.txt
"""
import os, re, subprocess, sys, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
TOOL = "/usr/lib/kannel/test/test_headers"

def inputs():
    with open("/usr/lib/kannel/test/header_test", encoding="latin-1") as f:
        for line in f:
            if line.startswith("| ") or line.startswith("< "):
                yield line[2:].rstrip("\n")
    with open(os.path.join(HERE, "extra_headers.txt")) as f:
        for line in f:
            if line.strip():
                yield line.rstrip("\n")

def run(header):
    with tempfile.NamedTemporaryFile("w", suffix=".hdr", delete=False) as f:
        f.write("| " + header + "\n")
        path = f.name
    try:
        out = subprocess.run([TOOL, "-v", "0", path], capture_output=True,
                             text=True, errors="replace").stdout
        out += subprocess.run([TOOL, "-v", "0", path], capture_output=True,
                              text=True, errors="replace").stderr if not out else ""
    finally:
        os.unlink(path)
    return out

print("# WSP header vectors from Kannel's test_headers (see make_header_vectors.py).")
print("# in: input header; hex: Kannel's encoding; out: Kannel's decoding of hex.")
for header in inputs():
    log = run(header)
    hexes = "".join(m.group(1) for m in re.finditer(r"  data: ((?:[0-9a-f]{2} )+)", log))
    hexes = hexes.replace(" ", "")
    m = re.search(r"WSP: decoded headers:\n(.*?)\n[^\n]*WSP: End of decoded headers", log, re.S)
    decoded = []
    if m:
        for l in m.group(1).split("\n"):
            decoded.append(re.sub(r"^.*? DEBUG: ", "", l))
    print()
    print("in " + header)
    print("hex " + hexes)
    for d in decoded:
        print("out " + d)
