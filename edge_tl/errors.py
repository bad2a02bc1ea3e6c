"""The one error hierarchy: every user-facing failure is an EdgeTLError with a next step."""

from __future__ import annotations


class EdgeTLError(Exception):
    """A failure the user can act on; the CLI prints it as `Error: <message>` and exits 1."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message.rstrip(".")
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.message}. {self.hint}" if self.hint else f"{self.message}."


class ConfigError(EdgeTLError):
    """A device profile, config file or flag is invalid."""


class DeviceError(EdgeTLError):
    """The hardware cannot do what was asked (no CUDA, out of memory, ...)."""


class IdentityError(EdgeTLError):
    """The device identity is missing, locked or wrong."""


class DecryptError(EdgeTLError):
    """Decryption failed: wrong key, or the file is corrupted or tampered with."""


class DataError(EdgeTLError):
    """A data source or vault dataset is missing or malformed."""


class BundleError(EdgeTLError):
    """A base-model bundle is missing, malformed, tampered with or untrusted."""


class ModelError(EdgeTLError):
    """A trained model or checkpoint is missing or malformed."""


class ExportError(EdgeTLError):
    """An exported ONNX model cannot be written, read or trusted."""


class StoreError(EdgeTLError):
    """The store under EDGE_TL_HOME is inconsistent or a name is taken/missing."""


class NetworkDisabledError(EdgeTLError):
    """Something tried to reach the network, which edge_tl never does at run time."""
