"""Renamed names keep working for one release, with a FutureWarning that names the new one."""

from __future__ import annotations

import warnings


def warn_renamed(old: str, new: str, stacklevel: int = 3) -> None:
    warnings.warn(f"{old} is renamed {new}; the old name will be removed in the next release", FutureWarning,
                  stacklevel=stacklevel)


def module_getattr(module: str, renamed: dict[str, str], namespace: dict):
    """A module ``__getattr__`` that serves each old name of ``renamed`` (old -> new) from ``namespace`` (the
    module's globals), with a warning."""

    def __getattr__(name: str):
        if name in renamed:
            warn_renamed(f"{module}.{name}", renamed[name])
            return namespace[renamed[name]]
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
