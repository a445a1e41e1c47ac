"""A small, strict Hugging Face Hub-compatible HTTP server for the test suite.

The tests run the real `huggingface_hub` client (and diffusers on top of it) over HTTP against this server on
127.0.0.1. It implements the endpoints listed in HUB_PROTOCOL.md for model, dataset and space repos, and it is as
strict as the real Hub where the client's behaviour depends on it: private repos are invisible without access,
errors carry `X-Error-Code`, LFS uploads go to signed URLs, a deterministic error is never a 5xx.

Storage: every commit is a full snapshot `{path: Entry}`; file contents live on disk, content-addressed by sha256.
Repositories, commits and refs live in memory.

    server = HubServer(tmp_path, port=0, lfs_threshold=1024)
    server.add_token("hf_alice_write", "alice")
    server.start()
    ...  # HF_ENDPOINT=server.url
    server.fail_next(2, status=500, path_contains="/preupload/")  # two 500s, then normal answers
    server.stop()
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

DEFAULT_LFS_THRESHOLD = 10 * 1024 * 1024
REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}  # URL segment -> repo type
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
NAME_REGEX = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?")
BRANCH_REGEX = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*")
INITIAL_GITATTRIBUTES = b"".join(
    f"*.{ext} filter=lfs diff=lfs merge=lfs -text\n".encode()
    for ext in ("bin", "ckpt", "h5", "npy", "npz", "onnx", "pt", "pth", "safetensors", "tar.gz", "zip")
)


class HubError(Exception):
    """An HTTP error answer: status, message, and the `X-Error-Code` the client dispatches on."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = (status, message, code, headers or {})


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob: sha1 of `blob <size>\\0<content>`."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def hub_date(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class Token:
    user: str
    role: str  # "read" | "write"
    orgs: tuple[str, ...] = ()

    @property
    def namespaces(self) -> set[str]:
        return {self.user, *self.orgs}


@dataclass(frozen=True)
class Entry:
    """One file of a commit. `content_sha1` is the git blob id of the content itself."""

    size: int
    sha256: str
    content_sha1: str
    lfs: bool

    @property
    def blob_id(self) -> str:
        """What git stores for the path: the content, or the LFS pointer for an LFS file."""
        return git_blob_sha1(lfs_pointer(self.sha256, self.size)) if self.lfs else self.content_sha1

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.content_sha1


@dataclass(frozen=True)
class Commit:
    oid: str
    parent: str | None
    files: dict[str, Entry]
    title: str
    date: datetime


@dataclass
class Repo:
    type: str
    id: str
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    lfs_oids: set[str] = field(default_factory=set)  # LFS objects uploaded to this repo

    @property
    def namespace(self) -> str:
        return self.id.split("/")[0]

    def resolve(self, revision: str) -> Commit:
        oid = self.branches.get(revision) or self.tags.get(revision)
        oid = oid or (revision if re.fullmatch(r"[0-9a-f]{40}", revision) else None)
        if oid not in self.commits:
            raise HubError(404, f"Revision not found: {revision!r} in {self.id}", "RevisionNotFound")
        return self.commits[oid]


@dataclass
class Request:
    method: str
    path: str  # raw, still percent-encoded, without the query string
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    token: Token | None

    def json(self) -> dict:
        try:
            data = json.loads(self.body or b"{}")
        except ValueError as error:
            raise HubError(400, f"Request body is not valid JSON: {error}") from None
        if not isinstance(data, dict):
            raise HubError(400, "Request body must be a JSON object")
        return data

    def flag(self, name: str) -> bool:
        return self.query.get(name, "").lower() in ("1", "true")


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Failure:
    remaining: int
    status: int
    path_contains: str
    method: str | None


_T = r"(?P<type>models|datasets|spaces)"
_ID = r"(?P<ns>[^/]+)/(?P<name>[^/]+)"
_GIT = r"/(?:(?P<prefix>datasets|spaces)/)?" + _ID + r"\.git/info/lfs/objects"
ROUTES = [  # (methods, regex on the raw path, handler name)
    (("GET",), r"/api/whoami-v2", "whoami"),
    (("GET",), r"/api/agent-harnesses", "agent_harnesses"),
    (("POST",), r"/api/repos/create", "create_repo"),
    (("DELETE",), r"/api/repos/delete", "delete_repo"),
    (("POST",), r"/api/validate-yaml", "validate_yaml"),
    (("GET",), rf"/api/{_T}/{_ID}(?:/revision/(?P<rev>[^/]+))?", "repo_info"),
    (("GET",), rf"/api/{_T}/{_ID}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", "tree"),
    (("GET",), rf"/api/{_T}/{_ID}/refs", "refs"),
    (("POST", "DELETE"), rf"/api/{_T}/{_ID}/branch/(?P<branch>[^/]+)", "branch"),
    (("POST", "DELETE"), rf"/api/{_T}/{_ID}/tag/(?P<rev>[^/]+)", "tag"),
    (("POST",), rf"/api/{_T}/{_ID}/preupload/(?P<rev>[^/]+)", "preupload"),
    (("POST",), rf"/api/{_T}/{_ID}/commit/(?P<rev>[^/]+)", "commit"),
    (("POST",), _GIT + r"/batch", "lfs_batch"),
    (("POST",), _GIT + r"/verify", "lfs_verify"),
    (("PUT",), r"/lfs-upload/(?P<ticket>[A-Za-z0-9_-]+)", "lfs_upload"),
    (
        ("GET", "HEAD"),
        r"/(?:(?P<prefix>datasets|spaces)/)?" + _ID + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)",
        "resolve",
    ),
]
COMPILED_ROUTES = [(methods, re.compile(pattern), name) for methods, pattern, name in ROUTES]


class HubServer:
    """A threaded Hub-compatible server on 127.0.0.1; `url` is valid as soon as it is constructed.

    Args:
        root_dir: where file contents are stored (a test's temporary directory).
        port: the port to bind, 0 for any free one.
        lfs_threshold: files of this many bytes or more are answered `"lfs"` by preupload and must not be sent
            inline in a commit. Tests lower it to exercise the LFS path.
    """

    def __init__(self, root_dir: str | os.PathLike, port: int = 0, lfs_threshold: int = DEFAULT_LFS_THRESHOLD):
        self.objects_dir = Path(root_dir) / "objects"
        self.objects_dir.mkdir(parents=True, exist_ok=True)
        self.lfs_threshold = lfs_threshold
        self.requests: list[tuple[str, str]] = []  # (method, raw path without query), in arrival order
        self.errors: list[str] = []  # tracebacks of server bugs (answered 500); tests expect it empty
        self._tokens: dict[str, Token] = {}
        self._repos: dict[tuple[str, str], Repo] = {}
        self._failures: list[_Failure] = []
        self._uploads: dict[str, tuple[tuple[str, str], str, int]] = {}  # ticket -> (repo key, oid, size)
        self._lock = threading.RLock()
        self._httpd = _HTTPServer(("127.0.0.1", port), _Handler)
        self._httpd.hub = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> HubServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join()

    def add_token(self, token: str, user: str, role: str = "write", orgs: tuple[str, ...] = ()) -> None:
        if role not in ("read", "write"):
            raise ValueError(f"role must be 'read' or 'write', got {role!r}")
        self._tokens[token] = Token(user, role, tuple(orgs))

    def fail_next(self, n: int, status: int = 500, path_contains: str = "", method: str | None = None) -> None:
        """Answer the next `n` requests whose raw path contains `path_contains` (and of `method`) with `status`."""
        with self._lock:
            self._failures.append(_Failure(n, status, path_contains, method))

    @property
    def failures_left(self) -> int:
        return sum(failure.remaining for failure in self._failures)

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()

    # -- dispatch -----------------------------------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Response:
        split = urlsplit(target)
        query = {key: values[-1] for key, values in parse_qs(split.query).items()}
        with self._lock:
            self.requests.append((method, split.path))
            try:
                request = Request(method, split.path, query, headers, body, self._authenticate(headers))
                self._maybe_fail(request)
                return self._route(request)
            except HubError as error:
                return self._error(error)
            except Exception:  # noqa: BLE001 - a server bug must reach the test as a 500, not kill the thread
                self.errors.append(traceback.format_exc())
                return self._error(HubError(500, f"HubServer bug: {traceback.format_exc(limit=1)}"))

    def _authenticate(self, headers: dict[str, str]) -> Token | None:
        authorization = headers.get("authorization")
        if authorization is None:
            return None
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or value not in self._tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        return self._tokens[value]

    def _maybe_fail(self, request: Request) -> None:
        for failure in self._failures:
            if failure.path_contains in request.path and failure.method in (None, request.method):
                failure.remaining -= 1
                if failure.remaining == 0:
                    self._failures.remove(failure)
                raise HubError(failure.status, f"Injected failure ({failure.status})")

    def _route(self, request: Request) -> Response:
        allowed = False
        for methods, regex, name in COMPILED_ROUTES:
            match = regex.fullmatch(request.path)
            if match is None:
                continue
            allowed = True
            if request.method in methods:
                args = {key: unquote(value) for key, value in match.groupdict().items() if value is not None}
                if "ns" in args:  # a repo route: handlers take `repo_type` and `repo_id`
                    args["repo_type"] = REPO_TYPES[args.pop("type", None) or args.pop("prefix", "models")]
                    args["repo_id"] = f"{args.pop('ns')}/{args.pop('name')}"
                return getattr(self, f"_{name}")(request, **args)
        if allowed:
            raise HubError(405, f"Method {request.method} not allowed on {request.path}")
        raise HubError(404, f"No route for {request.method} {request.path} in HubServer")

    @staticmethod
    def _json(data: object, status: int = 200, content_type: str = "application/json") -> Response:
        return Response(status, json.dumps(data).encode(), {"Content-Type": content_type})

    def _error(self, error: HubError) -> Response:
        response = self._json({"error": error.message}, status=error.status)
        response.headers["X-Error-Message"] = error.message.replace("\n", " ").encode("ascii", "replace").decode()
        if error.code is not None:
            response.headers["X-Error-Code"] = error.code
        response.headers.update(error.headers)
        return response

    # -- access control ----------------------------------------------------------------------------------------

    def _readable_repo(self, request: Request, repo_type: str, repo_id: str) -> Repo:
        """The repo, or RepoNotFound when it is missing or private to someone else (the Hub does not tell apart)."""
        repo = self._repos.get((repo_type, repo_id))
        token = request.token
        if repo is None or (repo.private and (token is None or repo.namespace not in token.namespaces)):
            status = 401 if token is None else 404
            raise HubError(status, f"Repository not found: {repo_type} {repo_id}", "RepoNotFound")
        return repo

    def _writable_repo(self, request: Request, repo_type: str, repo_id: str) -> Repo:
        repo = self._readable_repo(request, repo_type, repo_id)
        self._check_write(request.token, repo.namespace)
        return repo

    @staticmethod
    def _check_write(token: Token | None, namespace: str) -> None:
        if token is None:
            raise HubError(401, "You must be authenticated to write to the Hub")
        if token.role != "write":
            raise HubError(403, f"Token of {token.user} is a read token: write access is needed")
        if namespace not in token.namespaces:
            raise HubError(403, f"{token.user} has no write access to the namespace {namespace!r}")

    @staticmethod
    def _repo_url_path(repo: Repo) -> str:
        return URL_PREFIXES[repo.type] + repo.id

    # -- storage -------------------------------------------------------------------------------------------------

    def _blob_path(self, sha256: str) -> Path:
        return self.objects_dir / sha256[:2] / sha256[2:]

    def _store(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        path = self._blob_path(sha256)
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
                tmp.write(data)
            os.replace(tmp.name, path)
        return sha256

    def _new_commit(self, repo: Repo, parent: str | None, files: dict[str, Entry], title: str) -> Commit:
        seed = json.dumps([repo.id, parent, title, sorted((p, e.sha256) for p, e in files.items()), time.time_ns()])
        oid = hashlib.sha1(f"{seed}{len(repo.commits)}".encode()).hexdigest()
        commit = Commit(oid, parent, files, title, datetime.now(UTC))
        repo.commits[oid] = commit
        return commit

    def _regular_entry(self, data: bytes) -> Entry:
        return Entry(len(data), self._store(data), git_blob_sha1(data), lfs=False)

    def _is_lfs_size(self, size: int) -> bool:
        return size > 0 and size >= self.lfs_threshold

    # -- account and repos -------------------------------------------------------------------------------------

    def _whoami(self, request: Request) -> Response:
        token = request.token
        if token is None:
            raise HubError(401, "Invalid user token")
        access_token = {"displayName": f"{token.user}-{token.role}", "role": token.role}
        orgs = [{"name": org, "type": "org"} for org in token.orgs]
        auth = {"type": "access_token", "accessToken": access_token}
        return self._json({"type": "user", "name": token.user, "fullname": token.user, "orgs": orgs, "auth": auth})

    def _agent_harnesses(self, request: Request) -> Response:
        return self._json({"standardEnvVars": [], "harnesses": {}})

    def _validate_yaml(self, request: Request) -> Response:
        request.json()
        return self._json({"errors": [], "warnings": []})

    def _repo_request(self, request: Request) -> tuple[str, str, Token]:
        """Type, id and token of a create/delete request body."""
        if request.token is None:
            raise HubError(401, "You must be authenticated to create or delete a repo")
        body = request.json()
        name, repo_type = body.get("name"), body.get("type") or "model"
        if not isinstance(name, str) or NAME_REGEX.fullmatch(name) is None or name.endswith(".git"):
            raise HubError(400, f"Invalid repo name: {name!r}")
        if repo_type not in URL_PREFIXES:
            raise HubError(400, f"Invalid repo type {repo_type!r}, expected one of {sorted(URL_PREFIXES)}")
        namespace = body.get("organization") or request.token.user
        return repo_type, f"{namespace}/{name}", request.token

    def _create_repo(self, request: Request) -> Response:
        repo_type, repo_id, token = self._repo_request(request)
        self._check_write(token, repo_id.split("/")[0])
        body = request.json()
        visibility = body.get("visibility", "private" if body.get("private") else "public")
        if visibility not in ("private", "public"):
            raise HubError(400, f"Invalid visibility {visibility!r}, expected 'private' or 'public'")
        url = f"{self.url}/{URL_PREFIXES[repo_type]}{repo_id}"
        if (repo_type, repo_id) in self._repos:
            return self._json({"error": f"You already created this {repo_type} repo", "url": url}, status=409)
        repo = Repo(repo_type, repo_id, visibility == "private")
        files = {".gitattributes": self._regular_entry(INITIAL_GITATTRIBUTES)}
        repo.branches["main"] = self._new_commit(repo, None, files, "initial commit").oid
        self._repos[(repo_type, repo_id)] = repo
        return self._json({"url": url, "name": repo_id, "id": repo_id})

    def _delete_repo(self, request: Request) -> Response:
        repo_type, repo_id, _ = self._repo_request(request)
        repo = self._writable_repo(request, repo_type, repo_id)
        del self._repos[(repo.type, repo.id)]
        return Response(200)

    def _repo_info(self, request: Request, repo_type: str, repo_id: str, rev: str = "main") -> Response:
        repo = self._readable_repo(request, repo_type, repo_id)
        commit = repo.resolve(rev)
        siblings = [self._sibling(path, entry, request.flag("blobs")) for path, entry in sorted(commit.files.items())]
        info = {"id": repo.id, "author": repo.namespace, "sha": commit.oid, "private": repo.private}
        info.update(gated=False, disabled=False, lastModified=hub_date(commit.date), siblings=siblings)
        return self._json(info)

    @staticmethod
    def _sibling(path: str, entry: Entry, blobs: bool) -> dict:
        sibling: dict = {"rfilename": path}
        if blobs:
            sibling.update(size=entry.size, blobId=entry.blob_id)
            if entry.lfs:
                pointer_size = len(lfs_pointer(entry.sha256, entry.size))
                sibling["lfs"] = {"size": entry.size, "sha256": entry.sha256, "pointerSize": pointer_size}
        return sibling

    def _tree(self, request: Request, repo_type: str, repo_id: str, rev: str, path: str = "") -> Response:
        repo = self._readable_repo(request, repo_type, repo_id)
        commit = repo.resolve(rev)
        base = path.strip("/")
        prefix = f"{base}/" if base else ""
        files = {p: e for p, e in commit.files.items() if p.startswith(prefix)}
        if base and not files:
            raise HubError(404, f"Folder {base!r} not found at {rev}", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        folders = {"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)}
        folders = {f for f in folders if f.startswith(prefix)}
        if not request.flag("recursive"):
            files = {p: e for p, e in files.items() if "/" not in p[len(prefix) :]}
            folders = {f for f in folders if "/" not in f[len(prefix) :]}
        items = [self._tree_folder(folder, commit) for folder in folders]
        items += [self._tree_file(file, entry) for file, entry in files.items()]
        return self._json(sorted(items, key=lambda item: item["path"]))

    @staticmethod
    def _tree_folder(folder: str, commit: Commit) -> dict:
        listing = sorted((p, e.blob_id) for p, e in commit.files.items() if p.startswith(f"{folder}/"))
        return {"type": "directory", "path": folder, "oid": hashlib.sha1(json.dumps(listing).encode()).hexdigest()}

    @staticmethod
    def _tree_file(path: str, entry: Entry) -> dict:
        item = {"type": "file", "path": path, "size": entry.size, "oid": entry.blob_id}
        if entry.lfs:
            item["lfs"] = {
                "oid": entry.sha256,
                "size": entry.size,
                "pointerSize": len(lfs_pointer(entry.sha256, entry.size)),
            }
        return item

    # -- refs ----------------------------------------------------------------------------------------------------

    def _refs(self, request: Request, repo_type: str, repo_id: str) -> Response:
        repo = self._readable_repo(request, repo_type, repo_id)

        def refs(names: dict[str, str], kind: str) -> list[dict]:
            return [{"name": n, "ref": f"refs/{kind}/{n}", "targetCommit": oid} for n, oid in sorted(names.items())]

        branches, tags = refs(repo.branches, "heads"), refs(repo.tags, "tags")
        return self._json({"branches": branches, "tags": tags, "converts": [], "pullRequests": []})

    def _branch(self, request: Request, repo_type: str, repo_id: str, branch: str) -> Response:
        repo = self._writable_repo(request, repo_type, repo_id)
        if request.method == "DELETE":
            if branch == "main":
                raise HubError(403, "The default branch 'main' cannot be deleted")
            if repo.branches.pop(branch, None) is None:
                raise HubError(404, f"Branch not found: {branch!r}", "RevisionNotFound")
            return Response(200)
        if BRANCH_REGEX.fullmatch(branch) is None or branch.startswith("refs/") or ".." in branch:
            raise HubError(400, f"Invalid branch name: {branch!r}")
        if branch in repo.branches:
            raise HubError(409, f"Reference already exists: refs/heads/{branch}")
        repo.branches[branch] = repo.resolve(request.json().get("startingPoint") or "main").oid
        return Response(200)

    def _tag(self, request: Request, repo_type: str, repo_id: str, rev: str) -> Response:
        repo = self._writable_repo(request, repo_type, repo_id)
        if request.method == "DELETE":  # here `rev` is the tag name
            if repo.tags.pop(rev, None) is None:
                raise HubError(404, f"Tag not found: {rev!r}", "RevisionNotFound")
            return Response(200)
        tag = request.json().get("tag")
        if not isinstance(tag, str) or BRANCH_REGEX.fullmatch(tag) is None:
            raise HubError(400, f"Invalid tag name: {tag!r}")
        commit = repo.resolve(rev)
        if tag in repo.tags:
            raise HubError(409, f"Reference already exists: refs/tags/{tag}")
        repo.tags[tag] = commit.oid
        return Response(200)

    # -- uploads ---------------------------------------------------------------------------------------------------

    def _branch_head(self, repo: Repo, request: Request, rev: str) -> Commit:
        """The head commit of the branch `rev`, which a write targets."""
        if request.flag("create_pr"):
            raise HubError(400, "Pull requests are not supported by HubServer")
        commit = repo.resolve(rev)
        if rev not in repo.branches:
            raise HubError(400, f"Invalid rev id: {rev!r} is not a branch; only branches can be committed to")
        return commit

    def _preupload(self, request: Request, repo_type: str, repo_id: str, rev: str) -> Response:
        repo = self._writable_repo(request, repo_type, repo_id)
        head = self._branch_head(repo, request, rev)
        answers = []
        for item in request.json().get("files", []):
            path, size = check_path(item.get("path")), item.get("size")
            if not isinstance(size, int) or size < 0:
                raise HubError(400, f"Invalid size {size!r} for {path}")
            lfs = self._is_lfs_size(size)
            answer = {"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False}
            if path in head.files:  # the client skips a file whose oid equals the local one
                answer["oid"] = head.files[path].sha256 if lfs else head.files[path].content_sha1
            answers.append(answer)
        return self._json({"files": answers, "commitOid": head.oid})

    def _lfs_batch(self, request: Request, repo_type: str, repo_id: str) -> Response:
        repo = self._writable_repo(request, repo_type, repo_id)
        body = request.json()
        if body.get("operation") != "upload":
            raise HubError(400, "Only the LFS 'upload' operation is supported by HubServer")
        objects = []
        for obj in body.get("objects", []):
            oid, size = obj.get("oid"), obj.get("size")
            if not isinstance(oid, str) or re.fullmatch(r"[0-9a-f]{64}", oid) is None or not isinstance(size, int):
                raise HubError(422, f"Invalid LFS object: {obj!r}")
            answer: dict = {"oid": oid, "size": size}
            if oid not in repo.lfs_oids:  # an object already in the repo needs no upload: no `actions`
                ticket = secrets.token_urlsafe(32)  # the upload URL is its own authorisation, like a signed S3 URL
                self._uploads[ticket] = ((repo.type, repo.id), oid, size)
                verify = f"{self.url}/{self._repo_url_path(repo)}.git/info/lfs/objects/verify"
                answer["authenticated"] = True
                answer["actions"] = {
                    "upload": {"href": f"{self.url}/lfs-upload/{ticket}", "header": {}},
                    "verify": {"href": verify, "header": {}},
                }
            objects.append(answer)
        return self._json({"transfer": "basic", "objects": objects}, content_type="application/vnd.git-lfs+json")

    def _lfs_upload(self, request: Request, ticket: str) -> Response:
        if "authorization" in request.headers:  # S3 rejects a signed URL that also carries a header auth
            raise HubError(400, "Only one auth mechanism allowed: the upload URL is already signed")
        if ticket not in self._uploads:
            raise HubError(403, "SignatureDoesNotMatch: unknown or expired upload URL")
        repo_key, oid, size = self._uploads[ticket]
        if len(request.body) != size or hashlib.sha256(request.body).hexdigest() != oid:
            raise HubError(400, f"Uploaded content does not match oid {oid} and size {size}")
        self._store(request.body)
        del self._uploads[ticket]
        if repo_key in self._repos:
            self._repos[repo_key].lfs_oids.add(oid)
        return Response(200, headers={"ETag": f'"{hashlib.md5(request.body).hexdigest()}"'})

    def _lfs_verify(self, request: Request, repo_type: str, repo_id: str) -> Response:
        repo = self._writable_repo(request, repo_type, repo_id)
        body = request.json()
        oid = body.get("oid")
        if oid not in repo.lfs_oids or self._blob_path(oid).stat().st_size != body.get("size"):
            raise HubError(404, f"LFS object {oid} of size {body.get('size')} was not uploaded to {repo.id}")
        return self._json({"success": True})

    def _commit(self, request: Request, repo_type: str, repo_id: str, rev: str) -> Response:
        repo = self._writable_repo(request, repo_type, repo_id)
        head = self._branch_head(repo, request, rev)
        try:
            lines = [json.loads(line) for line in request.body.splitlines() if line.strip()]
        except ValueError as error:
            raise HubError(400, f"Commit body is not valid ndjson: {error}") from None
        if not lines or lines[0].get("key") != "header" or not lines[0].get("value", {}).get("summary"):
            raise HubError(400, "A commit starts with a 'header' line that has a non-empty 'summary'")
        header = lines[0]["value"]
        if header.get("parentCommit") not in (None, head.oid):
            raise HubError(412, f"A commit has happened since {header['parentCommit']}; {rev} is at {head.oid}")
        files = dict(head.files)
        for line in lines[1:]:
            self._apply_operation(repo, files, line.get("key"), line.get("value") or {}, head)
        commit = self._new_commit(repo, head.oid, files, header["summary"])
        repo.branches[rev] = commit.oid
        commit_url = f"{self.url}/{self._repo_url_path(repo)}/commit/{commit.oid}"
        return self._json({"success": True, "commitOid": commit.oid, "commitUrl": commit_url, "pullRequestUrl": None})

    def _apply_operation(self, repo: Repo, files: dict[str, Entry], key: str, value: dict, head: Commit) -> None:
        path = check_path(value.get("path", "").rstrip("/") if key == "deletedFolder" else value.get("path"))
        missing = HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
        missing.headers["X-Repo-Commit"] = head.oid
        if key == "file":
            if value.get("encoding") != "base64":
                raise HubError(400, f"Unsupported encoding {value.get('encoding')!r} for {path}: expected 'base64'")
            try:
                data = base64.b64decode(value.get("content", ""), validate=True)
            except ValueError:
                raise HubError(400, f"Content of {path} is not valid base64") from None
            if self._is_lfs_size(len(data)):
                raise HubError(400, f"{path} is {len(data)} bytes: files of {self.lfs_threshold}+ bytes must use LFS")
            files[path] = self._regular_entry(data)
        elif key == "lfsFile":
            oid = value.get("oid")
            if oid not in repo.lfs_oids:
                raise HubError(400, f"LFS object {oid} for {path} was not uploaded to {repo.id}")
            data = self._blob_path(oid).read_bytes()
            if value.get("size", len(data)) != len(data):
                raise HubError(400, f"LFS object {oid} has size {len(data)}, not {value.get('size')}")
            files[path] = Entry(len(data), oid, git_blob_sha1(data), lfs=True)
        elif key == "deletedFile":
            if files.pop(path, None) is None:
                raise missing
        elif key == "deletedFolder":
            inside = [p for p in files if p.startswith(f"{path}/")]
            if not inside:
                raise missing
            for p in inside:
                del files[p]
        else:
            raise HubError(400, f"Unknown commit operation {key!r}")

    # -- downloads -----------------------------------------------------------------------------------------------

    def _resolve(self, request: Request, repo_type: str, repo_id: str, rev: str, path: str) -> Response:
        repo = self._readable_repo(request, repo_type, repo_id)
        commit = repo.resolve(rev)
        headers = {"X-Repo-Commit": commit.oid}
        entry = commit.files.get(path)
        if entry is None:
            raise HubError(404, f"Entry not found: {path} at {rev}", "EntryNotFound", headers)
        data = self._blob_path(entry.sha256).read_bytes()
        headers.update({"ETag": f'"{entry.etag}"', "Content-Type": "application/octet-stream"})
        return Response(200, data, headers)  # a Range header is ignored: the client then restarts from byte 0


def check_path(path: object) -> str:
    """A path in a repo: relative, no empty, `.` or `..` segment, not inside `.git`."""
    parts = path.split("/") if isinstance(path, str) else [""]
    if any(part in ("", ".", "..") for part in parts) or parts[0] == ".git":
        raise HubError(400, f"Invalid path in repo: {path!r}")
    return path


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    hub: HubServer

    def handle_error(self, request, client_address) -> None:
        pass  # a client closing its keep-alive connection is not an error; server bugs are in `hub.errors`


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    server: _HTTPServer

    def _dispatch(self) -> None:
        headers = {key.lower(): value for key, value in self.headers.items()}
        response = self.server.hub.handle(self.command, self.path, headers, self._read_body(headers))
        self.send_response(response.status)
        for key, value in response.headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def _read_body(self, headers: dict[str, str]) -> bytes:
        """The whole body, always read, so that the next request on a keep-alive connection starts clean."""
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        return self.rfile.read(int(headers.get("content-length", 0)))

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch

    def log_message(self, format: str, *args) -> None:
        pass  # the request log is `HubServer.requests`
