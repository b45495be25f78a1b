#!/usr/bin/env python3
"""Extract the CB EDR Live Response answers recorded in cbapi-python's
requests-cache (tests/caches/cber.sqlite) into plain files.

Usage: extract.py path/to/cber.sqlite OUTDIR

Each row of the `responses` table is zlib-compressed JSON; the response's
body and header names/values are base64. Only the /api/v1/cblr/ and
/api/v1/sensor/ rows are kept.
The bodies are written byte for byte; SOURCES.tsv lists, per file, the
request it answered, the HTTP status and the Content-Type.
"""
import base64
import json
import re
import sqlite3
import sys
import zlib


def main(db, out):
    rows = sqlite3.connect(db).execute("select key, value from responses order by key")
    index = []
    for key, value in rows:
        if "/api/v1/cblr/" not in key and "/api/v1/sensor/" not in key:
            continue
        resp = json.loads(zlib.decompress(value))["response"]
        headers = {base64.b64decode(k).decode(): base64.b64decode(v).decode()
                   for k, v in resp["headers"].items()}
        body = base64.b64decode(resp["body"])
        method, rest = key.split(" ", 1)
        path = re.match(r"[^{]*", rest).group(0)
        request_body = rest[len(path):]
        name = method.lower() + path.replace("/api/v1/cblr/", "_").replace("/api/v1/", "_").replace("/", "_")
        if request_body:
            # Two POSTs share a path: name them after the command.
            name += "_" + json.loads(request_body)["name"].replace(" ", "_")
        ctype = headers.get("Content-Type", "")
        name += ".json" if "json" in ctype else ".bin"
        with open(f"{out}/{name}", "wb") as f:
            f.write(body)
        index.append("\t".join([name, method, path, request_body, str(resp["status"]), ctype]))
    with open(f"{out}/SOURCES.tsv", "w") as f:
        f.write("file\tmethod\tpath\trequest body\tstatus\tcontent-type\n")
        f.write("\n".join(index) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
