"""Every test: its own EDGE_TL_HOME, HOME, XDG, cache and temp folders, and no network (any
connection or lookup attempt, in the test process or a child it started, fails the test)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from netguard.sitecustomize import NetworkAttempt, install
from tinydata import check_children, scan_for_plaintext

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SHM = Path("/dev/shm")

__all__ = ["NetworkAttempt"]


def _user_dirs(root: Path) -> dict[str, Path]:
    """Where libraries write per-user files, all under `root`."""
    home = root / "home"
    return {
        "HOME": home,
        "XDG_CONFIG_HOME": home / ".config",
        "XDG_CACHE_HOME": home / ".cache",
        "XDG_DATA_HOME": home / ".local" / "share",
        "XDG_STATE_HOME": home / ".local" / "state",
        "XDG_RUNTIME_DIR": root / "run",
        "MPLCONFIGDIR": home / ".config" / "matplotlib",
        "FASTAI_HOME": home / ".fastai",
        "TORCH_HOME": home / ".cache" / "torch",
        "HF_HOME": home / ".cache" / "huggingface",
        "TMPDIR": root / "tmp",
    }


def _point_user_dirs(root: Path, setenv: Callable[[str, str], None]) -> None:
    for var, path in _user_dirs(root).items():
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        setenv(var, str(path))


# Libraries that pick their folder once per process (matplotlib's config dir) must not pick the
# user's real home either: the whole session starts inside a throw-away folder.
_point_user_dirs(Path(tempfile.mkdtemp(prefix="edge_tl-session-")), os.environ.__setitem__)


def _shm_entries() -> set[str]:
    try:
        return set(os.listdir(SHM))
    except OSError:
        return set()


@pytest.fixture(autouse=True)
def sandbox(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """One fresh folder holding this test's HOME, XDG folders, matplotlib's and fastai's config,
    TMPDIR and EDGE_TL_HOME: a leak scan of it covers everywhere those libraries write."""
    root = tmp_path_factory.mktemp("sandbox")
    _point_user_dirs(root, monkeypatch.setenv)
    monkeypatch.setattr(tempfile, "tempdir", str(root / "tmp"))
    return root


@pytest.fixture(autouse=True)
def edge_tl_home(sandbox: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point EDGE_TL_HOME at a fresh folder and clear passphrase/proxy variables."""
    home = sandbox / "edge_tl_home"
    home.mkdir()
    monkeypatch.setenv("EDGE_TL_HOME", str(home))
    for var in ("EDGE_TL_PASSPHRASE", "EDGE_TL_PASSPHRASE_FILE", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(var, raising=False)
    for var in ("http_proxy", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture
def plaintext_leaks(sandbox: Path, tmp_path: Path) -> Iterator[Callable[..., list[str]]]:
    """leaks(secret, *roots, skip=()): files under the sandbox, tmp_path, `roots` and the
    /dev/shm entries created since the test started that hold `secret` in any common encoding."""
    before = _shm_entries()

    def leaks(secret: str, *roots: Path, skip: tuple[Path, ...] = ()) -> list[str]:
        shm = [SHM / n for n in sorted(_shm_entries() - before)]
        return scan_for_plaintext(secret, [sandbox, tmp_path, *roots, *shm], skip=skip)

    yield leaks


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Refuse inet connects, sends and DNS lookups here (tests/netguard); an attempt fails the
    test even if the code swallows it, and so does one made by a child started via tinydata."""
    attempts: list[str] = []
    install(attempts.append, monkeypatch.setattr)
    yield attempts
    child = check_children(fail=False)
    if attempts or child:
        pytest.fail(f"test made network attempt(s): {(attempts + child)[:3]}")


@pytest.fixture
def age_cli() -> str:
    """The stock `age` CLI (interoperability tests): skips without it, but fails under CI=true,
    where .ci/run installs it, so those tests cannot go quietly missing."""
    path = shutil.which("age")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("the stock `age` CLI is not installed, and CI=true needs it")
        pytest.skip("the stock `age` CLI is not installed")
    return path


@pytest.fixture
def shared_data() -> Path:
    """The shared data folder (../shared/data); skips the test when it is absent."""
    if not SHARED.is_dir():
        pytest.skip("../shared/data is not beside this checkout")
    return SHARED
