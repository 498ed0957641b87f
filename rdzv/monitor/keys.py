"""How a store key below a monitor's prefix is decoded (the layout itself is :mod:`rdzv.kv.layout`)."""

from __future__ import annotations

import base64
import binascii

from .model import StoreItem


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
