"""Device identity: creation, passphrase sources, caching, no overwrite, age compatibility."""

from __future__ import annotations

import os
import stat

import pyrage
import pytest
from click.testing import CliRunner
from tinydata import child_env, guarded, run_child

from edge_tl.cli import cli
from edge_tl.errors import DecryptError, IdentityError
from edge_tl.store import keys

PASS = "correct horse battery staple"
_protected_files: dict[str, bytes] = {}


def _protected_identity() -> str:
    """Install a passphrase-protected identity (scrypt runs once per test session)."""
    if not _protected_files:
        keys.init_identity(PASS)
        for name in ("identity.txt", "recipient.txt"):
            _protected_files[name] = (keys.identity_path().parent / name).read_bytes()
    else:
        for name, blob in _protected_files.items():
            (keys.identity_path().parent / name).write_bytes(blob)
    return _protected_files["recipient.txt"].decode().strip()


def test_init_without_passphrase_writes_a_standard_age_identity():
    pub = keys.init_identity(None)
    path = keys.identity_path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = path.read_text().splitlines()
    secret = [ln for ln in lines if not ln.startswith("#")]
    assert len(secret) == 1
    derived = pyrage.x25519.Identity.from_str(secret[0]).to_public()
    assert str(derived) == pub and pub.startswith("age1")
    assert f"# public key: {pub}" in lines
    assert keys.recipient() == pub
    assert not keys.is_protected()


def test_init_refuses_to_overwrite(edge_tl_home):
    keys.init_identity(None)
    before = keys.identity_path().read_bytes()
    with pytest.raises(IdentityError, match="already exists"):
        keys.init_identity(None)
    result = CliRunner().invoke(cli, ["keys", "init", "--no-passphrase"])
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: a device identity already exists at {edge_tl_home / 'keys' / 'identity.txt'}. "
        "it is the only key to your vault, so it is never overwritten; "
        "`edge-tl keys show` prints its recipient"
    )
    assert keys.identity_path().read_bytes() == before


def test_encrypt_decrypt_round_trip_and_wrong_key():
    keys.init_identity(None)
    ct = keys.encrypt_for_device(b"payload")
    assert ct.startswith(b"age-encryption.org/v1\n") and b"payload" not in ct
    assert keys.decrypt_on_device(ct, "test blob") == b"payload"
    other = pyrage.encrypt(b"payload", [pyrage.x25519.Identity.generate().to_public()])
    with pytest.raises(DecryptError) as e:
        keys.decrypt_on_device(other, "test blob")
    assert e.value.message == "cannot decrypt test blob: wrong key, or not an edge_tl vault"
    with pytest.raises(DecryptError):
        keys.decrypt_on_device(b"not age at all", "junk")


def test_passphrase_sources_and_cache(monkeypatch, tmp_path):
    pub = _protected_identity()
    assert keys.is_protected()
    assert keys.identity_path().read_bytes().startswith(b"-----BEGIN AGE ENCRYPTED FILE-----")
    assert pub.encode() not in keys.identity_path().read_bytes()
    assert keys.recipient() == pub  # no passphrase needed for the public half
    monkeypatch.setattr("sys.stdin", open(os.devnull))  # not a terminal: no prompt
    with pytest.raises(IdentityError) as e:
        keys.load_identity()
    assert str(e.value) == (
        "the device identity is passphrase-protected and no passphrase was given. "
        "set EDGE_TL_PASSPHRASE, pass --passphrase-file FILE, or run the command in a terminal"
    )
    with pytest.raises(DecryptError) as e:
        keys.load_identity("wrong")
    assert e.value.message == (
        "cannot decrypt the device identity: wrong key, or not an edge_tl vault"
    )
    pw_file = tmp_path / "pw"
    pw_file.write_text(PASS + "\n")
    keys.set_passphrase_file(pw_file)
    try:
        calls = []
        real = pyrage.passphrase.decrypt
        monkeypatch.setattr(
            pyrage.passphrase, "decrypt", lambda d, p: calls.append(p) or real(d, p)
        )
        ident = keys.load_identity()
        assert str(ident.to_public()) == pub
        assert keys.load_identity() is ident  # cached: scrypt ran once
        assert calls == [PASS]
    finally:
        keys.set_passphrase_file(None)


def test_env_passphrase_and_passphrase_file_for_the_cli(monkeypatch, tmp_path):
    _protected_identity()
    # An (empty) encrypted index: listing it needs the identity unlocked.
    index = keys.encrypt_for_device(b'edge_tl-index/1\n{"datasets": {}}\n')
    (keys.identity_path().parent.parent / "vault").mkdir(mode=0o700)
    (keys.identity_path().parent.parent / "vault" / "index.age").write_bytes(index)
    monkeypatch.setenv("EDGE_TL_PASSPHRASE", "nope")
    result = CliRunner().invoke(cli, ["data", "list"])
    assert result.exit_code == 1
    assert result.output.strip() == (
        "Error: cannot decrypt the device identity: wrong key, or not an edge_tl vault. "
        "check the passphrase ($EDGE_TL_PASSPHRASE, --passphrase-file, or the prompt)"
    )
    monkeypatch.delenv("EDGE_TL_PASSPHRASE")
    pw = tmp_path / "pw"
    pw.write_text(PASS + "\n")
    result = CliRunner().invoke(cli, ["data", "--passphrase-file", str(pw), "list"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("No datasets yet.")
    assert keys.passphrase_file() is None  # the option lasts for one command only


def test_cli_init_with_passphrase_file_and_show(tmp_path):
    pw = tmp_path / "pw.txt"
    pw.write_text("s3cret\r\n")
    runner = CliRunner()
    result = runner.invoke(cli, ["keys", "init", "--passphrase-file", str(pw)])
    assert result.exit_code == 0, result.output
    pub = result.output.split("Recipient: ")[1].split()[0]
    assert runner.invoke(cli, ["keys", "show"]).output.strip() == pub
    assert keys.is_protected()
    keys._cache.clear()
    assert str(keys.load_identity("s3cret").to_public()) == pub  # "\r\n" is not part of it


def test_cli_init_needs_a_passphrase_or_no_passphrase():
    result = CliRunner().invoke(cli, ["keys", "init"])
    assert result.exit_code == 1
    assert result.output.strip() == (
        "Error: no passphrase given for the new identity. set EDGE_TL_PASSPHRASE, pass "
        "--passphrase-file FILE, run in a terminal, or use --no-passphrase"
    )
    assert not keys.has_identity()


def test_show_without_identity_and_damaged_identity():
    result = CliRunner().invoke(cli, ["keys", "show"])
    assert result.exit_code == 1
    assert (
        result.output.strip() == "Error: this device has no identity yet. run `edge-tl keys init`"
    )
    keys.init_identity(None)
    path = keys.identity_path()
    path.write_text(path.read_text().replace("AGE-SECRET-KEY-1", "AGE-SECRET-KEY-X"))
    with pytest.raises(IdentityError, match="is not an age identity file"):
        keys.load_identity()


def test_stock_age_uses_the_identity_file(tmp_path, age_cli):
    pub = keys.init_identity(None)
    msg = tmp_path / "m.txt"
    msg.write_bytes(b"hello device")
    enc = tmp_path / "m.age"
    run_child([age_cli, "-r", pub, "-o", enc, msg], check=True)
    assert keys.decrypt_on_device(enc.read_bytes(), "m.age") == b"hello device"
    out = run_child(
        [age_cli, "-d", "-i", keys.identity_path()],
        input=keys.encrypt_for_device(b"from edge_tl"),
        capture_output=True,
        check=True,
    )
    assert out.stdout == b"from edge_tl"


def test_stock_age_unlocks_a_passphrase_protected_identity(tmp_path, age_cli):
    """The user is never locked out: age itself prompts for the passphrase and decrypts."""
    pty = pytest.importorskip("pty")
    import select
    import time

    _protected_identity()
    enc = tmp_path / "m.age"
    enc.write_bytes(keys.encrypt_for_device(b"hello protected"))
    out = tmp_path / "m.out"
    argv = guarded([age_cli, "-d", "-i", keys.identity_path(), "-o", out, enc])
    env = child_env()
    pid, fd = pty.fork()
    if pid == 0:  # child: age reads the passphrase from its terminal
        os.execvpe(argv[0], argv, env)
    transcript, sent, t0 = b"", False, time.time()
    while time.time() - t0 < 60:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 1024)
        except OSError:
            break
        if not chunk:
            break
        transcript += chunk
        if not sent and b"passphrase" in transcript:
            os.write(fd, PASS.encode() + b"\n")
            sent = True
    _, status = os.waitpid(pid, 0)
    assert sent, transcript
    assert os.waitstatus_to_exitcode(status) == 0, transcript
    assert out.read_bytes() == b"hello protected"


def test_wrong_passphrase_import_writes_nothing(monkeypatch, tmp_path):
    _protected_identity()
    src = tmp_path / "d.csv"
    src.write_text("text,label\nfine film,pos\nbad film,neg\n", encoding="utf-8")
    monkeypatch.setenv("EDGE_TL_PASSPHRASE", "not it")
    result = CliRunner().invoke(cli, ["data", "import", str(src), "--name", "d"])
    assert result.exit_code == 1
    assert result.output.startswith(
        "Error: cannot decrypt the device identity: wrong key, or not an edge_tl vault."
    )
    vault = keys.identity_path().parent.parent / "vault"
    assert not vault.exists() or [p.name for p in vault.iterdir()] in ([], [".lock"])


def test_keys_init_after_a_lost_identity_refuses_unless_force_new(edge_tl_home):
    """A new identity cannot read what the lost one encrypted: refused unless starting over,
    and then those files are moved aside (not deleted) so the next import works."""
    from edge_tl.store import datasets

    keys.init_identity(None)
    datasets.save_dataset("old", ["a text", "b text"], ["x", "y"])
    (edge_tl_home / "models").mkdir(mode=0o700)
    (edge_tl_home / "models" / "m.etlm").write_bytes(keys.encrypt_for_device(b"model"))
    keys.identity_path().unlink()
    keys._cache.clear()
    before = sorted(p.name for p in (edge_tl_home / "vault").iterdir())
    result = CliRunner().invoke(cli, ["keys", "init", "--no-passphrase"])
    assert result.exit_code == 1
    assert result.output == (
        "Error: the device identity is missing, but the vault (1 dataset and its index) and 1 "
        "model are encrypted to it; a new identity could never read them. restore "
        "keys/identity.txt (and its passphrase) from your backup. To start over without them, "
        "run `edge-tl keys init --force-new`: they are moved aside, not deleted, and stay "
        "unreadable unless the old identity turns up\n"
    )
    assert not keys.has_identity()
    assert sorted(p.name for p in (edge_tl_home / "vault").iterdir()) == before
    result = CliRunner().invoke(cli, ["keys", "init", "--no-passphrase", "--force-new"])
    assert result.exit_code == 0, result.output
    assert "Moved the vault (1 dataset and its index) and 1 model, encrypted to the lost " in (
        result.stderr
    )
    aside = list(edge_tl_home.glob("unreadable-*"))
    assert len(aside) == 1 and (aside[0] / "models" / "m.etlm").is_file()
    assert len(list((aside[0] / "vault").glob("*.age"))) == 2
    datasets.save_dataset("new", ["c text", "d text"], ["x", "y"])  # no stale index in the way
    assert [i.name for i in datasets.list_datasets()] == ["new"]


def test_world_readable_unencrypted_identity_warns(capsys):
    keys.init_identity(None)
    path = keys.identity_path()
    keys._cache.clear()
    keys.load_identity()
    assert capsys.readouterr().err == ""  # 0600: nothing to say
    os.chmod(path, 0o644)
    keys._cache.clear()
    keys.load_identity()
    err = capsys.readouterr().err
    assert err == (
        f"Warning: {path} is not passphrase-protected and its mode 0644 lets other users on "
        "this machine read it (and with it every dataset and model); run "
        f"`chmod 600 {path}`\n"
    )


def test_home_and_passphrase_file_on_the_root_command(monkeypatch, tmp_path, edge_tl_home):
    """`edge-tl --home D --passphrase-file F CMD`, with $EDGE_TL_PASSPHRASE_FILE as fallback."""
    from edge_tl.store.home import home

    _protected_identity()
    index = keys.encrypt_for_device(b'edge_tl-index/1\n{"datasets": {}}\n')
    (edge_tl_home / "vault").mkdir(mode=0o700)
    (edge_tl_home / "vault" / "index.age").write_bytes(index)
    pw = tmp_path / "pw"
    pw.write_text(PASS + "\n")
    monkeypatch.setenv("EDGE_TL_HOME", str(tmp_path / "elsewhere"))  # --home beats it
    monkeypatch.delenv("EDGE_TL_PASSPHRASE_FILE", raising=False)
    monkeypatch.setattr("sys.stdin", open(os.devnull))  # not a terminal: no prompt
    keys._cache.clear()
    args = ["--home", str(edge_tl_home), "--passphrase-file", str(pw)]
    result = CliRunner().invoke(cli, [*args, "data", "list"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("No datasets yet.")
    assert home() == tmp_path / "elsewhere" and keys.passphrase_file() is None  # one command
    keys._cache.clear()
    result = CliRunner().invoke(cli, ["--home", str(edge_tl_home), "data", "list"])
    assert result.exit_code == 1 and "no passphrase was given" in result.output
    monkeypatch.setenv("EDGE_TL_HOME", str(edge_tl_home))
    monkeypatch.setenv("EDGE_TL_PASSPHRASE_FILE", str(pw))
    result = CliRunner().invoke(cli, ["data", "list"])
    assert result.exit_code == 0, result.output
    for p in (*(edge_tl_home / "keys").iterdir(), edge_tl_home / "vault" / "index.age"):
        p.chmod(0o600)  # written by this test with the umask's mode
    keys._cache.clear()
    result = CliRunner().invoke(cli, ["doctor", "--check-store"])  # any command, doctor too
    assert result.exit_code == 0, result.output
