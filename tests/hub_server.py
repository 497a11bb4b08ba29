"""A small Hugging Face Hub server for upload tests, speaking the Hub's HTTP API on 127.0.0.1.

No public server implements the Hub's upload API, so this one does, for the real
``huggingface_hub`` client (set ``HF_ENDPOINT`` to :attr:`HubServer.url` and
``HF_HUB_DISABLE_XET=1``). Endpoints:

- ``POST /api/repos/create``                                   create a model repo
- ``POST /api/models/{repo}/preupload/{rev}``                  regular or LFS upload per file
- ``POST /{repo}.git/info/lfs/objects/batch``                  LFS batch API (basic transfer)
- ``PUT  /lfs-objects/{repo}/{oid}``                           the upload target of the batch API
- ``POST /api/models/{repo}/commit/{rev}``                     NDJSON commit
- ``GET|HEAD /{repo}/resolve/{rev}/{path}``                    download a file
- ``GET  /api/models/{repo}/tree/{rev}[/{path}]``              list files
- ``GET  /api/models/{repo}[/revision/{rev}]``                 model info
- ``POST /api/validate-yaml``                                  README metadata check

Each repository is a git working tree at ``<root>/models/<org>/<name>`` whose LFS files are
pointer files with their content in ``.git/lfs/objects/<aa>/<bb>/<oid>``: the layout the
``olah`` mirror serves in offline mode, so that what this server received can be downloaded
through a real third-party Hub server. Errors carry the Hub's ``X-Error-Code`` header
(``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) so the client raises its own
exceptions. Write endpoints require a bearer token (any value).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import socket
import subprocess
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".onnx", ".npz")
LFS_MIN_SIZE = 10 * 1024 * 1024  # the Hub stores larger files in LFS whatever their name
GITATTRIBUTES = "".join(f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n" for suffix in LFS_SUFFIXES)
POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n"
POINTER_PATTERN = re.compile(r"^version https://git-lfs\.github\.com/spec/v1\noid sha256:([0-9a-f]{64})\nsize (\d+)\n$")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
GIT_ENV = {
    "GIT_AUTHOR_NAME": "hub-test-server",
    "GIT_AUTHOR_EMAIL": "hub@test.invalid",
    "GIT_COMMITTER_NAME": "hub-test-server",
    "GIT_COMMITTER_EMAIL": "hub@test.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}


def free_port(start: int | None = None) -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (scanning upwards, never port 0)."""
    port = start if start is not None else 20000 + os.getpid() % 20000
    for candidate in range(port, port + 2000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return candidate
    raise RuntimeError(f"no free port in {port}..{port + 1999}")


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class Repository:
    """One model repo: a git working tree plus its LFS object store."""

    def __init__(self, path: Path, repo_id: str) -> None:
        self.path = path
        self.repo_id = repo_id

    @property
    def lfs_dir(self) -> Path:
        return self.path / ".git" / "lfs" / "objects"

    def lfs_path(self, oid: str) -> Path:
        return self.lfs_dir / oid[:2] / oid[2:4] / oid

    def git(self, *args: str, data: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["git", "-C", str(self.path), *args],
            input=data,
            capture_output=True,
            check=check,
            env={**os.environ, **GIT_ENV},
        )

    def create(self) -> str:
        self.path.mkdir(parents=True)
        self.git("init", "-q", "-b", "main")
        (self.path / ".gitattributes").write_text(GITATTRIBUTES)
        self.git("add", "-A")
        self.git("commit", "-q", "-m", "initial commit")
        return self.head("main")

    def head(self, revision: str) -> str:
        """Commit hash of a branch, tag or (possibly abbreviated) commit."""
        if not re.fullmatch(r"[A-Za-z0-9._/-]+", revision):
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        result = self.git("rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}", check=False)
        if result.returncode != 0:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return result.stdout.decode().strip()

    def branch(self) -> str:
        return self.git("rev-parse", "--abbrev-ref", "HEAD").stdout.decode().strip()

    def commit_date(self, commit: str) -> str:
        """Commit time in the Hub's format (UTC, milliseconds, ``Z``)."""
        seconds = int(self.git("show", "-s", "--format=%ct", commit).stdout.decode().strip())
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")

    def blob(self, commit: str, path: str) -> tuple[bytes, str]:
        """Content and git blob id of ``path`` at ``commit``."""
        listing = self.git("ls-tree", commit, "--", path).stdout.decode().strip()
        if not listing or listing.split()[1] != "blob":
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        blob_id = listing.split()[2]
        return self.git("cat-file", "blob", blob_id).stdout, blob_id

    def entries(self, commit: str, path: str, recursive: bool) -> list[dict[str, Any]]:
        prefix = path.strip("/")
        args = ["ls-tree", "-l"] + (["-r", "-t"] if recursive else []) + [commit]
        if prefix:
            args += ["--", prefix + "/"]
        items = []
        for line in self.git(*args).stdout.decode().splitlines():
            meta, name = line.split("\t", 1)
            _mode, kind, oid, size = meta.split()
            if kind == "tree":
                items.append({"type": "directory", "oid": oid, "size": 0, "path": name})
                continue
            item: dict[str, Any] = {"type": "file", "oid": oid, "size": int(size), "path": name}
            pointer = (
                POINTER_PATTERN.match(self.git("cat-file", "blob", oid).stdout.decode(errors="replace"))
                if int(size) < 200
                else None
            )
            if pointer:
                item["size"] = int(pointer.group(2))
                item["lfs"] = {"oid": pointer.group(1), "size": int(pointer.group(2)), "pointerSize": int(size)}
            items.append(item)
        return items


class HubServer:
    """The server; use as a context manager or call :meth:`start` / :meth:`stop`.

    Args:
        root: folder that holds the repositories (``models/<org>/<name>``).
        port: TCP port on 127.0.0.1; default: a free one.
    """

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = Path(root)
        self.port = port
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request, for tests
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def repository(self, repo_id: str) -> Repository:
        return Repository(self.root / "models" / repo_id, repo_id)

    def start(self) -> HubServer:
        self.port = self.port or free_port()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- endpoints --------------------------------------------------------------------------
    def existing(self, repo_id: str) -> Repository:
        repository = self.repository(repo_id)
        if not (repository.path / ".git").is_dir():
            raise HubError(404, f"Repository Not Found for url: {repo_id}", "RepoNotFound")
        return repository

    def create_repo(self, payload: dict[str, Any], base_url: str) -> tuple[int, dict[str, Any]]:
        name, organization = payload.get("name"), payload.get("organization")
        if payload.get("type", "model") != "model":
            raise HubError(400, "this test server only hosts model repos")
        if not organization or not all(NAME_PATTERN.match(str(part or "")) for part in (name, organization)):
            raise HubError(400, f"invalid repo name {organization}/{name}")
        repo_id = f"{organization}/{name}"
        with self._lock:
            repository = self.repository(repo_id)
            if repository.path.exists():
                return 409, {"error": "You already created this model repo", "url": f"{base_url}/{repo_id}"}
            repository.create()
        return 200, {"url": f"{base_url}/{repo_id}", "name": repo_id, "id": repo_id}

    def preupload(self, repo_id: str, revision: str, payload: dict[str, Any]) -> dict[str, Any]:
        repository = self.existing(repo_id)
        repository.head(revision)
        files = []
        for item in payload.get("files", []):
            path, size = item["path"], int(item["size"])
            lfs = path.endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE
            files.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": None})
        return {"files": files, "commitOid": repository.head(revision)}

    def lfs_batch(self, repo_id: str, payload: dict[str, Any], base_url: str) -> dict[str, Any]:
        repository = self.existing(repo_id)
        if payload.get("operation") != "upload":
            raise HubError(400, "this test server only accepts LFS uploads")
        objects = []
        for item in payload.get("objects", []):
            oid, size = item["oid"], int(item["size"])
            entry: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if not re.fullmatch(r"[0-9a-f]{64}", oid):
                entry["error"] = {"code": 422, "message": "oid must be a sha256"}
            elif not repository.lfs_path(oid).is_file():
                entry["actions"] = {"upload": {"href": f"{base_url}/lfs-objects/{repo_id}/{oid}", "expires_in": 3600}}
            objects.append(entry)
        return {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}

    def lfs_put(self, repo_id: str, oid: str, data: bytes) -> None:
        repository = self.existing(repo_id)
        if hashlib.sha256(data).hexdigest() != oid:
            raise HubError(400, "uploaded content does not match its oid")
        target = repository.lfs_path(oid)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".part")
        tmp.write_bytes(data)
        os.replace(tmp, target)

    def commit(self, repo_id: str, revision: str, lines: list[dict[str, Any]], base_url: str) -> dict[str, Any]:
        repository = self.existing(repo_id)
        header = next((line["value"] for line in lines if line.get("key") == "header"), None)
        if header is None or not header.get("summary"):
            raise HubError(400, "commit header with a summary is required")
        with self._lock:
            head = repository.head(revision)
            if revision != repository.branch():
                if repository.git("show-ref", "--verify", "--quiet", f"refs/heads/{revision}", check=False).returncode:
                    raise HubError(400, f"can only commit to a branch, not {revision!r}")
                repository.git("checkout", "-q", revision)
            parent = header.get("parentCommit")
            if parent and not head.startswith(parent):
                raise HubError(412, f"A commit has happened since. Please refresh and try again. ({head})")
            try:
                for line in lines:
                    self._apply(repository, line)
                repository.git("add", "-A")
                message = header["summary"] + (f"\n\n{header['description']}" if header.get("description") else "")
                repository.git("commit", "-q", "--allow-empty", "-m", message)
                oid = repository.head("HEAD")
            except Exception:
                repository.git("reset", "-q", "--hard", head)
                repository.git("clean", "-q", "-fd")
                raise
            finally:
                repository.git("checkout", "-q", "main", check=False)
        return {
            "commitUrl": f"{base_url}/{repo_id}/commit/{oid}",
            "commitOid": oid,
            "pullRequestUrl": None,
            "success": True,
        }

    def _apply(self, repository: Repository, line: dict[str, Any]) -> None:
        key, value = line.get("key"), line.get("value", {})
        if key == "header":
            return
        relative = Path(value.get("path", ""))
        if relative.is_absolute() or ".." in relative.parts or relative.parts[:1] == (".git",) or not relative.parts:
            raise HubError(400, f"invalid path {value.get('path')!r}")
        target = repository.path / relative
        if key == "file":
            if value.get("encoding") != "base64":
                raise HubError(400, "file content must be base64")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(base64.b64decode(value["content"]))
        elif key == "lfsFile":
            oid = value["oid"]
            stored = repository.lfs_path(oid)
            if not stored.is_file():
                raise HubError(422, f"LFS object {oid} of {relative} was never uploaded")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(POINTER.format(oid=oid, size=stored.stat().st_size))
        elif key == "deletedFile":
            if not target.is_file():
                raise HubError(404, f"A file with this name doesn't exist: {relative}", "EntryNotFound")
            target.unlink()
        elif key == "deletedFolder":
            repository.git("rm", "-r", "-q", "--", str(relative))
        else:
            raise HubError(400, f"unknown commit operation {key!r}")

    def resolve(self, repo_id: str, revision: str, path: str) -> tuple[bytes, dict[str, str]]:
        repository = self.existing(repo_id)
        commit = repository.head(revision)
        content, blob_id = repository.blob(commit, path)
        headers = {"X-Repo-Commit": commit, "ETag": f'"{blob_id}"'}
        pointer = POINTER_PATTERN.match(content.decode(errors="replace")) if len(content) < 200 else None
        if pointer:
            oid = pointer.group(1)
            content = repository.lfs_path(oid).read_bytes()
            headers.update({"ETag": f'"{oid}"', "X-Linked-Etag": f'"{oid}"', "X-Linked-Size": str(len(content))})
        return content, headers

    def model_info(self, repo_id: str, revision: str) -> dict[str, Any]:
        repository = self.existing(repo_id)
        commit = repository.head(revision)
        files = [item for item in repository.entries(commit, "", recursive=True) if item["type"] == "file"]
        date = repository.commit_date(commit)
        first = repository.git("rev-list", "--max-parents=0", commit).stdout.decode().split()[0]
        return {
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
            "id": repo_id,
            "modelId": repo_id,
            "author": repo_id.split("/")[0],
            "sha": commit,
            "lastModified": date,
            "createdAt": repository.commit_date(first),
            "private": False,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "library_name": "facetools-dapfsr",
            "siblings": [{"rfilename": item["path"]} for item in files],
        }


def _handler_for(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        @property
        def base_url(self) -> str:
            return f"http://{self.headers.get('Host', f'127.0.0.1:{hub.port}')}"

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_HEAD(self) -> None:
            self._dispatch("HEAD")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def do_PUT(self) -> None:
            self._dispatch("PUT")

        def _body(self) -> bytes:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _json_body(self) -> Any:
            try:
                return json.loads(self._body() or b"{}")
            except json.JSONDecodeError as error:
                raise HubError(400, f"invalid JSON: {error}") from error

        def _require_token(self) -> None:
            if not self.headers.get("Authorization", "").startswith("Bearer "):
                raise HubError(401, "Invalid credentials in Authorization header")

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None, head: bool = False) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _send_json(self, status: int, payload: Any) -> None:
            self._send(status, json.dumps(payload).encode(), {"Content-Type": "application/json"})

        def _dispatch(self, method: str) -> None:
            split = urlsplit(self.path)
            path, query = unquote(split.path), parse_qs(split.query)
            hub.requests.append((method, path))
            try:
                self._route(method, path, query)
            except HubError as error:
                headers = {"Content-Type": "application/json", "X-Error-Message": error.message}
                if error.code:
                    headers["X-Error-Code"] = error.code
                body = json.dumps({"error": error.message}).encode()
                self._send(error.status, body, headers, head=method == "HEAD")
            except Exception as error:  # noqa: BLE001 - a test server reports, never dies
                self._send(500, json.dumps({"error": repr(error)}).encode(), {"Content-Type": "application/json"})

        def _route(self, method: str, path: str, query: dict[str, list[str]]) -> None:
            repo = r"(?P<repo>[^/]+/[^/]+)"
            routes = [
                ("POST", r"/api/repos/create", self._create),
                ("POST", r"/api/validate-yaml", self._validate_yaml),
                ("POST", rf"/api/models/{repo}/preupload/(?P<rev>.+)", self._preupload),
                ("POST", rf"/api/models/{repo}/commit/(?P<rev>.+)", self._commit),
                ("GET", rf"/api/models/{repo}/tree/(?P<rev>[^/]+)(?:/(?P<sub>.*))?", self._tree),
                ("GET", rf"/api/models/{repo}/revision/(?P<rev>.+)", self._info),
                ("GET", rf"/api/models/{repo}", self._info),
                ("POST", rf"/{repo}\.git/info/lfs/objects/batch", self._batch),
                ("PUT", rf"/lfs-objects/{repo}/(?P<oid>[0-9a-f]{{64}})", self._lfs_put),
                ("GET", rf"/{repo}/resolve/(?P<rev>[^/]+)/(?P<file>.+)", self._resolve),
                ("HEAD", rf"/{repo}/resolve/(?P<rev>[^/]+)/(?P<file>.+)", self._resolve),
            ]
            for route_method, pattern, handler in routes:
                match = re.fullmatch(pattern, path)
                if match and route_method == method:
                    handler(method=method, query=query, **{k: v for k, v in match.groupdict().items()})
                    return
            raise HubError(404, f"no route for {method} {path}")

        def _create(self, **_: Any) -> None:
            self._require_token()
            status, payload = hub.create_repo(self._json_body(), self.base_url)
            self._send_json(status, payload)

        def _validate_yaml(self, **_: Any) -> None:
            content = self._json_body().get("content", "")
            match = re.match(r"^---\n(.*?)\n---", content, flags=re.DOTALL)
            try:
                metadata = yaml.safe_load(match.group(1)) if match else {}
            except yaml.YAMLError as error:
                self._send_json(400, {"errors": [{"message": f"invalid YAML: {error}"}], "warnings": []})
                return
            if metadata is not None and not isinstance(metadata, dict):
                self._send_json(400, {"errors": [{"message": "metadata must be a mapping"}], "warnings": []})
                return
            self._send_json(200, {"errors": [], "warnings": []})

        def _preupload(self, repo: str, rev: str, **_: Any) -> None:
            self._require_token()
            self._send_json(200, hub.preupload(repo, rev, self._json_body()))

        def _batch(self, repo: str, **_: Any) -> None:
            self._require_token()
            payload = hub.lfs_batch(repo, self._json_body(), self.base_url)
            self._send(200, json.dumps(payload).encode(), {"Content-Type": "application/vnd.git-lfs+json"})

        def _lfs_put(self, repo: str, oid: str, **_: Any) -> None:
            hub.lfs_put(repo, oid, self._body())
            self._send(200, b"")

        def _commit(self, repo: str, rev: str, **_: Any) -> None:
            self._require_token()
            lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
            self._send_json(200, hub.commit(repo, rev, lines, self.base_url))

        def _tree(self, repo: str, rev: str, sub: str | None, query: dict[str, list[str]], **_: Any) -> None:
            repository = hub.existing(repo)
            commit = repository.head(rev)
            recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
            items = repository.entries(commit, sub or "", recursive)
            if sub and not items:
                raise HubError(404, f"Entry not found: {sub}", "EntryNotFound")
            self._send_json(200, items)

        def _info(self, repo: str, rev: str = "main", **_: Any) -> None:
            self._send_json(200, hub.model_info(repo, rev))

        def _resolve(self, method: str, repo: str, rev: str, file: str, **_: Any) -> None:
            content, headers = hub.resolve(repo, rev, file)
            headers["Content-Type"] = "application/octet-stream"
            self._send(200, content, headers, head=method == "HEAD")

    return Handler
