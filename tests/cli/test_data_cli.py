"""`edge-tl data` commands and the dataset store API, including stratified nested splits."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_tl.cli import cli
from edge_tl.errors import DataError, StoreError
from edge_tl.store import datasets as data
from edge_tl.store import keys


@pytest.fixture
def device() -> str:
    return keys.init_identity(None)


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def _csv(tmp_path: Path, body: str, name: str = "d.csv") -> Path:
    p = tmp_path / name
    p.write_text(body, encoding="utf-8")
    return p


def test_import_list_info_head_rm(device, tmp_path):
    src = _csv(tmp_path, "text,label,id\nloved it,pos,1\nhated it,neg,2\nfine,pos,3\nmeh,,4\n")
    code, out = _run("data", "import", str(src), "--name", "tiny")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].startswith("Imported 4 rows into 'tiny' in ")
    assert lines[1:] == [
        "  neg                   1",
        "  pos                   2",
        "  (unlabelled)          1",
    ]
    code, out = _run("data", "list")
    assert out.splitlines()[1].split()[:3] == ["tiny", "4", "neg,pos"]
    code, out = _run("data", "info", "tiny")
    info = data.dataset_info("tiny")
    assert f"fingerprint: {info.fingerprint}" in out and "rows:        4" in out
    code, out = _run("data", "head", "tiny", "-n", "2")
    assert out == "pos\tloved it\nneg\thated it\n"
    ds = data.open_dataset("tiny")
    assert ds.labelled() == (["loved it", "hated it", "fine"], ["pos", "neg", "pos"])
    assert ds.unlabelled_texts() == ["meh"]
    assert _run("data", "rm", "tiny") == (0, "Removed dataset 'tiny' (4 rows)\n")
    assert _run("data", "list")[1].startswith("No datasets yet.")
    vault = keys.identity_path().parent.parent / "vault"
    assert sorted(p.name for p in vault.iterdir()) == [".lock", "index.age"]


def test_cli_errors(device, tmp_path):
    src = _csv(tmp_path, "text,label\na,x\nb,y\n")
    assert _run("data", "import", str(src), "--name", "d")[0] == 0
    assert _run("data", "import", str(src), "--name", "d") == (
        1,
        "Error: dataset 'd' already exists. choose another --name, or remove it first with "
        "`edge-tl data rm d`\n",
    )
    one = _csv(tmp_path, "text,label\na,x\nb,x\nc,\n", "one.csv")
    assert _run("data", "import", str(one), "--name", "one") == (
        1,
        "Error: one.csv has one class only ('x'); a classifier needs at least two. check "
        "--label-col, or leave the label column empty to import unlabelled text\n",
    )
    for cmd in (
        ["info", "nope"],
        ["head", "nope"],
        ["rm", "nope"],
        ["split", "nope", "--sizes", "1"],
    ):
        assert _run("data", *cmd) == (
            1,
            "Error: dataset 'nope' not found. run `edge-tl data list` to see the names\n",
        )
    assert _run("data", "split", "d", "--sizes", "1,x") == (
        1,
        "Error: --sizes '1,x' is not a list of integers. e.g. --sizes 500,1000\n",
    )
    assert _run("data", "split", "d", "--sizes", "5") == (
        1,
        "Error: subset size 5 is larger than the 2 labelled rows.\n",
    )
    bad = _csv(tmp_path, 'text,label\n"open,x\n', "bad.csv")
    code, out = _run("data", "import", str(bad), "--name", "bad")
    assert (code, out) == (
        1,
        "Error: bad.csv: line 2: malformed CSV (unexpected end of data). "
        "a quote opened on this line is never closed\n",
    )
    assert [i.name for i in data.list_datasets()] == ["d"]  # nothing written for failures
    code, out = _run("data", "import", str(src), "--name", " padded")
    assert code == 1 and out.startswith("Error: invalid dataset name ' padded'.")


def test_import_without_identity(tmp_path):
    src = _csv(tmp_path, "text,label\na,x\nb,y\n")
    assert _run("data", "import", str(src), "--name", "d") == (
        1,
        "Error: this device has no identity yet. run `edge-tl keys init`\n",
    )


def test_folder_import_with_unsup(device, tmp_path):
    root = tmp_path / "aclImdb" / "train"
    for label, n in (("pos", 3), ("neg", 2), ("unsup", 4)):
        (root / label).mkdir(parents=True)
        for i in range(n):
            (root / label / f"{i}_0.txt").write_text(f"{label} {i}", encoding="utf-8")
    code, out = _run("data", "import", str(root), "--name", "acl")
    assert code == 0, out
    info = data.dataset_info("acl")
    assert info.label_counts == {"neg": 2, "pos": 3} and info.unlabelled == 4


def test_save_dataset_api(device):
    info = data.save_dataset("api", ["a", "b", "c"], ["x", "y", None])
    assert info.rows == 3 and info.labels == ["x", "y"]
    ds = data.open_dataset("api")
    assert (ds.texts, ds.labels, ds.label_names) == (["a", "b", "c"], ["x", "y", None], ("x", "y"))
    assert ds.fingerprint == info.fingerprint
    with pytest.raises(StoreError):
        data.save_dataset("api", ["a", "b"], ["x", "y"])
    with pytest.raises(DataError, match="row 1: empty"):
        data.save_dataset("e", ["a", " "], ["x", "y"])
    unl = data.save_dataset("lm", ["only", "text"], [None, None])  # unlabelled corpora are fine
    assert unl.labels == [] and unl.unlabelled == 2


def test_split_cli_is_deterministic_and_nested(device):
    labels = ["a"] * 60 + ["b"] * 30 + ["c"] * 10 + [None] * 5
    data.save_dataset("s", [f"t{i}" for i in range(len(labels))], labels)
    code, out = _run("data", "split", "s", "--sizes", "10,50", "--seed", "3")
    assert code == 0
    assert out.splitlines() == ["       10: a 6, b 3, c 1", "       50: a 30, b 15, c 5"]
    code, out = _run("data", "split", "s", "--sizes", "10,50", "--seed", "3", "--json")
    got = json.loads(out)
    assert got == {str(k): v for k, v in data.split_dataset("s", [10, 50], 3).items()}
    assert set(got["10"]) <= set(got["50"])
    assert data.split_dataset("s", [10, 50], 4) != data.split_dataset("s", [10, 50], 3)


@settings(max_examples=80, deadline=None)
@given(
    counts=st.lists(st.integers(1, 40), min_size=2, max_size=4),
    n_unlabelled=st.integers(0, 5),
    seed=st.integers(0, 2**31),
    data_=st.data(),
)
def test_stratified_nested_subsets_properties(counts, n_unlabelled, seed, data_):
    labels: list[str | None] = [f"c{i}" for i, n in enumerate(counts) for _ in range(n)]
    labels += [None] * n_unlabelled
    labels = data_.draw(st.permutations(labels))
    total = sum(counts)
    sizes = sorted(
        set(data_.draw(st.lists(st.integers(len(counts), total), min_size=1, max_size=4)))
    )
    subsets = data.stratified_nested_subsets(labels, sizes, seed)
    assert subsets == data.stratified_nested_subsets(labels, sizes, seed)
    previous: set[int] = set()
    for s in sizes:
        idx = subsets[s]
        assert len(idx) == len(set(idx)) == s
        assert all(labels[i] is not None for i in idx)
        assert previous <= set(idx)  # nested
        previous = set(idx)
        got = Counter(labels[i] for i in idx)
        for c, n in enumerate(counts):
            share = s * n / total
            # Sainte-Lague prefixes: within one row of the exact share, plus rounding slack
            # that grows with the number of classes.
            assert abs(got[f"c{c}"] - share) <= 0.5 + len(counts) * n / total / 2 + 1e-9
            assert got[f"c{c}"] >= 1 or share < 1


def test_stratified_nested_subsets_errors():
    with pytest.raises(DataError, match="smaller than the number of labels"):
        data.stratified_nested_subsets(["a", "b", "c"], [2], 0)
    with pytest.raises(DataError, match="not a positive integer"):
        data.stratified_nested_subsets(["a", "b"], [0], 0)


def test_list_header_lines_up_with_short_names(device):
    """Every name shorter than the NAME header pushed the header out of line."""
    data.save_dataset("ab", ["one text", "two text"], ["x", "y"])
    data.save_dataset("c", ["three", "four"], ["x", "y"])
    header, first, second = _run("data", "list")[1].splitlines()
    assert header.index("ROWS") + len("ROWS") == first.index("2") + 1 == second.index("2") + 1
    assert header.index("LABELS") == first.index("x,y") == second.index("x,y")
    assert header.index("CREATED") == first.index(data.dataset_info("ab").created)


def test_import_csv_without_label_column_needs_label_col_or_unlabelled(device, tmp_path):
    src = _csv(tmp_path, "text,stars\nloved it,5\nhated it,1\n")
    code, out = _run("data", "import", str(src), "--name", "r")
    assert code == 1 and out.startswith(
        "Error: d.csv: no 'label' column; the columns are: text, stars. pass --label-col"
    )
    assert data.list_datasets() == []
    assert _run("data", "import", str(src), "--name", "r", "--label-col", "stars")[0] == 0
    code, out = _run("data", "import", str(src), "--name", "lm", "--unlabelled")
    assert code == 0, out
    assert data.dataset_info("lm").unlabelled == 2
