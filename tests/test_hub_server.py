"""The loopback Hub (tests/hub_server.py) against the real huggingface_hub client.

Every other Hub test of the suite trusts this server, so these tests pin the protocol behaviour the client depends
on: uploads (inline and LFS) round-trip byte for byte, errors map to the client's exception types, private repos
stay private, write permissions are enforced, revisions resolve, and injected transient failures are retried.
"""

import base64
import hashlib
import json
import os
import socket
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import huggingface_hub.constants
import pytest
from hub_server import HubServer, git_blob_sha1
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

ALICE, ALICE_READ, BOB = "hf_alice_write", "hf_alice_read", "hf_bob_write"
LFS_THRESHOLD = 2048  # lowered by the LFS tests so that a few-kB file takes the LFS path

# A small folder: nested paths, a binary file, an empty file.
FOLDER = {
    "README.md": b"---\nlicense: mit\n---\n# test model\n",
    "config.json": json.dumps({"sample_size": 8}).encode(),
    "unet/diffusion_pytorch_model.bin": bytes(range(256)) * 4,
    "scheduler/scheduler_config.json": b'{"num_train_timesteps": 10}',
    "empty.txt": b"",
}
BIG = {"weights.bin": os.urandom(5000)}  # above LFS_THRESHOLD


@pytest.fixture
def repo_id(hub_server: HubServer) -> str:
    return f"alice/test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def lfs(hub_server: HubServer, monkeypatch: pytest.MonkeyPatch) -> HubServer:
    monkeypatch.setattr(hub_server, "lfs_threshold", LFS_THRESHOLD)
    return hub_server


def write_folder(root: Path, files: dict[str, bytes]) -> Path:
    for path, data in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    return root


def upload(tmp_path: Path, repo_id: str, files: dict[str, bytes], token: str = ALICE, **kwargs) -> str:
    folder = write_folder(tmp_path / f"upload-{uuid.uuid4().hex[:6]}", files)
    return HfApi(token=token).upload_folder(folder_path=folder, repo_id=repo_id, **kwargs).oid


def requests_for(server: HubServer, repo_id: str, since: int = 0) -> list[tuple[str, str]]:
    """The logged requests about `repo_id` (LFS PUTs carry no repo name: they are kept too)."""
    return [(m, p) for m, p in server.requests[since:] if repo_id in p or p.startswith("/lfs-upload/")]


def raw_request(url: str, method: str = "GET", data: bytes | None = None, token: str | None = None) -> tuple:
    """(status, headers, body) of a request made outside the client, to check what the client does not expose."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data, headers, method=method)) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_environment_points_the_client_at_the_server(hub_server: HubServer) -> None:
    assert huggingface_hub.constants.ENDPOINT == hub_server.url
    assert huggingface_hub.constants.HF_HUB_DISABLE_XET
    whoami = HfApi(token=ALICE).whoami()
    assert whoami["name"] == "alice" and whoami["auth"]["accessToken"]["role"] == "write"
    assert HfApi(token=ALICE_READ).whoami()["auth"]["accessToken"]["role"] == "read"
    with pytest.raises(HfHubHTTPError) as error:
        HfApi(token="hf_not_a_token").whoami()
    assert error.value.response.status_code == 401


def test_inline_upload_round_trip(hub_server: HubServer, repo_id: str, tmp_path: Path, hub_cache: Path) -> None:
    api = HfApi(token=ALICE)
    assert api.create_repo(repo_id) == f"{hub_server.url}/{repo_id}"
    since = len(hub_server.requests)
    sha = upload(tmp_path, repo_id, FOLDER)

    assert len(sha) == 40 and api.repo_info(repo_id).sha == sha
    assert sorted(api.list_repo_files(repo_id)) == sorted([".gitattributes", *FOLDER])
    assert not [p for _, p in requests_for(hub_server, repo_id, since) if "lfs" in p]  # all inline
    siblings = {s.rfilename: s for s in api.model_info(repo_id, files_metadata=True).siblings}
    for path, data in FOLDER.items():
        assert siblings[path].size == len(data) and siblings[path].blob_id == git_blob_sha1(data)
        assert siblings[path].lfs is None
    tree = {item.path: item for item in api.list_repo_tree(repo_id, recursive=True)}
    assert {"unet", "scheduler"} <= set(tree) and tree["config.json"].size == len(FOLDER["config.json"])
    assert [item.path for item in api.list_repo_tree(repo_id, "unet")] == ["unet/diffusion_pytorch_model.bin"]

    for path, data in FOLDER.items():
        assert Path(hf_hub_download(repo_id, path, cache_dir=hub_cache)).read_bytes() == data
    snapshot = Path(snapshot_download(repo_id, cache_dir=hub_cache / "snapshot"))
    assert snapshot.name == sha
    for path, data in FOLDER.items():
        assert (snapshot / path).read_bytes() == data
    # The cache names a regular blob by its git sha1, the ETag the server sent.
    config_blob = hub_cache / f"models--{repo_id.replace('/', '--')}" / "blobs" / git_blob_sha1(FOLDER["config.json"])
    assert config_blob.read_bytes() == FOLDER["config.json"]


def test_dataset_repo_round_trip(hub_server: HubServer, repo_id: str, tmp_path: Path, hub_cache: Path) -> None:
    api = HfApi(token=ALICE)
    assert api.create_repo(repo_id, repo_type="dataset") == f"{hub_server.url}/datasets/{repo_id}"
    upload(tmp_path, repo_id, {"data/train.csv": b"x,y\n1,2\n"}, repo_type="dataset")
    path = hf_hub_download(repo_id, "data/train.csv", repo_type="dataset", cache_dir=hub_cache)
    assert Path(path).read_bytes() == b"x,y\n1,2\n"
    with pytest.raises(RepositoryNotFoundError):  # same name, but not a model repo
        api.model_info(repo_id)


def test_lfs_upload_round_trip(lfs: HubServer, repo_id: str, tmp_path: Path, hub_cache: Path) -> None:
    api = HfApi(token=ALICE)
    api.create_repo(repo_id)
    since = len(lfs.requests)
    upload(tmp_path, repo_id, {**FOLDER, **BIG})

    methods = [(m, p.rsplit("/", 1)[-1]) for m, p in requests_for(lfs, repo_id, since)]
    assert ("POST", "batch") in methods and ("POST", "verify") in methods
    assert [m for m, p in requests_for(lfs, repo_id, since) if p.startswith("/lfs-upload/")] == ["PUT"]
    sha256 = hashlib.sha256(BIG["weights.bin"]).hexdigest()
    info = {s.rfilename: s for s in api.model_info(repo_id, files_metadata=True).siblings}
    assert info["weights.bin"].lfs.sha256 == sha256 and info["weights.bin"].lfs.size == 5000
    assert info["config.json"].lfs is None

    downloaded = hf_hub_download(repo_id, "weights.bin", cache_dir=hub_cache)
    assert Path(downloaded).read_bytes() == BIG["weights.bin"]
    assert Path(downloaded).resolve().name == sha256  # an LFS blob is cached under its sha256 ETag


def test_lfs_upload_url_is_signed_and_content_checked(lfs: HubServer, repo_id: str, tmp_path: Path) -> None:
    status, _, body = raw_request(f"{lfs.url}/lfs-upload/guessed-signature", method="PUT")
    assert status == 403 and b"SignatureDoesNotMatch" in body
    HfApi(token=ALICE).create_repo(repo_id)
    # A commit line pointing at an LFS object that was never uploaded (the client never sends one) is refused.
    oid = hashlib.sha256(BIG["weights.bin"]).hexdigest()
    lines = [
        {"key": "header", "value": {"summary": "no upload", "description": ""}},
        {"key": "lfsFile", "value": {"path": "weights.bin", "algo": "sha256", "oid": oid, "size": 5000}},
    ]
    ndjson = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    status, headers, _ = raw_request(f"{lfs.url}/api/models/{repo_id}/commit/main", "POST", ndjson, token=ALICE)
    assert status == 400 and "was not uploaded" in headers["X-Error-Message"]
    # Inline content at or above the LFS threshold is refused too: it must go through LFS.
    content = base64.b64encode(BIG["weights.bin"]).decode()
    lines[1] = {"key": "file", "value": {"path": "weights.bin", "content": content, "encoding": "base64"}}
    ndjson = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    status, headers, _ = raw_request(f"{lfs.url}/api/models/{repo_id}/commit/main", "POST", ndjson, token=ALICE)
    assert status == 400 and "must use LFS" in headers["X-Error-Message"]
    assert HfApi().list_repo_files(repo_id) == [".gitattributes"]


def test_reupload_sends_no_new_lfs_object(lfs: HubServer, repo_id: str, tmp_path: Path, hub_cache: Path) -> None:
    api = HfApi(token=ALICE)
    api.create_repo(repo_id)
    first = upload(tmp_path, repo_id, {**FOLDER, **BIG})

    # Unchanged folder: preupload returns the remote oids, the client drops every file and makes no commit. It still
    # asks the LFS batch endpoint about the LFS file, which answers "already stored" (no `actions`): nothing is PUT.
    since = len(lfs.requests)
    assert upload(tmp_path, repo_id, {**FOLDER, **BIG}) == first
    assert not [p for _, p in requests_for(lfs, repo_id, since) if "/commit/" in p or p.startswith("/lfs-upload/")]

    # One small file changed: a new commit, and the unchanged LFS file is not uploaded again.
    since = len(lfs.requests)
    second = upload(tmp_path, repo_id, {**FOLDER, **BIG, "config.json": b'{"sample_size": 16}'})
    assert second != first and HfApi().repo_info(repo_id).sha == second
    logged = [p for _, p in requests_for(lfs, repo_id, since)]
    assert f"/api/models/{repo_id}/commit/main" in logged
    assert not [p for p in logged if p.startswith("/lfs-upload/") or p.endswith("/verify")]

    # The same LFS content under a new path: committed as an `lfsFile` line that points at the stored object.
    since = len(lfs.requests)
    upload(tmp_path, repo_id, {"copy/weights.bin": BIG["weights.bin"]})
    assert not [p for _, p in requests_for(lfs, repo_id, since) if p.startswith("/lfs-upload/")]
    path = hf_hub_download(repo_id, "copy/weights.bin", cache_dir=hub_cache)
    assert Path(path).read_bytes() == BIG["weights.bin"]


def test_private_repo_is_invisible_without_access(repo_id: str, tmp_path: Path, hub_cache: Path) -> None:
    api = HfApi(token=ALICE)
    api.create_repo(repo_id, private=True)
    upload(tmp_path, repo_id, {"config.json": b"{}"})
    assert api.repo_info(repo_id).private

    for token in (False, BOB):
        with pytest.raises(RepositoryNotFoundError):
            HfApi(token=token).model_info(repo_id)
        with pytest.raises(RepositoryNotFoundError):
            hf_hub_download(repo_id, "config.json", token=token, cache_dir=hub_cache)
        with pytest.raises(RepositoryNotFoundError):
            api.list_repo_files(repo_id, token=token)
    path = hf_hub_download(repo_id, "config.json", token=ALICE_READ, cache_dir=hub_cache)
    assert Path(path).read_bytes() == b"{}"
    assert not HfApi(token=False).repo_exists(repo_id) and HfApi(token=ALICE_READ).repo_exists(repo_id)


def test_writes_need_a_write_token_for_the_namespace(repo_id: str, tmp_path: Path) -> None:
    with pytest.raises(HfHubHTTPError) as error:
        HfApi(token=False).create_repo(repo_id)
    assert error.value.response.status_code == 401
    for token, target in ((ALICE_READ, repo_id), (BOB, repo_id), (ALICE, "bob/not-yours")):
        with pytest.raises(HfHubHTTPError) as error:
            HfApi(token=token).create_repo(target)
        assert error.value.response.status_code == 403, token

    HfApi(token=ALICE).create_repo(repo_id)  # public: everyone can read it, only alice can write
    with pytest.raises(HfHubHTTPError) as error:
        HfApi(token=ALICE).create_repo(repo_id)
    assert error.value.response.status_code == 409
    assert HfApi(token=ALICE).create_repo(repo_id, exist_ok=True).repo_id == repo_id
    for token, status in ((False, 401), (ALICE_READ, 403), (BOB, 403)):
        with pytest.raises(HfHubHTTPError) as error:
            upload(tmp_path, repo_id, {"config.json": b"{}"}, token=token)
        assert error.value.response.status_code == status, token
    assert HfApi(token=False).list_repo_files(repo_id) == [".gitattributes"]


def test_missing_file_revision_and_repo(repo_id: str, tmp_path: Path, hub_cache: Path) -> None:
    HfApi(token=ALICE).create_repo(repo_id)
    upload(tmp_path, repo_id, {"config.json": b"{}"})
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo_id, "missing.json", cache_dir=hub_cache)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo_id, "config.json", revision="no-such-branch", cache_dir=hub_cache)
    with pytest.raises(RevisionNotFoundError):
        HfApi().model_info(repo_id, revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        snapshot_download(repo_id, revision="no-such-branch", cache_dir=hub_cache)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("alice/does-not-exist", "config.json", cache_dir=hub_cache)
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token=ALICE).delete_repo("alice/does-not-exist")


def test_branches_tags_and_revisions(hub_server: HubServer, repo_id: str, tmp_path: Path, hub_cache: Path) -> None:
    api = HfApi(token=ALICE)
    api.create_repo(repo_id)
    main_sha = upload(tmp_path, repo_id, {"config.json": b"main"})
    api.create_branch(repo_id, branch="feature/x")  # a slash: the client percent-encodes it as feature%2Fx
    api.create_tag(repo_id, tag="v1")
    branch_sha = upload(tmp_path, repo_id, {"config.json": b"branch"}, revision="feature/x")

    def read(revision: str) -> bytes:
        return Path(hf_hub_download(repo_id, "config.json", revision=revision, cache_dir=hub_cache)).read_bytes()

    assert (read("main"), read("feature/x"), read("v1"), read(main_sha)) == (b"main", b"branch", b"main", b"main")
    assert any("/resolve/feature%2Fx/" in p for _, p in hub_server.requests)
    refs = api.list_repo_refs(repo_id)
    assert {b.name: b.target_commit for b in refs.branches} == {"main": main_sha, "feature/x": branch_sha}
    assert [(t.name, t.target_commit) for t in refs.tags] == [("v1", main_sha)]
    snapshot = Path(snapshot_download(repo_id, revision="feature/x", cache_dir=hub_cache / "snapshot"))
    assert snapshot.name == branch_sha and (snapshot / "config.json").read_bytes() == b"branch"

    with pytest.raises(HfHubHTTPError) as error:
        api.create_branch(repo_id, branch="feature/x")
    assert error.value.response.status_code == 409
    api.delete_branch(repo_id, branch="feature/x")
    api.delete_tag(repo_id, tag="v1")
    with pytest.raises(RevisionNotFoundError):
        api.model_info(repo_id, revision="feature/x")
    assert read(branch_sha) == b"branch"  # commits outlive their branch


def test_delete_operations_and_parent_commit(repo_id: str, tmp_path: Path) -> None:
    api = HfApi(token=ALICE)
    api.create_repo(repo_id)
    sha = upload(tmp_path, repo_id, FOLDER)
    deletions = [CommitOperationDelete("config.json"), CommitOperationDelete("unet/")]
    api.create_commit(repo_id, deletions, commit_message="delete", parent_commit=sha)
    remaining = set(api.list_repo_files(repo_id))
    assert remaining == {".gitattributes", "README.md", "scheduler/scheduler_config.json", "empty.txt"}
    with pytest.raises(HfHubHTTPError) as error:  # the branch moved on since `sha`
        api.create_commit(repo_id, [CommitOperationAdd("a.txt", b"a")], commit_message="stale", parent_commit=sha)
    assert error.value.response.status_code == 412
    with pytest.raises(EntryNotFoundError):
        api.create_commit(repo_id, [CommitOperationDelete("config.json")], commit_message="again")


@pytest.mark.slow
def test_injected_failures_are_retried(hub_server: HubServer, repo_id: str, tmp_path: Path) -> None:
    api = HfApi(token=ALICE)
    api.create_repo(repo_id)
    hub_server.fail_next(2, status=500, path_contains=f"/{repo_id}/preupload/")
    since = len(hub_server.requests)
    sha = upload(tmp_path, repo_id, {"config.json": b"{}"})
    preuploads = [p for _, p in requests_for(hub_server, repo_id, since) if "/preupload/" in p]
    assert len(preuploads) == 3 and hub_server.failures_left == 0
    assert api.repo_info(repo_id).sha == sha


@pytest.mark.slow
def test_commit_is_retried_by_the_pipelined_upload(
    hub_server: HubServer, repo_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With Xet enabled (all files small, so all "regular": Xet is never contacted), upload_folder goes through
    # the pipelined upload, whose commit POST is retried. create_commit's commit POST is not (next test).
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", False)
    HfApi(token=ALICE).create_repo(repo_id)
    hub_server.fail_next(2, status=500, path_contains=f"/{repo_id}/commit/")
    since = len(hub_server.requests)
    sha = upload(tmp_path, repo_id, {"config.json": b"{}"})
    commits = [p for _, p in requests_for(hub_server, repo_id, since) if "/commit/" in p]
    assert len(commits) == 3 and hub_server.failures_left == 0
    assert HfApi().repo_info(repo_id).sha == sha


def test_commit_is_not_retried_by_create_commit(hub_server: HubServer, repo_id: str) -> None:
    api = HfApi(token=ALICE)
    api.create_repo(repo_id)
    hub_server.fail_next(1, status=500, path_contains=f"/{repo_id}/commit/")
    operations = [CommitOperationAdd("a.txt", b"a")]
    with pytest.raises(HfHubHTTPError) as error:
        api.create_commit(repo_id, operations, commit_message="first try")
    assert error.value.response.status_code == 500
    api.create_commit(repo_id, [CommitOperationAdd("a.txt", b"a")], commit_message="second try")
    assert "a.txt" in api.list_repo_files(repo_id)


def test_resolve_headers(lfs: HubServer, repo_id: str, tmp_path: Path) -> None:
    HfApi(token=ALICE).create_repo(repo_id)
    sha = upload(tmp_path, repo_id, {"config.json": b"{}", **BIG})
    expected = {"config.json": git_blob_sha1(b"{}"), "weights.bin": hashlib.sha256(BIG["weights.bin"]).hexdigest()}
    for path, etag in expected.items():
        status, headers, body = raw_request(f"{lfs.url}/{repo_id}/resolve/main/{path}")
        assert status == 200 and headers["X-Repo-Commit"] == sha and headers["ETag"] == f'"{etag}"'
        assert int(headers["Content-Length"]) == len(body) and "Content-Encoding" not in headers
        assert "X-Xet-Hash" not in headers
    status, headers, _ = raw_request(f"{lfs.url}/{repo_id}/resolve/main/missing", method="HEAD")
    assert (status, headers["X-Error-Code"], headers["X-Repo-Commit"]) == (404, "EntryNotFound", sha)
    tree = json.loads(raw_request(f"{lfs.url}/api/models/{repo_id}/tree/main?recursive=true")[2])
    assert all("xetHash" not in item for item in tree)


def test_server_is_concurrent(hub_server: HubServer) -> None:
    """An idle keep-alive connection must not block other clients (snapshot_download uses 8 threads)."""
    with socket.create_connection(("127.0.0.1", int(hub_server.url.rsplit(":", 1)[1]))) as idle:
        idle.sendall(b"GET /api/agent-harnesses HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        request = urllib.request.Request(f"{hub_server.url}/api/agent-harnesses")
        with urllib.request.urlopen(request, timeout=5) as response:
            assert json.loads(response.read()) == {"standardEnvVars": [], "harnesses": {}}


def test_org_tokens_and_a_private_server_instance(tmp_path: Path, hub_cache: Path) -> None:
    server = HubServer(tmp_path / "hub", port=0, lfs_threshold=100).start()
    try:
        server.add_token("hf_carol", "carol", orgs=("lab",))
        api = HfApi(endpoint=server.url, token="hf_carol")
        assert [org["name"] for org in api.whoami()["orgs"]] == ["lab"]
        api.create_repo("lab/shared", private=True)
        api.upload_file(path_or_fileobj=b"x" * 500, path_in_repo="big.bin", repo_id="lab/shared")
        assert ("POST", "/lab/shared.git/info/lfs/objects/batch") in server.requests
        path = hf_hub_download("lab/shared", "big.bin", endpoint=server.url, token="hf_carol", cache_dir=hub_cache)
        assert Path(path).read_bytes() == b"x" * 500
        with pytest.raises(HfHubHTTPError) as error:
            api.create_repo("someone-else/repo")
        assert error.value.response.status_code == 403
    finally:
        server.stop()
    assert not server.errors
