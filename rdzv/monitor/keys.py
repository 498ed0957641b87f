"""Where runs and store keys live below a monitor's prefix, and how store keys are decoded."""

from __future__ import annotations

import base64
import binascii

from .model import StoreItem


def normalize_prefix(prefix: str) -> str:
    """``prefix`` as an absolute etcd directory without a trailing slash (``""`` for the root).

    ``"torch/elastic/"`` and ``"/torch/elastic"`` both give ``"/torch/elastic"``.
    """
    if not isinstance(prefix, str):
        raise TypeError(f"The monitor prefix must be a string such as '/torch/elastic', not {type(prefix).__name__}.")
    stripped = prefix.strip().strip("/")
    return "/" + stripped if stripped else ""


class KeyLayout:
    """torch's layout below ``prefix``: states at ``<prefix>/rendezvous/<run_id>``,
    store keys at ``<prefix>/store/<base64 key>``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = normalize_prefix(prefix)
        self.runs_dir = self.prefix + "/rendezvous/"
        self.store_dir = self.prefix + "/store/"

    @property
    def watched(self) -> str:
        """The directory the monitor lists and watches."""
        return self.prefix or "/"

    def run_id(self, key: str) -> str | None:
        """The run id of a state key, or ``None`` if ``key`` is not one."""
        if key.startswith(self.runs_dir):
            return key[len(self.runs_dir):] or None
        return None

    def store_name(self, key: str) -> str | None:
        """The encoded store key name of ``key``, or ``None`` if ``key`` is not a store key."""
        if key.startswith(self.store_dir) and len(key) > len(self.store_dir):
            return key[len(self.store_dir):]
        return None


def store_item(name: str, value: str, revision: int, api: str) -> StoreItem:
    """The :class:`StoreItem` of the store key named ``name`` (base64) holding ``value`` (base64)."""
    try:
        key = base64.b64decode(name, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        key = name
    raw = value.encode("utf-8", "surrogateescape")
    try:
        decoded = base64.b64decode(raw, validate=True)
    except binascii.Error:
        decoded = raw
    return StoreItem(key=key, value=decoded, revision=revision, api=api)
