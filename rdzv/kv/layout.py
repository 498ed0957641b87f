"""Where torch keeps a run's state and its store below a prefix: the one home of the key layout.

torch's ``etcd-v2`` backend (``etcd_rendezvous_backend.create_backend``) puts the state of run
``R`` at ``/torch/elastic/rendezvous/R`` and the job store (``etcd_store.EtcdStore``) below
``/torch/elastic/store/``, a key ``k`` stored as ``base64(k)``. rdzv uses the same paths on
both APIs, below any prefix. rdzv's own plugins also publish each run's handler settings at
``<prefix>/rdzv-settings/<run_id>`` (JSON), a key neither torch nor a run listing takes for a run.
"""

from __future__ import annotations

DEFAULT_PREFIX = "/torch/elastic"

STATE_TTL = 7200
"""Seconds etcd keeps a run's state after its last write: torch's etcd-v2 backend's two hours
(``EtcdRendezvousBackend._DEFAULT_TTL``), rdzv's on both APIs."""


def normalize_prefix(prefix: str) -> str:
    """``prefix`` as an absolute etcd directory without a trailing slash (``""`` for the root).

    ``"torch/elastic/"`` and ``"/torch/elastic"`` both give ``"/torch/elastic"``.
    """
    if not isinstance(prefix, str):
        raise TypeError(f"The key prefix must be a string such as '/torch/elastic', not {type(prefix).__name__}.")
    stripped = prefix.strip().strip("/")
    return "/" + stripped if stripped else ""


class KeyLayout:
    """torch's layout below ``prefix``: states at ``<prefix>/rendezvous/<run_id>``,
    store keys at ``<prefix>/store/<base64 key>``."""

    __slots__ = ("prefix", "runs_dir", "settings_dir", "store_dir")

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = normalize_prefix(prefix)
        self.runs_dir = self.prefix + "/rendezvous/"
        self.store_dir = self.prefix + "/store/"
        self.settings_dir = self.prefix + "/rdzv-settings/"

    def __repr__(self) -> str:
        return f"KeyLayout({self.prefix!r})"

    @property
    def watched(self) -> str:
        """The directory a monitor lists and watches (holds both runs and store)."""
        return self.prefix or "/"

    @property
    def runs_prefix(self) -> str:
        """The directory of the states, without the trailing slash (a backend's ``key_prefix``)."""
        return self.runs_dir[:-1]

    @property
    def store_prefix(self) -> str:
        """The directory of the store, without the trailing slash (an ``EtcdStore``'s prefix)."""
        return self.store_dir[:-1]

    def state_key(self, run_id: str) -> str:
        """The key holding the state of ``run_id``."""
        return self.runs_dir + run_id

    def settings_key(self, run_id: str) -> str:
        """The key where rdzv's plugins publish the handler settings of ``run_id``."""
        return self.settings_dir + run_id

    def settings_run_id(self, key: str) -> str | None:
        """The run id of a published-settings key, or ``None`` if ``key`` is not one."""
        if key.startswith(self.settings_dir):
            return key[len(self.settings_dir):] or None
        return None

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
