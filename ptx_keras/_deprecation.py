"""Renamed public names: the old name keeps working for a while, with a DeprecationWarning.

A stable name (docs/api.md) is never renamed or removed outright: the old name stays reachable through the
module's `__getattr__` for at least one minor release. In the module that renamed `OldName` to `NewName`:

    from ptx_keras._deprecation import renamed_names

    __getattr__ = renamed_names(__name__, {"OldName": "NewName"})

(a module that already has a lazy `__getattr__` passes it as `fallback`), and docs/api.md lists the old name in
its "Deprecated names" table; tests/test_public_api.py checks that the old name warns and returns the new object.
"""

import importlib
import warnings

__all__ = ["renamed_names"]


def renamed_names(module_name, renamed, fallback=None):
    """Returns a module-level `__getattr__` that resolves old names to new ones with a DeprecationWarning.

    Args:
        module_name: The module's `__name__`.
        renamed: `{old_name: new_name}`; the new name is an attribute of the same module.
        fallback: The module's previous `__getattr__` (e.g. a lazy loader) for every other name, or None.

    Returns:
        A function `__getattr__(name)` for the module's globals; its `renamed` attribute holds the mapping.
    """
    renamed = dict(renamed)

    def __getattr__(name):
        if name in renamed:
            new = renamed[name]
            warnings.warn(
                f"{module_name}.{name} is deprecated and will be removed; use {module_name}.{new}",
                DeprecationWarning,
                stacklevel=2,
            )
            return getattr(importlib.import_module(module_name), new)
        if fallback is not None:
            return fallback(name)
        raise AttributeError(f"module {module_name!r} has no attribute {name!r}")

    __getattr__.renamed = renamed
    return __getattr__
