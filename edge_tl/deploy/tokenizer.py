"""fastai's text pipeline (default rules + spaCy's English tokenizer + Numericalize) in pure
Python: no torch, fastai or spaCy, so `edge-tl predict` stays small and starts fast.

The spaCy part is a port of `spacy.tokenizer.Tokenizer` (whitespace split, prefix/suffix
splitting, special cases, URL match, infixes, the special-case matcher pass), driven by spaCy's
own English tables (dumped once into `assets/tokenizer_en.json`, and carried inside every
exported model so a model keeps the tokenization it was trained with).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from edge_tl.errors import ExportError

TOKENIZER_NAME = "fastai-spacy-en"
TOKENIZER_VERSION = 1

# fastai.text.core special tokens, in vocab order (ids 0..8).
UNK, PAD, BOS, EOS, FLD, TK_REP, TK_WREP, TK_UP, TK_MAJ = (
    "xxunk xxpad xxbos xxeos xxfld xxrep xxwrep xxup xxmaj".split()
)
SPECIAL_TOKENS = [UNK, PAD, BOS, EOS, FLD, TK_REP, TK_WREP, TK_UP, TK_MAJ]
UNK_ID, PAD_ID = 0, 1

# ---- fastai 2.8 default rules (fastai/text/core.py), copied verbatim in behaviour ----

_re_spec = re.compile(r"([/#\\])")
_re_space = re.compile(" {2,}")
_re_rep = re.compile(r"(\S)(\1{2,})")
_re_wrep = re.compile(r"(?:\s|^)(\w+)\s+((?:\1\s+)+)\1(\s|\W|$)")
_re_all_caps = re.compile(r"(\s|^)([A-Z]+[^a-z\s]*)(?=(\s|$))")
_re_maj = re.compile(r"(\s|^)([A-Z][^A-Z\s]*)(?=(\s|$))")


def spec_add_spaces(t: str) -> str:
    """Add spaces around / and #."""
    return _re_spec.sub(r" \1 ", t)


def rm_useless_spaces(t: str) -> str:
    """Remove multiple spaces."""
    return _re_space.sub(" ", t)


def replace_rep(t: str) -> str:
    """Replace character repetitions: cccc -> xxrep 4 c."""

    def _sub(m: re.Match[str]) -> str:
        c, cc = m.groups()
        return f" {TK_REP} {len(cc) + 1} {c} "

    return _re_rep.sub(_sub, t)


def replace_wrep(t: str) -> str:
    """Replace word repetitions: word word word word -> xxwrep 4 word."""

    def _sub(m: re.Match[str]) -> str:
        c, cc, e = m.groups()
        return f" {TK_WREP} {len(cc.split()) + 2} {c} {e}"

    return _re_wrep.sub(_sub, t)


def fix_html(x: str) -> str:
    """Various messy things seen in documents (fastai's fix_html)."""
    x = (
        x.replace("#39;", "'")
        .replace("amp;", "&")
        .replace("#146;", "'")
        .replace("nbsp;", " ")
        .replace("#36;", "$")
        .replace("\\n", "\n")
        .replace("quot;", "'")
        .replace("<br />", "\n")
        .replace('\\"', '"')
        .replace("<unk>", UNK)
        .replace(" @.@ ", ".")
        .replace(" @-@ ", "-")
        .replace("...", " …")
    )
    return html.unescape(x)


def replace_all_caps(t: str) -> str:
    """Lower-case ALL CAPS words and put xxup before them."""

    def _sub(m: re.Match[str]) -> str:
        tok = f"{TK_UP} " if len(m.groups()[1]) > 1 else ""
        return f"{m.groups()[0]}{tok}{m.groups()[1].lower()}"

    return _re_all_caps.sub(_sub, t)


def replace_maj(t: str) -> str:
    """Lower-case Capitalised words and put xxmaj before them."""

    def _sub(m: re.Match[str]) -> str:
        tok = f"{TK_MAJ} " if len(m.groups()[1]) > 1 else ""
        return f"{m.groups()[0]}{tok}{m.groups()[1].lower()}"

    return _re_maj.sub(_sub, t)


def lowercase(t: str) -> str:
    """Lower-case, strip, and put xxbos in front."""
    return f"{BOS} " + t.lower().strip()


def replace_space(t: str) -> str:
    """Replace spaces inside a token with U+2581 (fastai's post rule)."""
    return t.replace(" ", "▁")


PRE_RULES: dict[str, Callable[[str], str]] = {
    f.__name__: f
    for f in (
        fix_html,
        replace_rep,
        replace_wrep,
        spec_add_spaces,
        rm_useless_spaces,
        replace_all_caps,
        replace_maj,
        lowercase,
    )
}
POST_RULES: dict[str, Callable[[str], str]] = {"replace_space": replace_space}
DEFAULT_PRE = list(PRE_RULES)
DEFAULT_POST = list(POST_RULES)


# ---- spaCy's tokenizer algorithm (spacy/tokenizer.pyx, v3.8) ----


@lru_cache(maxsize=1)
def default_tables() -> dict[str, Any]:
    """spaCy 3.8 English tokenizer tables plus fastai's special tokens (bundled asset)."""
    text = resources.files("edge_tl").joinpath("assets/tokenizer_en.json").read_text("utf-8")
    return json.loads(text)


class SpacyEnTokenizer:
    """spaCy's rule-based tokenizer, driven by its tables, returning token strings."""

    def __init__(self, tables: dict[str, Any]) -> None:
        try:
            self._prefix = re.compile(tables["prefix"]).search
            self._suffix = re.compile(tables["suffix"]).search
            self._infix = re.compile(tables["infix"]).finditer
            self._url = re.compile(tables["url"]).match
            specials = tables["specials"]
            self._specials: dict[str, tuple[str, ...]] = {
                str(k): tuple(str(t) for t in v) for k, v in specials.items()
            }
        except (KeyError, TypeError, AttributeError, re.error) as e:
            raise ExportError(f"tokenizer tables are malformed ({e})") from e
        if any("".join(v) != k for k, v in self._specials.items()):
            raise ExportError("tokenizer tables are malformed (a special case misspells its key)")
        self._cache: dict[str, list[str]] = {}
        # The matcher pass re-joins special cases that affix splitting broke apart (":)", "a.m.").
        # spaCy registers only specials that an affix rule or a space would split.
        self._patterns: dict[str, list[tuple[tuple[str, ...], str]]] = {}
        for key in sorted(self._specials):
            if (
                self._find_prefix(key)
                or self._suffix(key)
                or any(True for _ in self._infix(key))
                or " " in key
            ):
                pat = tuple(t for t, _ in self._tokenize_affixes(key, with_specials=False))
                self._patterns.setdefault(pat[0], []).append((pat, key))
        self._cache.clear()

    def _find_prefix(self, s: str) -> int:
        m = self._prefix(s)
        return m.end() - m.start() if m else 0

    def _find_suffix(self, s: str) -> int:
        m = self._suffix(s)
        return m.end() - m.start() if m else 0

    def __call__(self, text: str) -> list[str]:
        """Tokenize one text into token strings (whitespace runs other than ' ' are tokens)."""
        toks = self._tokenize_affixes(text, with_specials=True)
        if self._patterns:
            toks = self._apply_special_cases(toks)
        return [t for t, _ in toks]

    def _tokenize_affixes(self, text: str, with_specials: bool) -> list[tuple[str, bool]]:
        # (token, followed by one consumed ' ') pairs, as spaCy's TokenC.text / .spacy.
        out: list[tuple[str, bool]] = []
        if not text:
            return out
        in_ws = text[0].isspace()
        start = 0
        for i, uc in enumerate(text):
            if uc.isspace() != in_ws:
                if start < i:
                    self._span(text[start:i], out, with_specials)
                if uc == " ":
                    # Trailing single space belongs to the previous token, as in spaCy.
                    if out:
                        out[-1] = (out[-1][0], True)
                    start = i + 1
                else:
                    start = i
                in_ws = not in_ws
        if start < len(text):
            self._span(text[start:], out, with_specials)
        return out

    def _span(self, span: str, out: list[tuple[str, bool]], with_specials: bool) -> None:
        if with_specials:
            special = self._specials.get(span)
            if special is not None:
                out.extend((t, False) for t in special)
                return
            cached = self._cache.get(span)
            if cached is None:
                cached = self._tokenize(span, with_specials)
                if len(self._cache) < 200_000:  # memo only: tokenizing a span is pure
                    self._cache[span] = cached
        else:
            cached = self._tokenize(span, with_specials)
        out.extend((t, False) for t in cached)

    def _tokenize(self, string: str, with_specials: bool) -> list[str]:
        specials = self._specials if with_specials else {}
        string, prefixes, suffixes = self._split_affixes(string, specials)
        toks = prefixes
        if string:
            toks.extend(self._attach(string, specials, with_specials))
        toks.extend(reversed(suffixes))
        return toks

    def _split_affixes(
        self, string: str, specials: dict[str, list[str]]
    ) -> tuple[str, list[str], list[str]]:
        """Peel prefixes and suffixes off `string` (spaCy's Tokenizer._split_affixes)."""
        prefixes: list[str] = []
        suffixes: list[str] = []
        last_size = 0
        while string and len(string) != last_size:
            if string in specials:
                break
            last_size = len(string)
            pre_len = self._find_prefix(string)
            if pre_len:
                prefix, minus_pre = string[:pre_len], string[pre_len:]
                if minus_pre and minus_pre in specials:
                    prefixes.append(prefix)
                    return minus_pre, prefixes, suffixes
            suf_len = self._find_suffix(string[pre_len:])
            if suf_len:
                suffix, minus_suf = string[-suf_len:], string[:-suf_len]
                if minus_suf and minus_suf in specials:
                    suffixes.append(suffix)
                    return minus_suf, prefixes, suffixes
            if pre_len and suf_len and (pre_len + suf_len) <= len(string):
                string = string[pre_len:-suf_len]
                prefixes.append(prefix)
                suffixes.append(suffix)
            elif pre_len:
                string = minus_pre
                prefixes.append(prefix)
            elif suf_len:
                string = minus_suf
                suffixes.append(suffix)
        return string, prefixes, suffixes

    def _attach(
        self, string: str, specials: dict[str, list[str]], with_specials: bool
    ) -> list[str]:
        """The tokens of what the affixes leave (spaCy's Tokenizer._attach_tokens)."""
        special = specials.get(string)
        if special is not None:
            return list(special)
        if with_specials and string in self._cache:
            return list(self._cache[string])
        if self._url(string):
            return [string]
        toks: list[str] = []
        start = 0
        for m in self._infix(string):
            i_start, i_end = m.start(), m.end()
            if i_start == 0:
                continue  # an infix at the very start is not a split point
            if i_start != start:
                toks.append(string[start:i_start])
            if i_start != i_end:
                toks.append(string[i_start:i_end])
            start = i_end
        if string[start:]:
            toks.append(string[start:])
        return toks

    def _apply_special_cases(self, toks: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
        matches: list[tuple[int, int, str]] = []
        for i, (t, _) in enumerate(toks):
            for pat, key in self._patterns.get(t, ()):
                n = len(pat)
                if tuple(x for x, _ in toks[i : i + n]) == pat:
                    matches.append((i, i + n, key))
        if not matches:
            return toks
        # spaCy keeps the longest matches first (earliest among equals), skipping overlaps.
        matches.sort(key=lambda m: (-(m[1] - m[0]), m[0]))
        seen: set[int] = set()
        kept: dict[int, tuple[int, str]] = {}
        for s, e, key in matches:
            if s not in seen and (e - 1) not in seen:
                kept[s] = (e, key)
            seen.update(range(s, e))
        out: list[tuple[str, bool]] = []
        i = 0
        while i < len(toks):
            if i not in kept:
                out.append(toks[i])
                i += 1
                continue
            e, _ = kept[i]
            text = "".join(t + (" " if sp else "") for t, sp in toks[i : e - 1]) + toks[e - 1][0]
            special = self._specials.get(text)
            if special is None:
                out.extend(toks[i:e])  # a match spread over spaces is not the special case
            else:
                out.extend((t, False) for t in special[:-1])
                out.append((special[-1], toks[e - 1][1]))
            i = e
        return out


# ---- the whole pipeline ----


class TextTokenizer:
    """fastai's `Tokenizer(SpacyTokenizer("en"))` with default rules, in pure Python."""

    def __init__(
        self,
        tables: dict[str, Any] | None = None,
        pre_rules: Sequence[str] = DEFAULT_PRE,
        post_rules: Sequence[str] = DEFAULT_POST,
    ) -> None:
        known = {**PRE_RULES, **POST_RULES}
        unknown = [r for r in [*pre_rules, *post_rules] if r not in known]
        if unknown:
            raise ExportError(
                f"unknown tokenizer rule {unknown[0]!r}",
                "the model needs a newer edge_tl; upgrade edge_tl on this device",
            )
        self._pre = [PRE_RULES[r] for r in pre_rules]
        self._post = [POST_RULES[r] for r in post_rules]
        self._spacy = SpacyEnTokenizer(default_tables() if tables is None else tables)

    def __call__(self, text: str) -> list[str]:
        """Tokens of one text, exactly as fastai's training pipeline produces them."""
        for rule in self._pre:
            text = rule(text)
        toks = self._spacy(text)
        for rule in self._post:
            toks = [rule(t) for t in toks]
        return toks


@dataclass
class Encoder:
    """Text -> token ids with a model's vocabulary (unknown tokens -> xxunk, id 0)."""

    tokenizer: TextTokenizer
    vocab: list[str]

    def __post_init__(self) -> None:
        # Exactly fastai's Numericalize.o2i: last occurrence wins, and the "xxfake" filler tokens
        # (make_vocab pads the vocab to a multiple of 8 with them) are never produced.
        self._stoi: dict[str, int] = {t: i for i, t in enumerate(self.vocab) if t != "xxfake"}

    def encode(self, text: str) -> list[int]:
        """Token ids of one text."""
        get = self._stoi.get
        return [get(t, UNK_ID) for t in self.tokenizer(text)]

    def encode_many(self, texts: Iterable[str]) -> list[list[int]]:
        """Token ids of several texts."""
        return [self.encode(t) for t in texts]


def tokenizer_spec(tables: dict[str, Any] | None = None) -> dict[str, Any]:
    """The `edge_tl.tokenizer` metadata object (docs/onnx-format.md) for the default pipeline."""
    return {
        "name": TOKENIZER_NAME,
        "version": TOKENIZER_VERSION,
        "pre_rules": DEFAULT_PRE,
        "post_rules": DEFAULT_POST,
        "unk_id": UNK_ID,
        "pad_id": PAD_ID,
        "spacy": default_tables() if tables is None else tables,
    }


def tokenizer_from_spec(spec: Any) -> TextTokenizer:
    """Rebuild the tokenizer from an `edge_tl.tokenizer` metadata object, validating it."""
    if not isinstance(spec, dict):
        raise ExportError("model metadata: edge_tl.tokenizer is not an object")
    if spec.get("name") != TOKENIZER_NAME or spec.get("version") != TOKENIZER_VERSION:
        raise ExportError(
            f"model uses tokenizer {spec.get('name')!r} version {spec.get('version')!r}, "
            f"this edge_tl has {TOKENIZER_NAME!r} version {TOKENIZER_VERSION}",
            "upgrade edge_tl on this device",
        )
    pre, post, tables = spec.get("pre_rules"), spec.get("post_rules"), spec.get("spacy")
    for what, val in (("pre_rules", pre), ("post_rules", post)):
        if not isinstance(val, list) or not all(isinstance(r, str) for r in val):
            raise ExportError(f"model metadata: tokenizer {what} is not a list of rule names")
    if not isinstance(tables, dict) or not isinstance(tables.get("specials"), dict):
        raise ExportError("model metadata: tokenizer spacy tables are missing or malformed")
    return TextTokenizer(tables, pre, post)


__all__ = [
    "SPECIAL_TOKENS",
    "TOKENIZER_NAME",
    "TOKENIZER_VERSION",
    "Encoder",
    "SpacyEnTokenizer",
    "TextTokenizer",
    "default_tables",
    "tokenizer_from_spec",
    "tokenizer_spec",
]
