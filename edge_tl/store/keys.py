"""The device identity: an age X25519 key, optionally passphrase-protected, unlocked once."""

from __future__ import annotations

import getpass
import os
import stat
import sys
from datetime import UTC, datetime
from pathlib import Path

import pyrage

from edge_tl.errors import DecryptError, IdentityError
from edge_tl.store.files import atomic_write
from edge_tl.store.home import ensure_dir, home, subdir

PASSPHRASE_ENV = "EDGE_TL_PASSPHRASE"
PASSPHRASE_FILE_ENV = "EDGE_TL_PASSPHRASE_FILE"
_ARMOR_BEGIN = b"-----BEGIN AGE ENCRYPTED FILE-----"
_AGE_MAGIC = b"age-encryption.org/v1"

# (folder, pattern) of the files encrypted to the device identity
_ENCRYPTED = (("vault", "*.age"), ("models", "*.etlm"), ("runs", "*.ckpt"))

_passphrase_file: Path | None = None
# (identity path, inode, mtime, size) -> unlocked identity; tests change EDGE_TL_HOME per test.
_cache: dict[tuple[str, int, int, int], pyrage.x25519.Identity] = {}


def identity_path() -> Path:
    """Path of the device identity file."""
    return subdir("keys") / "identity.txt"


def recipient_path() -> Path:
    """Path of the public recipient file."""
    return subdir("keys") / "recipient.txt"


def set_passphrase_file(path: Path | str | None) -> Path | None:
    """Use the first line of `path` as the passphrase when none is given (CLI --passphrase-file);
    return the file set before (to put it back)."""
    global _passphrase_file
    before = _passphrase_file
    _passphrase_file = Path(path).expanduser() if path is not None else None
    return before


def passphrase_file() -> Path | None:
    """The passphrase file: set_passphrase_file's (--passphrase-file), else
    $EDGE_TL_PASSPHRASE_FILE, else None."""
    if _passphrase_file is not None:
        return _passphrase_file
    env = os.environ.get(PASSPHRASE_FILE_ENV)
    return Path(env).expanduser() if env else None


def has_identity() -> bool:
    """True when this device already has an identity."""
    return identity_path().exists()


def is_protected() -> bool:
    """True when the identity file is passphrase-encrypted."""
    return _is_age(_read_identity_bytes())


def encrypted_files() -> list[Path]:
    """The files encrypted to the device identity: the vault, models and checkpoints."""
    root = home()
    out: list[Path] = []
    for folder, pattern in _ENCRYPTED:
        if (root / folder).is_dir():
            out += sorted(p for p in (root / folder).glob(pattern) if p.is_file())
    return out


def describe_files(paths: list[Path]) -> str:
    """`the vault (2 datasets and its index), 1 model and 1 training checkpoint`."""
    vault = [p for p in paths if p.parent.name == "vault"]
    datasets = _count(sum(p.name != "index.age" for p in vault), "dataset")
    index = " and its index" if any(p.name == "index.age" for p in vault) else ""
    parts = [f"the vault ({datasets}{index})"] if vault else []
    for folder, what in (("models", "model"), ("runs", "training checkpoint")):
        n = sum(p.parent.name == folder for p in paths)
        if n:
            parts.append(_count(n, what))
    if len(parts) < 2:
        return parts[0] if parts else "nothing"
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'s' * (n != 1)}"


def check_new_identity(force_new: bool = False) -> list[Path]:
    """Refuse a new identity while one exists, or while files encrypted to a lost one remain
    (unless `force_new`: starting over); return those files."""
    path = identity_path()
    if path.exists():
        raise IdentityError(
            f"a device identity already exists at {path}",
            "it is the only key to your vault, so it is never overwritten; "
            "`edge-tl keys show` prints its recipient",
        )
    orphans = encrypted_files()
    if orphans and not force_new:
        raise IdentityError(
            f"the device identity is missing, but {describe_files(orphans)} are encrypted to "
            "it; a new identity could never read them",
            "restore keys/identity.txt (and its passphrase) from your backup. To start over "
            "without them, run `edge-tl keys init --force-new`: they are moved aside, not "
            "deleted, and stay unreadable unless the old identity turns up",
        )
    return orphans


def set_aside(paths: list[Path]) -> Path:
    """Move files encrypted to a lost identity to <home>/unreadable-<UTC time>/<folder>/."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    dest = home() / f"unreadable-{stamp}"
    for p in paths:
        folder = ensure_dir(dest / p.parent.name)
        os.replace(p, folder / p.name)
    return dest


def init_identity(passphrase: str | None, *, force_new: bool = False) -> str:
    """Create the identity (passphrase-encrypted unless None); return its `age1…` recipient.

    With files encrypted to a lost identity still in the store it refuses, unless `force_new`
    (starting over): then those files are moved aside (set_aside) first."""
    path = identity_path()
    orphans = check_new_identity(force_new)
    if passphrase is not None and not passphrase:
        raise IdentityError("the passphrase is empty", "give a passphrase, or use --no-passphrase")
    ident = pyrage.x25519.Identity.generate()
    pub = str(ident.to_public())
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    text = f"# created: {created}\n# public key: {pub}\n{ident}\n".encode()
    if passphrase is not None:
        text = pyrage.passphrase.encrypt(text, passphrase, armored=True)
    if orphans:
        set_aside(orphans)
    atomic_write(recipient_path(), (pub + "\n").encode(), mode=0o600)
    atomic_write(path, text, mode=0o600)
    _cache.clear()
    return pub


def recipient() -> str:
    """The device's public `age1…` recipient (no passphrase needed)."""
    rpath = recipient_path()
    if not identity_path().exists():
        # Never encrypt to a recipient whose secret key is gone.
        raise _no_identity()
    if rpath.exists():
        pub = rpath.read_text(encoding="utf-8", errors="replace").strip()
        try:
            pyrage.x25519.Recipient.from_str(pub)
        except (pyrage.RecipientError, ValueError) as e:
            raise IdentityError(
                f"{rpath} does not hold an age recipient",
                "delete it; it is re-created from the identity on the next command",
            ) from e
        return pub
    # recipient.txt lost: derive it again from the identity (may need the passphrase).
    pub = str(load_identity().to_public())
    atomic_write(rpath, (pub + "\n").encode(), mode=0o600)
    return pub


def load_identity(passphrase: str | None = None) -> pyrage.x25519.Identity:
    """Unlock the device identity (passphrase from arg, env, passphrase file or prompt); cached."""
    path = identity_path()
    data = _read_identity_bytes()
    st = path.stat()
    key = (str(path), st.st_ino, st.st_mtime_ns, st.st_size)
    if key in _cache:
        return _cache[key]
    if _is_age(data):
        pw = passphrase if passphrase is not None else _find_passphrase()
        try:
            data = pyrage.passphrase.decrypt(data, pw)
        except pyrage.DecryptError as e:
            raise DecryptError(
                "cannot decrypt the device identity: wrong key, or not an edge_tl vault",
                f"check the passphrase (${PASSPHRASE_ENV}, --passphrase-file, or the prompt)",
            ) from e
    else:
        _warn_if_readable(path, st.st_mode)
    ident = _parse_identity(data, path)
    _cache.clear()
    _cache[key] = ident
    return ident


def _warn_if_readable(path: Path, mode: int) -> None:
    """An unencrypted identity other users may read is a copy of the vault key for them."""
    loose = stat.S_IMODE(mode) & 0o077
    if loose:
        print(
            f"Warning: {path} is not passphrase-protected and its mode "
            f"{stat.S_IMODE(mode):04o} lets other users on this machine read it (and with it "
            f"every dataset and model); run `chmod 600 {path}`",
            file=sys.stderr,
        )


def encrypt_for_device(data: bytes) -> bytes:
    """Age-encrypt `data` to the device recipient (binary age v1)."""
    rec = pyrage.x25519.Recipient.from_str(recipient())
    return pyrage.encrypt(data, [rec])


def decrypt_on_device(data: bytes, what: str) -> bytes:
    """Decrypt an age file (binary or armored) with the device identity, in memory only."""
    ident = load_identity()
    try:
        return pyrage.decrypt(data, [ident])
    except (pyrage.DecryptError, ValueError, TypeError) as e:
        raise DecryptError(
            f"cannot decrypt {what}: wrong key, or not an edge_tl vault",
            "check that it was encrypted for this device (`edge-tl keys show`) and is intact",
        ) from e


def is_age_file(head: bytes) -> bool:
    """True when `head` (the first bytes of a file) starts like an age file, binary or armored."""
    return _is_age(head)


def _is_age(data: bytes) -> bool:
    return data.startswith(_AGE_MAGIC) or data.lstrip().startswith(_ARMOR_BEGIN)


def _read_identity_bytes() -> bytes:
    path = identity_path()
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise _no_identity() from None


def _no_identity() -> IdentityError:
    return IdentityError("this device has no identity yet", "run `edge-tl keys init`")


def _parse_identity(data: bytes, path: Path) -> pyrage.x25519.Identity:
    try:
        lines = data.decode("ascii").splitlines()
    except UnicodeDecodeError:
        lines = []
    keys = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
    if len(keys) == 1 and keys[0].startswith("AGE-SECRET-KEY-1"):
        try:
            return pyrage.x25519.Identity.from_str(keys[0])
        except (pyrage.IdentityError, ValueError):
            pass
    raise IdentityError(
        f"{path} is not an age identity file",
        "restore it from your backup; without it the vault cannot be decrypted",
    )


def _find_passphrase() -> str:
    # A flag beats the environment: --passphrase-file, $EDGE_TL_PASSPHRASE,
    # $EDGE_TL_PASSPHRASE_FILE, then the prompt.
    if _passphrase_file is not None:
        return read_passphrase_file(_passphrase_file)
    env = os.environ.get(PASSPHRASE_ENV)
    if env:
        return env
    pw_file = passphrase_file()
    if pw_file is not None:
        return read_passphrase_file(pw_file)
    if sys.stdin is not None and sys.stdin.isatty():
        pw = getpass.getpass("Passphrase for the edge_tl identity: ")
        if pw:
            return pw
    raise IdentityError(
        "the device identity is passphrase-protected and no passphrase was given",
        f"set {PASSPHRASE_ENV}, pass --passphrase-file FILE, or run the command in a terminal",
    )


def read_passphrase_file(path: Path) -> str:
    """The first line of a passphrase file (without its line break)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise IdentityError(f"cannot read the passphrase file {path}: {e.strerror}") from e
    line = raw.split(b"\n", 1)[0].rstrip(b"\r")
    try:
        pw = line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise IdentityError(f"the passphrase file {path} is not UTF-8") from e
    if not pw:
        raise IdentityError(
            f"the passphrase file {path} is empty", "write the passphrase on line 1"
        )
    return pw
