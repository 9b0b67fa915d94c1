"""A loopback fake of the Hugging Face Hub, just enough for push-then-load tests.

It answers the calls huggingface_hub 2.4 makes for ``create_repo``, ``create_commit`` (README
validation, ``preupload``, the NDJSON ``commit`` with base64 "regular" files), ``repo_info`` /
``model_info``, ``list_repo_tree`` and file downloads (``HEAD`` + ``GET`` on ``resolve``), so that
``snapshot_download`` and ``hf_hub_download`` work against it. Every file is stored in memory and
uploaded as a regular (non-LFS) blob; LFS and Xet uploads are refused with a 400 because this fake
does not implement them.

It listens on 127.0.0.1 on a random port, serves from a daemon thread, refuses request bodies over
``max_body`` bytes, stops by itself after ``lifetime`` seconds if nobody stopped it, and is meant to
be used as a context manager (a test fixture) so that it always stops at teardown::

    with FakeHub(token="hf_test") as hub:
        HfApi(endpoint=hub.url, token="hf_test").create_repo("org/name")
        ...
        hub.files("org/name")  # {path: bytes} at main
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

_REPO = r"(?P<repo>[^/]+/[^/]+)"
_REV = r"(?P<rev>[^/]+)"
ROUTES = [
    ("POST", re.compile(r"^/api/repos/create$"), "create_repo"),
    ("POST", re.compile(r"^/api/validate-yaml$"), "validate_yaml"),
    ("POST", re.compile(rf"^/api/models/{_REPO}/preupload/{_REV}$"), "preupload"),
    ("POST", re.compile(rf"^/api/models/{_REPO}/commit/{_REV}$"), "commit"),
    ("GET", re.compile(rf"^/api/models/{_REPO}/revision/{_REV}$"), "repo_info"),
    ("GET", re.compile(rf"^/api/models/{_REPO}$"), "repo_info"),
    ("GET", re.compile(rf"^/api/models/{_REPO}/tree/{_REV}(?:/(?P<path>.*))?$"), "tree"),
    ("HEAD", re.compile(rf"^/{_REPO}/resolve/{_REV}/(?P<path>.+)$"), "resolve"),
    ("GET", re.compile(rf"^/{_REPO}/resolve/{_REV}/(?P<path>.+)$"), "resolve"),
]


def git_blob_oid(data: bytes) -> str:
    """The git object id of a blob, as the Hub reports it for regular files."""
    return hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest()


@dataclass
class Repo:
    """A repo: branches (and pull-request refs) pointing at commits; a commit is a full file tree."""

    private: bool = False
    refs: dict[str, str] = field(default_factory=dict)
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class FakeHub:
    """The fake Hub server. ``url`` is its endpoint; ``requests`` logs ``(method, path)``.

    Args:
        token: when set, writes (create, preupload, commit) need ``Authorization: Bearer <token>``.
        max_body: largest accepted request body, in bytes.
        lifetime: seconds after which the server stops itself.
    """

    def __init__(self, *, token: str | None = None, max_body: int = 64 * 1024 * 1024, lifetime: float = 300.0):
        self.token = token
        self.max_body = max_body
        self.lifetime = lifetime
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.commits_made: list[dict] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "FakeHub":
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-hub", daemon=True)
        self._thread.start()
        self._timer = threading.Timer(self.lifetime, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def __enter__(self) -> "FakeHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "FakeHub is not running"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    # ------------------------------------------------------------------ inspection
    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The files of ``repo_id`` at a branch or commit."""
        repo = self.repos[repo_id]
        return dict(repo.commits[repo.refs.get(revision, revision)])

    # ------------------------------------------------------------------ handlers
    def _repo(self, repo_id: str) -> Repo:
        repo = self.repos.get(repo_id)
        if repo is None:
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def _commit_of(self, repo: Repo, rev: str) -> str:
        rev = unquote(rev)
        if rev in repo.refs:
            return repo.refs[rev]
        if rev in repo.commits:
            return rev
        raise HubError(404, f"Revision {rev} not found", "RevisionNotFound")

    def create_repo(self, m, query, body, headers):
        self._authorise(headers)
        payload = json.loads(body or b"{}")
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else \
            f"user/{payload['name']}"
        if repo_id in self.repos:
            # the Hub answers 409 with the repo's url, which create_repo(exist_ok=True) returns
            return 409, {"error": "You already created this model repo", "url": f"{self.url}/{repo_id}"}, {}
        empty = hashlib.sha1(f"init:{repo_id}".encode()).hexdigest()
        self.repos[repo_id] = Repo(private=payload.get("visibility") == "private",
                                   refs={"main": empty}, commits={empty: {}}, messages={empty: "initial commit"})
        return 200, {"url": f"{self.url}/{repo_id}", "name": repo_id, "id": repo_id}, {}

    def validate_yaml(self, m, query, body, headers):
        content = json.loads(body).get("content", "")
        match = re.match(r"^---\n(.*?)\n---\n", content, re.S)
        if match:
            try:
                meta = yaml.safe_load(match.group(1))
            except yaml.YAMLError as exc:
                return 400, {"errors": [{"message": f"invalid YAML: {exc}"}], "warnings": []}, {}
            if not isinstance(meta, dict):
                return 400, {"errors": [{"message": "metadata is not a mapping"}], "warnings": []}, {}
        return 200, {"errors": [], "warnings": []}, {}

    def preupload(self, m, query, body, headers):
        self._authorise(headers)
        repo = self._repo(m["repo"])
        current = repo.commits.get(repo.refs.get(unquote(m["rev"]), ""), {})
        files = []
        for f in json.loads(body)["files"]:
            files.append({"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                          "oid": git_blob_oid(current[f["path"]]) if f["path"] in current else None})
        return 200, {"files": files, "commitOid": repo.refs.get(unquote(m["rev"]))}, {}

    def commit(self, m, query, body, headers):
        self._authorise(headers)
        repo_id, rev = m["repo"], unquote(m["rev"])
        repo = self._repo(repo_id)
        create_pr = query.get("create_pr", ["0"])[0] == "1"
        if rev not in repo.refs:
            raise HubError(404, f"Revision {rev} not found", "RevisionNotFound")
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "commit payload must start with a header line")
        tree = dict(repo.commits[repo.refs[rev]])
        for op in lines[1:]:
            key, value = op["key"], op["value"]
            if key == "file":
                if value.get("encoding") != "base64":
                    raise HubError(400, f"unsupported encoding {value.get('encoding')!r}")
                tree[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                tree.pop(value["path"], None)
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                tree = {p: d for p, d in tree.items() if not p.startswith(prefix)}
            else:
                raise HubError(400, f"this fake Hub does not implement {key!r} commit operations")
        digest = hashlib.sha1(repr((repo_id, rev, len(repo.commits), sorted(tree.items()))).encode())
        sha = digest.hexdigest()
        repo.commits[sha] = tree
        repo.messages[sha] = lines[0]["value"].get("summary", "")
        pr_url = None
        if create_pr:
            number = sum(1 for ref in repo.refs if ref.startswith("refs/pr/")) + 1
            repo.refs[f"refs/pr/{number}"] = sha
            pr_url = f"{self.url}/{repo_id}/discussions/{number}"
        else:
            repo.refs[rev] = sha
        self.commits_made.append({"repo": repo_id, "revision": rev, "sha": sha, "files": sorted(tree),
                                  "summary": repo.messages[sha], "create_pr": create_pr})
        return 200, {"commitUrl": f"{self.url}/{repo_id}/commit/{sha}", "commitOid": sha,
                     "pullRequestUrl": pr_url}, {}

    def repo_info(self, m, query, body, headers):
        repo_id = m["repo"]
        repo = self._repo(repo_id)
        self._authorise_read(repo, headers)
        sha = self._commit_of(repo, m["rev"] if "rev" in m.groupdict() and m["rev"] else "main")
        tree = repo.commits[sha]
        return 200, {"id": repo_id, "modelId": repo_id, "sha": sha, "private": repo.private,
                     "siblings": [{"rfilename": p} for p in sorted(tree)], "tags": []}, {}

    def tree(self, m, query, body, headers):
        repo = self._repo(m["repo"])
        self._authorise_read(repo, headers)
        tree = repo.commits[self._commit_of(repo, m["rev"])]
        prefix = (unquote(m["path"]).rstrip("/") + "/") if m["path"] else ""
        recursive = query.get("recursive", ["False"])[0].lower() == "true"
        entries, folders = [], set()
        for path in sorted(tree):
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix):]
            if "/" in rest and not recursive:
                folders.add(prefix + rest.split("/")[0])
                continue
            if recursive:
                parts = rest.split("/")[:-1]
                folders.update(prefix + "/".join(parts[:i + 1]) for i in range(len(parts)))
            data = tree[path]
            entries.append({"type": "file", "oid": git_blob_oid(data), "size": len(data), "path": path})
        entries += [{"type": "directory", "oid": "0" * 40, "size": 0, "path": f} for f in sorted(folders)]
        return 200, entries, {}

    def resolve(self, m, query, body, headers):
        repo = self._repo(m["repo"])
        self._authorise_read(repo, headers)
        sha = self._commit_of(repo, m["rev"])
        path = unquote(m["path"])
        tree = repo.commits[sha]
        if path not in tree:
            raise _EntryNotFound(sha, path)
        data = tree[path]
        return 200, data, {"X-Repo-Commit": sha, "ETag": f'"{git_blob_oid(data)}"'}

    # ------------------------------------------------------------------ auth
    def _authorise(self, headers) -> None:
        if self.token is None:
            return
        if headers.get("Authorization") != f"Bearer {self.token}":
            raise HubError(401, "Invalid credentials in Authorization header")

    def _authorise_read(self, repo: Repo, headers) -> None:
        if repo.private:
            try:
                self._authorise(headers)
            except HubError:
                raise HubError(404, "Repository not found", "RepoNotFound") from None


class _EntryNotFound(HubError):
    def __init__(self, sha: str, path: str):
        super().__init__(404, f"Entry {path} not found", "EntryNotFound")
        self.sha = sha


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # keep test output quiet
        pass

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        path, query = unquote(parts.path), parse_qs(parts.query)
        length = int(self.headers.get("Content-Length") or 0)
        if length > self.fake.max_body:
            self._send(413, {"error": f"body over {self.fake.max_body} bytes"}, {}, method)
            self.close_connection = True
            return
        body = self.rfile.read(length) if length else b""
        self.fake.requests.append((method, path))
        for route_method, pattern, name in ROUTES:
            if route_method != method:
                continue
            match = pattern.match(path)
            if match:
                try:
                    with self.fake._lock:
                        status, payload, headers = getattr(self.fake, name)(match, query, body, self.headers)
                except _EntryNotFound as exc:
                    self._send(404, {"error": exc.message}, {"X-Error-Code": exc.code, "X-Repo-Commit": exc.sha},
                               method)
                except HubError as exc:
                    extra = {"X-Error-Code": exc.code} if exc.code else {}
                    extra["X-Error-Message"] = exc.message
                    self._send(exc.status, {"error": exc.message}, extra, method)
                except Exception as exc:  # a bug in the fake: say so instead of hanging the client
                    self._send(500, {"error": f"fake hub: {type(exc).__name__}: {exc}"}, {}, method)
                else:
                    self._send(status, payload, headers, method)
                return
        self._send(404, {"error": f"fake hub does not implement {method} {path}"}, {}, method)

    def _send(self, status: int, payload, headers: dict, method: str) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream" if isinstance(payload, bytes)
                         else "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(data)

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")
