"""The stated public API (docs/api.md): stable names stay, renamed ones warn, every module declares `__all__`.

docs/api.md is the checked-in list: under each "## `module`" heading, the line starting "Stable names:" lists
that module's stable names; the "Deprecated names" table lists old names with their replacements. A failure
here means a stable name disappeared or was renamed: restore it, or keep the old name reachable through
`ptx_keras._deprecation.renamed_names` and move it to the table (docs/api.md says how).
"""

import importlib
import pathlib
import pkgutil
import re
import sys
import types
import warnings

import pytest

import ptx_keras
from ptx_keras._deprecation import renamed_names

API_PAGE = pathlib.Path(__file__).resolve().parents[1] / "docs" / "api.md"
SECTION = re.compile(r"^## `(?P<module>ptx_keras(?:\.\w+)*)`\s*$")
NAME = re.compile(r"`(?P<name>\w+)`")
DEPRECATED_ROW = re.compile(
    r"^\|\s*`?(?P<module>ptx_keras[\w.]*)`?\s*\|\s*`?(?P<old>\w+)`?\s*\|\s*`?(?P<new>\w+)`?\s*\|[^|]*\|\s*$"
)


def stable_names():
    """`{module: [names]}` from the "Stable names:" lines of docs/api.md."""
    out, module = {}, None
    for line in API_PAGE.read_text(encoding="utf-8").splitlines():
        heading = SECTION.match(line)
        if heading:
            module = heading["module"]
        elif line.startswith("## "):
            module = None
        elif module and line.startswith("Stable names:"):
            out.setdefault(module, []).extend(m["name"] for m in NAME.finditer(line))
    return out


def deprecated_names():
    """`[(module, old, new)]` from the "Deprecated names" table of docs/api.md."""
    return [
        (m["module"], m["old"], m["new"])
        for m in map(DEPRECATED_ROW.match, API_PAGE.read_text(encoding="utf-8").splitlines())
        if m
    ]


def public_modules():
    """Every module of the package whose dotted name has no part starting with an underscore."""
    names = ["ptx_keras"]
    for info in pkgutil.walk_packages(ptx_keras.__path__, "ptx_keras."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return sorted(names)


STABLE = stable_names()


def test_the_page_lists_the_extension_api():
    # The parser read the page: the modules a Keras user extends are there, with their main names.
    assert {"ptx_keras", "ptx_keras.layers", "ptx_keras.losses", "ptx_keras.models", "ptx_keras.data"} <= set(STABLE)
    assert {"SCSEBlock", "MultiScaleConv2D", "DenseLayer", "DenseBlock"} <= set(STABLE["ptx_keras.layers"])
    assert "SpatialWeightedCE" in STABLE["ptx_keras.losses"]
    assert "FCDenseNet" in STABLE["ptx_keras.models"]
    assert "spatial_weight_map" in STABLE["ptx_keras.data"]


@pytest.mark.parametrize("module_name", sorted(STABLE))
def test_stable_names_are_exported(module_name):
    module = importlib.import_module(module_name)
    exported = set(getattr(module, "__all__", ()))
    listed = STABLE[module_name]
    missing = [name for name in listed if name not in exported or not hasattr(module, name)]
    assert not missing, (
        f"{module_name} no longer exports {missing}, stable names of docs/api.md: restore them, or rename them "
        "with a deprecation path (ptx_keras._deprecation.renamed_names) and list them under 'Deprecated names'"
    )
    unlisted = sorted(exported - set(listed))
    assert not unlisted, f"{module_name}.__all__ has {unlisted}, which docs/api.md does not list: add them there"
    assert len(listed) == len(set(listed)), f"docs/api.md lists a name of {module_name} twice"


@pytest.mark.parametrize("module_name", public_modules())
def test_every_public_module_declares_all(module_name):
    module = importlib.import_module(module_name)
    assert isinstance(getattr(module, "__all__", None), (list, tuple)), f"{module_name} has no __all__"
    absent = [name for name in module.__all__ if not hasattr(module, name)]
    assert not absent, f"{module_name}.__all__ names {absent}, which the module does not have"
    assert len(module.__all__) == len(set(module.__all__)), f"{module_name}.__all__ has duplicates"


@pytest.mark.parametrize("module_name, old, new", deprecated_names() or [pytest.param(None, None, None, id="none")])
def test_deprecated_names_warn_and_resolve(module_name, old, new):
    if module_name is None:
        assert deprecated_names() == []  # the table is empty: nothing to check yet, and that is what it says
        return
    module = importlib.import_module(module_name)
    assert old not in module.__all__, f"{module_name}.{old} is deprecated; it must leave __all__"
    with pytest.warns(DeprecationWarning, match=rf"{module_name}\.{old} is deprecated.*{module_name}\.{new}"):
        value = getattr(module, old)
    assert value is getattr(module, new)


def test_renamed_names_warns_and_returns_the_new_object(monkeypatch):
    module = types.ModuleType("ptx_keras_fake_module")
    module.NewName = object()
    module.__getattr__ = renamed_names(module.__name__, {"OldName": "NewName"})
    monkeypatch.setitem(sys.modules, module.__name__, module)
    with pytest.warns(DeprecationWarning, match=r"ptx_keras_fake_module\.OldName is deprecated.*\.NewName"):
        assert module.OldName is module.NewName
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert module.NewName is module.NewName  # the new name does not warn
    with pytest.raises(AttributeError, match="has no attribute 'Missing'"):
        module.Missing  # noqa: B018


def test_renamed_names_falls_back_to_the_previous_getattr(monkeypatch):
    module = types.ModuleType("ptx_keras_fake_lazy")
    module.new = 1
    module.__getattr__ = renamed_names(module.__name__, {"old": "new"}, fallback=lambda name: f"lazy {name}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    assert module.something == "lazy something"
    with pytest.warns(DeprecationWarning):
        assert module.old == 1


def test_the_parser_reads_a_deprecated_row():
    row = "| `ptx_keras.layers` | `OldBlock` | `SCSEBlock` | 0.2 |"
    match = DEPRECATED_ROW.match(row)
    assert (match["module"], match["old"], match["new"]) == ("ptx_keras.layers", "OldBlock", "SCSEBlock")
