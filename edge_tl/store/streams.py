"""Opening an untrusted source file: age files are decrypted in memory (never to disk), and
gzip/xz/bz2 are decompressed on a worker thread while the caller parses."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from edge_tl.errors import DataError
from edge_tl.store.keys import decrypt_on_device, is_age_file

_WRAPPERS: list[tuple[bytes, str, str, Callable[[IO[bytes]], IO[bytes]]]] = [
    (b"\x1f\x8b", ".gz", "gzip", lambda f: gzip.GzipFile(fileobj=f)),  # type: ignore[dict-item]
    (b"\xfd7zXZ\x00", ".xz", "xz", lambda f: lzma.LZMAFile(f)),  # type: ignore[dict-item]
    (b"BZh", ".bz2", "bzip2", lambda f: bz2.BZ2File(f)),  # type: ignore[dict-item]
]


class _ReadAhead(io.RawIOBase):
    """Decompresses on a worker thread (zlib, lzma and bz2 drop the GIL) while the caller parses."""

    CHUNK = 1 << 20

    def __init__(self, inner: IO[bytes], raw: IO[bytes]) -> None:
        super().__init__()
        self.inner, self.raw = inner, raw
        self.position = 0  # compressed bytes consumed, for the progress bar
        self._q: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=8)
        self._stop = threading.Event()
        self._buf, self._pos, self._eof = b"", 0, False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                chunk = self.inner.read(self.CHUNK)
                self.position = self.raw.tell()
                self._put(chunk)
                if not chunk:
                    return
        except BaseException as e:  # noqa: BLE001 - handed over to the reading thread
            self._put(e)

    def _put(self, item: bytes | BaseException) -> None:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self._pos >= len(self._buf):
            if self._eof:
                return 0
            item = self._q.get()
            if isinstance(item, BaseException):
                self._eof = True
                raise item
            if not item:
                self._eof = True
                return 0
            self._buf, self._pos = item, 0
        n = min(len(b), len(self._buf) - self._pos)
        b[:n] = self._buf[self._pos : self._pos + n]
        self._pos += n
        return n

    def close(self) -> None:
        if not self.closed:
            self._stop.set()
            self._thread.join()
            self.inner.close()
            self.raw.close()
        super().close()


def open_source(source: Path) -> tuple[IO[bytes], Callable[[], int], str]:
    """Open a source: (byte stream, bytes-of-the-file-consumed function, inner name)."""
    raw: IO[bytes] = open(source, "rb")  # noqa: SIM115 - closed by the caller
    name = source.name
    head = raw.read(64)
    raw.seek(0)

    if is_age_file(head):
        data = raw.read()
        raw.close()
        # Decrypted in memory only; the plaintext never touches the disk.
        raw = io.BytesIO(decrypt_on_device(data, f"source {source.name}"))
        name = name.removesuffix(".age")
        head = raw.read(64)
        raw.seek(0)
    for magic, suffix, kind, _ in _WRAPPERS:
        if name.lower().endswith(suffix) and not head.startswith(magic):
            raw.close()
            raise DataError(
                f"{source.name} is not {kind}-compressed, though its name ends in {suffix}",
                f"check that it is complete; if it is not compressed, name it without {suffix}",
            )
    for magic, suffix, _, opener in _WRAPPERS:
        if head.startswith(magic):
            ahead = _ReadAhead(opener(raw), raw)
            # Closing the returned reader closes the decompressor and the file too.
            stream = io.BufferedReader(ahead, buffer_size=1 << 20)
            return stream, lambda a=ahead: a.position, name.removesuffix(suffix)
    return raw, raw.tell, name


__all__ = ["open_source"]
