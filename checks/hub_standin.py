#!/usr/bin/env python3
"""A stand-in for the Hugging Face hub on 127.0.0.1, for checks/fault_table.sh (the Rust tests
have their own, tests/common/hub_server.rs).

  hub_standin.py DIR PORTFILE

Serves the model repositories under DIR (DIR/org/name/FILE) at /org/name/resolve/main/FILE,
answering what hf-hub asks: a Range request is answered 206 with Content-Range, ETag and
X-Repo-Commit; a file of 64 KiB or more also carries X-Linked-Etag, its sha256, as the hub
sends for LFS files (so the client can check the bytes). DIR/org/name/.etags.json
({"FILE": "sha256"}) makes a file go out under another sha256: bytes damaged on the way, as
the client sees them. A file not there: 404 with X-Error-Code EntryNotFound; a repository not
there: 401 RepoNotFound. Each request's method and path is appended to DIR/requests.log (for
"no weight file was asked for"). The port chosen is written to PORTFILE; it serves until
killed."""
import hashlib, http.server, json, os, sys

COMMIT = "0123456789abcdef0123456789abcdef01234567"
LFS_THRESHOLD = 64 * 1024


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self.answer(body=False)

    def do_GET(self):
        self.answer(body=True)

    def empty(self, status, headers):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def answer(self, body):
        with open(os.path.join(DIR, "requests.log"), "a") as log:
            log.write(f"{self.command} {self.path}\n")
        parts = self.path.split("/resolve/", 1)
        repo = parts[0].strip("/")
        rev_file = parts[1].split("/", 1) if len(parts) == 2 else []
        if len(rev_file) != 2 or repo.count("/") != 1 or ".." in self.path:
            return self.empty(404, [])
        repo_dir = os.path.join(DIR, repo)
        if not os.path.isdir(repo_dir):
            return self.empty(401, [("X-Error-Code", "RepoNotFound")])
        name = rev_file[1]
        path = os.path.join(repo_dir, name)
        if not os.path.isfile(path) or name.startswith("."):
            return self.empty(404, [("X-Error-Code", "EntryNotFound"), ("X-Repo-Commit", COMMIT)])
        data = open(path, "rb").read()
        sha = hashlib.sha256(data).hexdigest()
        overrides = os.path.join(repo_dir, ".etags.json")
        if os.path.isfile(overrides):
            sha = json.load(open(overrides)).get(name, sha)
        start, end = 0, len(data) - 1
        rng = self.headers.get("Range", "")
        if rng.startswith("bytes="):
            a, _, b = rng[6:].partition("-")
            start = int(a or 0)
            end = min(int(b), len(data) - 1) if b else len(data) - 1
        if start >= len(data):
            return self.empty(416, [("Content-Range", f"bytes */{len(data)}")])
        self.send_response(206)
        self.send_header("ETag", f'"{sha[:40]}"')
        self.send_header("X-Repo-Commit", COMMIT)
        if len(data) >= LFS_THRESHOLD:
            self.send_header("X-Linked-Etag", f'"{sha}"')
            self.send_header("X-Linked-Size", str(len(data)))
        self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.send_header("Content-Length", str(end + 1 - start))
        self.end_headers()
        if body:
            self.wfile.write(data[start:end + 1])


if __name__ == "__main__":
    DIR, portfile = sys.argv[1], sys.argv[2]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(portfile + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(portfile + ".tmp", portfile)
    server.serve_forever()
