"""A loopback stand-in for the Hugging Face Hub HTTP API, for tests only.

`FakeHub` serves, from a thread of the test process, just the requests that `huggingface_hub` 2.x and transformers 5
send for a push (`create_repo`, `upload_folder`, `PreTrainedModel.push_to_hub`) and for a download
(`from_pretrained`, `hf_hub_download`, `snapshot_download`):

    POST /api/repos/create                                  create a repo (409 + its url if it exists)
    POST /api/validate-yaml                                 parse README.md's front matter (400 if it is not a mapping)
    GET  /api/agent-harnesses                               an empty registry (huggingface_hub 2.4 telemetry)
    POST /api/{type}s/{repo_id}/preupload/{revision}        answer `regular` for every file (never LFS or Xet)
    POST /api/{type}s/{repo_id}/commit/{revision}           apply an NDJSON commit (base64 files, deletions)
    GET  /api/{type}s/{repo_id}[/revision/{revision}]       repo info (sha, siblings)
    GET  /api/{type}s/{repo_id}/tree/{revision}[/{path}]    list a folder (404 EntryNotFound if absent)
    HEAD /{repo_id}/resolve/{revision}/{path}               X-Repo-Commit, ETag, Content-Length (404 EntryNotFound)
    GET  /{repo_id}/resolve/{revision}/{path}               the file (single `Range: bytes=a-[b]` honoured)

`{type}s` is `models`, `datasets` or `spaces`; download URLs of datasets and spaces carry a `datasets/` or `spaces/`
prefix. The revision is `main` or a commit id. Writes need an `Authorization: Bearer <anything>` header; reads of a
private repo do too. Anything else gets a 404.

Storage: the `main` tree of each repo lives, byte for byte, under `FakeHub.repo_dir(repo_id)`
(`<storage>/<type>s/<repo_id>/`); every blob ever committed is kept under `<storage>/.blobs/<git sha1>`, so older
commits stay downloadable. `FakeHub.requests` records `(method, path)` of every request.

Clients must be pointed at it before `huggingface_hub` is imported, and must not try Xet storage:
`HF_ENDPOINT=<hub.url> HF_TOKEN=<anything> HF_HUB_DISABLE_XET=1`. Run `python tests/fake_hub.py DIR [PORT]` to serve
DIR by hand.
"""

import base64
import functools
import hashlib
import json
import os
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, unquote, urlsplit

import yaml


REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}  # of download and web URLs

# a repo id is "name" or "namespace/name"; revisions arrive URL-quoted in one path segment
_REPO = r"(?P<repo_id>[^/]+(?:/[^/]+)?)"
_API = r"^/api/(?P<kind>models|datasets|spaces)/" + _REPO
_RESOLVE = r"^/(?:(?P<kind>datasets|spaces)/)?" + _REPO + r"/resolve/(?P<revision>[^/]+)/(?P<path>.+)$"
ROUTES = [
    ("POST", re.compile(r"^/api/repos/create$"), "create_repo"),
    ("POST", re.compile(r"^/api/validate-yaml$"), "validate_yaml"),
    ("GET", re.compile(r"^/api/agent-harnesses$"), "agent_harnesses"),
    ("POST", re.compile(_API + r"/preupload/(?P<revision>[^/]+)$"), "preupload"),
    ("POST", re.compile(_API + r"/commit/(?P<revision>[^/]+)$"), "commit"),
    ("GET", re.compile(_API + r"/tree/(?P<revision>[^/]+)(?:/(?P<path>.*))?$"), "tree"),
    ("GET", re.compile(_API + r"(?:/revision/(?P<revision>[^/]+))?$"), "repo_info"),
    ("HEAD", re.compile(_RESOLVE), "resolve"),
    ("GET", re.compile(_RESOLVE), "resolve"),
]  # fmt: skip
FRONT_MATTER = re.compile(r"\A\s*---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.DOTALL)


def git_blob_sha1(data: bytes) -> str:
    """The id git gives a blob with this content (what the Hub reports as the oid / ETag of a regular file)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _iso_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


class HubError(Exception):
    """An error response: HTTP status, the `X-Error-Code` header (if any) and a message."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


@dataclass
class Commit:
    oid: str
    message: str
    files: dict[str, str]  # path -> git sha1 of the content
    date: str = field(default_factory=_iso_now)


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    commits: list[Commit]  # oldest first; commits[-1] is the head of `main`

    @property
    def head(self) -> Commit:
        return self.commits[-1]

    def commit_at(self, revision: str) -> Commit:
        if revision == "main":
            return self.head
        for commit in self.commits:
            if commit.oid == revision:
                return commit
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")


class FakeHub:
    """The server and its state. Use as a context manager, or call `start()` / `stop()`."""

    def __init__(self, storage: str | os.PathLike, host: str = "127.0.0.1", port: int = 0):
        self.storage = Path(storage)
        self.storage.mkdir(parents=True, exist_ok=True)
        (self.storage / ".blobs").mkdir(exist_ok=True)
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), _Handler)
        self._server.daemon_threads = True
        self._server.hub = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeHub":
        serve = functools.partial(self._server.serve_forever, poll_interval=0.05)  # quick shutdown
        self._thread = threading.Thread(target=serve, name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> "FakeHub":
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    def repo_dir(self, repo_id: str, repo_type: str = "model") -> Path:
        """Folder holding the current `main` tree of the repo."""
        return self.storage / f"{repo_type}s" / repo_id

    def repo_url(self, repo: Repo) -> str:
        return f"{self.url}/{URL_PREFIX[repo.repo_type]}{repo.repo_id}"

    # -- state -----------------------------------------------------------------------------------------------------

    def get_repo(self, repo_type: str, repo_id: str, authorized: bool) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not authorized):
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def _blob(self, oid: str) -> Path:
        return self.storage / ".blobs" / oid

    def read(self, commit: Commit, path: str) -> bytes:
        return self._blob(commit.files[path]).read_bytes()

    def create_repo(self, repo_type: str, repo_id: str, private: bool) -> tuple[Repo, bool]:
        with self._lock:
            repo = self.repos.get((repo_type, repo_id))
            if repo is not None:
                return repo, False
            initial = Commit(hashlib.sha1(f"{repo_type}/{repo_id}".encode()).hexdigest(), "initial commit", {})
            repo = self.repos[(repo_type, repo_id)] = Repo(repo_type, repo_id, private, [initial])
            self.repo_dir(repo_id, repo_type).mkdir(parents=True, exist_ok=True)
            return repo, True

    def apply_commit(self, repo: Repo, message: str, parent: str | None, additions: dict[str, bytes],
                     deleted_files: list[str], deleted_folders: list[str]) -> Commit:  # fmt: skip
        with self._lock:
            if parent is not None and parent != repo.head.oid:
                raise HubError(412, f"A commit has happened since {parent}; the head is now {repo.head.oid}")
            files = dict(repo.head.files)
            for path in deleted_files:
                if files.pop(path, None) is None:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
            for folder in deleted_folders:
                prefix = folder.rstrip("/") + "/"
                for path in [p for p in files if p.startswith(prefix)]:
                    del files[path]
            for path, data in additions.items():
                oid = git_blob_sha1(data)
                if not self._blob(oid).exists():
                    _atomic_write(self._blob(oid), data)
                files[path] = oid
            tree = "\n".join(f"{oid} {path}" for path, oid in sorted(files.items()))
            commit_oid = hashlib.sha1(f"{repo.head.oid}\n{message}\n{tree}\n{time.time_ns()}".encode()).hexdigest()
            commit = Commit(commit_oid, message, files)
            repo.commits.append(commit)
            self._materialize(repo, previous=repo.commits[-2].files)
            return commit

    def _materialize(self, repo: Repo, previous: dict[str, str]):
        """Bring the on-disk `main` tree in line with the head commit."""
        root = self.repo_dir(repo.repo_id, repo.repo_type)
        files = repo.head.files
        for path in set(previous) - set(files):
            (root / path).unlink(missing_ok=True)
        for path, oid in files.items():
            if previous.get(path) != oid or not (root / path).exists():
                _atomic_write(root / path, self._blob(oid).read_bytes())
        for folder in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            if not any(folder.iterdir()):
                folder.rmdir()


def _atomic_write(path: Path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{threading.get_ident()}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def _check_path(path: str) -> str:
    parts = PurePosixPath(path).parts
    if not path or path.startswith("/") or any(part in ("..", ".") for part in parts) or "\\" in path:
        raise HubError(400, f"Invalid path in repo: {path!r}")
    return path


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real Hub; every response carries a Content-Length
    server_version = "FakeHub/1.0"

    @property
    def hub(self) -> FakeHub:
        return self.server.hub

    def log_message(self, format, *args):  # quiet: the requests are recorded in FakeHub.requests
        pass

    # -- plumbing --------------------------------------------------------------------------------------------------

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _dispatch(self, method: str):
        url = urlsplit(self.path)
        self.query = parse_qs(url.query)
        self.hub.requests.append((method, url.path))
        try:
            body = self._read_body()
            for route_method, pattern, name in ROUTES:
                match = pattern.match(url.path)
                if route_method == method and match:
                    params = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                    getattr(self, name)(body=body, **params)
                    return
            raise HubError(404, f"{method} {url.path} is not implemented by the fake Hub")
        except HubError as error:
            headers = dict(error.headers)
            if error.code:
                headers["X-Error-Code"] = error.code
            headers["X-Error-Message"] = error.message
            self._send_json(error.status, {"error": error.message}, headers, head_only=method == "HEAD")
        except Exception as error:  # a bug in the fake server: report it to the client instead of hanging
            self._send_json(500, {"error": f"fake hub: {type(error).__name__}: {error}"}, head_only=method == "HEAD")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, data: bytes, headers: dict | None = None, head_only: bool = False,
              content_length: int | None = None):  # fmt: skip
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data) if content_length is None else content_length))
        self.end_headers()
        if not head_only:
            self.wfile.write(data)

    def _send_json(self, status: int, payload, headers: dict | None = None, head_only: bool = False):
        data = json.dumps(payload).encode()
        self._send(status, data, {"Content-Type": "application/json", **(headers or {})}, head_only)

    def _authorized(self) -> bool:
        return self.headers.get("Authorization", "").startswith("Bearer ") and len(self.headers["Authorization"]) > 7

    def _require_token(self):
        if not self._authorized():
            raise HubError(401, "Invalid credentials in Authorization header")

    def _repo(self, kind: str | None, repo_id: str) -> Repo:
        return self.hub.get_repo(REPO_TYPES[kind] if kind else "model", repo_id, self._authorized())

    @staticmethod
    def _json(body: bytes):
        try:
            return json.loads(body or b"{}")
        except json.JSONDecodeError as error:
            raise HubError(400, f"Invalid JSON body: {error}")

    # -- endpoints -------------------------------------------------------------------------------------------------

    def create_repo(self, body: bytes):
        self._require_token()
        payload = self._json(body)
        name, organization = payload.get("name"), payload.get("organization")
        if not name or "/" in name:
            raise HubError(400, f"Invalid repo name {name!r}")
        repo_type = payload.get("type") or "model"
        if repo_type not in URL_PREFIX:
            raise HubError(400, f"Invalid repo type {repo_type!r}")
        private = bool(payload.get("private")) or payload.get("visibility") == "private"
        repo, created = self.hub.create_repo(repo_type, f"{organization}/{name}" if organization else name, private)
        url = self.hub.repo_url(repo)
        if not created:  # huggingface_hub reads the url from the 409 body when exist_ok=True
            raise_body = {"error": "You already created this model repo", "url": url}
            self._send_json(409, raise_body, {"X-Error-Message": raise_body["error"]})
            return
        self._send_json(200, {"url": url, "name": repo.repo_id, "id": repo.repo_id})

    def validate_yaml(self, body: bytes):
        content = self._json(body).get("content", "")
        match = FRONT_MATTER.match(content)
        if match is None:
            self._send_json(200, {"errors": [], "warnings": [{"message": "Empty or missing yaml metadata"}]})
            return
        try:
            metadata = yaml.safe_load(match.group(1))
        except yaml.YAMLError as error:
            self._send_json(400, {"errors": [{"message": f"Invalid YAML: {error}"}], "warnings": []})
            return
        if metadata is not None and not isinstance(metadata, dict):
            self._send_json(400, {"errors": [{"message": "The metadata must be a YAML mapping"}], "warnings": []})
            return
        self._send_json(200, {"errors": [], "warnings": []})

    def agent_harnesses(self, body: bytes):
        # huggingface_hub >= 2.4 fetches this registry (user-agent telemetry) once a day; an empty one detects nothing
        self._send_json(200, {"standardEnvVars": [], "harnesses": {}})

    def preupload(self, body: bytes, kind: str, repo_id: str, revision: str):
        self._require_token()
        repo = self._repo(kind, repo_id)
        head = repo.commit_at(revision)
        files = []
        for entry in self._json(body).get("files", []):
            path = _check_path(entry.get("path", ""))
            info = {"path": path, "uploadMode": "regular", "shouldIgnore": False}
            if path in head.files:
                info["oid"] = head.files[path]  # lets the client skip files that did not change
            files.append(info)
        self._send_json(200, {"files": files, "commitOid": head.oid})

    def commit(self, body: bytes, kind: str, repo_id: str, revision: str):
        self._require_token()
        repo = self._repo(kind, repo_id)
        if revision != "main" or "create_pr" in self.query:
            raise HubError(400, "The fake Hub only commits to main (no branches, no pull requests)")
        header, additions, deleted_files, deleted_folders = None, {}, [], []
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item.get("key"), item.get("value", {})
            if key == "header":
                header = value
            elif key == "file":
                if value.get("encoding") != "base64":
                    raise HubError(400, f"Unsupported encoding {value.get('encoding')!r}")
                additions[_check_path(value["path"])] = base64.b64decode(value["content"], validate=True)
            elif key == "deletedFile":
                deleted_files.append(_check_path(value["path"]))
            elif key == "deletedFolder":
                deleted_folders.append(_check_path(value["path"].rstrip("/")))
            elif key == "lfsFile":
                raise HubError(400, "LFS files are not supported: the fake Hub answers `regular` for every upload")
            else:
                raise HubError(400, f"Unknown commit operation {key!r}")
        if header is None or not header.get("summary"):
            raise HubError(400, "The commit has no header with a summary")
        commit = self.hub.apply_commit(
            repo, header["summary"], header.get("parentCommit"), additions, deleted_files, deleted_folders
        )
        self._send_json(200, {
            "success": True,
            "commitOid": commit.oid,
            "commitUrl": f"{self.hub.repo_url(repo)}/commit/{commit.oid}",
            "pullRequestUrl": None,
        })  # fmt: skip

    def repo_info(self, body: bytes, kind: str, repo_id: str, revision: str = "main"):
        repo = self._repo(kind, repo_id)
        commit = repo.commit_at(revision)
        namespace = repo_id.split("/")[0] if "/" in repo_id else "user"
        self._send_json(200, {
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
            "id": repo_id,
            "modelId": repo_id,
            "author": namespace,
            "sha": commit.oid,
            "private": repo.private,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "createdAt": repo.commits[0].date,
            "lastModified": commit.date,
            "siblings": [{"rfilename": path} for path in sorted(commit.files)],
        })  # fmt: skip

    def tree(self, body: bytes, kind: str, repo_id: str, revision: str, path: str = ""):
        commit = self._repo(kind, repo_id).commit_at(revision)
        folder = path.strip("/")
        prefix = f"{folder}/" if folder else ""
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        entries, folders = [], set()
        for file_path, oid in sorted(commit.files.items()):
            if not file_path.startswith(prefix):
                continue
            rest = file_path[len(prefix) :].split("/")
            for depth in range(1, len(rest)):  # the folders between `folder` and the file
                if recursive or depth == 1:
                    folders.add(prefix + "/".join(rest[:depth]))
            if recursive or len(rest) == 1:
                size = self.hub._blob(oid).stat().st_size
                entries.append({"type": "file", "oid": oid, "size": size, "path": file_path})
        if folder and not entries and not folders:
            raise HubError(404, f"{folder} does not exist on {revision}", "EntryNotFound")
        entries += [{"type": "directory", "oid": "0" * 40, "size": 0, "path": p} for p in sorted(folders)]
        self._send_json(200, entries)

    def resolve(self, body: bytes, repo_id: str, revision: str, path: str, kind: str | None = None):
        repo = self._repo(kind, repo_id)
        commit = repo.commit_at(revision)
        head_only = self.command == "HEAD"
        if path not in commit.files:
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        data = self.hub.read(commit, path)
        headers = {
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
            "ETag": f'"{commit.files[path]}"',
            "X-Repo-Commit": commit.oid,
        }
        status = 200
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if match and not head_only:
            start = int(match.group(1))
            end = min(int(match.group(2)) if match.group(2) else len(data) - 1, len(data) - 1)
            if start >= len(data) and len(data) > 0:
                self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
                return
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data, status = data[start : end + 1], 206
        self._send(status, data, headers, head_only=head_only)


try:
    import pytest
except ImportError:  # the server itself needs only the standard library and PyYAML
    pytest = None

if pytest is not None:

    @pytest.fixture
    def fake_hub(tmp_path_factory):
        """A running `FakeHub` on a free loopback port; `.url` is its endpoint, `.storage` its storage folder."""
        with FakeHub(tmp_path_factory.mktemp("fake_hub")) as hub:
            yield hub


if __name__ == "__main__":
    import sys

    with FakeHub(sys.argv[1], port=int(sys.argv[2]) if len(sys.argv) > 2 else 0) as hub:
        print(f"HF_ENDPOINT={hub.url} HF_TOKEN=dummy HF_HUB_DISABLE_XET=1  (storage: {hub.storage}); Ctrl-C stops")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
