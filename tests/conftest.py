"""Test configuration shared by the whole suite: a loopback Hugging Face Hub, and the fixtures several test files use.

`huggingface_hub` reads HF_ENDPOINT, HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE and HF_HUB_DISABLE_XET once, when
`huggingface_hub.constants` is first imported (`import diffusers` does it). So they are set here, at import time,
before any test module is collected, with the server's port chosen in advance; the session fixture `hub_server`
then starts the server on that port.

Tokens known to the server (pass them explicitly; no token is stored in HF_HOME and HF_TOKEN is unset):
    hf_alice_write  write token of user "alice"
    hf_alice_read   read token of user "alice"
    hf_bob_write    write token of user "bob"
"""

import os
import socket
import tempfile
from pathlib import Path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


HUB_PORT = _free_port()
HUB_URL = f"http://127.0.0.1:{HUB_PORT}"

for _name in (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_TOKEN_PATH",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "HF_XET_CACHE",
    "HF_ASSETS_CACHE",
):
    os.environ.pop(_name, None)
os.environ.update(
    HF_ENDPOINT=HUB_URL,
    HF_HOME=tempfile.mkdtemp(prefix="ddpm_hub_hf_home_"),
    DDPM_HUB_CACHE=tempfile.mkdtemp(prefix="ddpm_hub_cache_"),  # the digit classifier, reference features
    HF_HUB_DISABLE_TELEMETRY="1",
    # With hf_xet installed, the client sends every file the server marks "lfs" through Xet, which this server
    # does not speak. Disabling Xet keeps the plain LFS protocol (batch -> signed PUT -> verify).
    HF_HUB_DISABLE_XET="1",
    NO_PROXY="127.0.0.1,localhost",
    no_proxy="127.0.0.1,localhost",
)

import huggingface_hub.constants  # noqa: E402 - must come after the environment above
import pytest  # noqa: E402
from hub_server import HubServer  # noqa: E402

if huggingface_hub.constants.ENDPOINT != HUB_URL:
    raise RuntimeError(
        f"huggingface_hub was imported before tests/conftest.py set HF_ENDPOINT (it points to "
        f"{huggingface_hub.constants.ENDPOINT}, not {HUB_URL}): a plugin or sitecustomize imports it too early."
    )

TOKENS = {"hf_alice_write": ("alice", "write"), "hf_alice_read": ("alice", "read"), "hf_bob_write": ("bob", "write")}


@pytest.fixture(scope="session")
def hub_server(tmp_path_factory: pytest.TempPathFactory) -> HubServer:
    """The Hub at HF_ENDPOINT, shared by all tests: use unique repo names, restore what you change."""
    server = HubServer(tmp_path_factory.mktemp("hub_server"), port=HUB_PORT)
    for token, (user, role) in TOKENS.items():
        server.add_token(token, user, role=role)
    server.start()
    yield server
    server.stop()
    assert not server.errors, "HubServer hit bugs (answered 500):\n" + "\n".join(server.errors)


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """
    The test models are tiny: intra-op threads buy nothing, and on a 2-core machine their spinning makes each UNet
    call several times slower. Processes the tests start (accelerate launch) set their own.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def hub_cache(tmp_path: Path) -> Path:
    """A fresh, empty Hub cache directory for one test: pass it as `cache_dir=` to downloads."""
    cache_dir = tmp_path / "hf_cache"
    cache_dir.mkdir()
    return cache_dir


@pytest.fixture
def read_only():
    """Makes folders read-only for this process (chmod; as root, which ignores modes, the immutable attribute)."""
    import os
    import subprocess
    import tempfile

    made = []

    def make(folder):
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o555)
        made.append(folder)
        try:
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError:
            return folder
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
            pytest.skip("no way to make a folder read-only for this user here")
        return folder

    yield make
    for folder in made:
        subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
        os.chmod(folder, 0o755)
