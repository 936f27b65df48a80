"""The package's import layering (docs/architecture.md): imports only go down, and no module cycles.

Parses every module of `ptx_keras` (function-local imports included, and the module names of the lazy
`_LAZY` tables of package `__init__` files) and checks each import of another ptx_keras module against
`LAYERS`. Same-layer imports are allowed; a cycle between modules is not, whatever the layers.
"""

import ast
import os

import pytest

import ptx_keras

PACKAGE_DIR = os.path.dirname(ptx_keras.__file__)

# Bottom to top. A module belongs to the first entry that equals it or is a package prefix of it.
LAYERS = (
    ("errors", "constants", "targets", "runtime", "files", "_deprecation"),
    ("ops", "layers", "losses", "metrics", "diagnosis", "data", "optimizers", "schedules"),
    ("models", "config", "loading"),
    ("runs", "serving", "reports", "figures", "inference", "artifacts", "finetune", "pretrained"),
    ("training", "multiworker", "evaluation", "export", "predict", "dicom_out", "dicom_net"),
    ("workflows", "experiments", "dicom_node"),
    ("cli",),
)
# The package root and its registration hook import the registered classes when Keras is imported; they
# are the package's front door, not a layer.
EXEMPT = ("ptx_keras", "ptx_keras._registration")


def _module_name(path, root=PACKAGE_DIR):
    rel = os.path.relpath(path, os.path.dirname(root))[: -len(".py")].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def _modules(root=PACKAGE_DIR):
    out = {}
    for directory, _, files in os.walk(root):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                out[_module_name(path, root)] = path
    return out


def _resolve(target, modules):
    """The longest known module that `target` names (`a.b.c` -> `a.b` when `c` is an attribute)."""
    while target and target not in modules:
        target = target.rpartition(".")[0]
    return target or None


def import_graph(root=PACKAGE_DIR):
    """`{module: {imported ptx_keras module: line}}` for every module under `root`."""
    modules = _modules(root)
    graph = {}
    for module, path in modules.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
        edges = {}

        def add(target, line):
            resolved = _resolve(target, modules)
            if resolved and resolved != module:
                edges.setdefault(resolved, line)

        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "ptx_keras":
                        add(alias.name, node.lineno)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    parts = parts[: len(parts) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                if base.split(".")[0] != "ptx_keras":
                    continue
                for alias in node.names:
                    add(f"{base}.{alias.name}", node.lineno)
            elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "_LAZY" for t in node.targets
            ):
                for const in ast.walk(node.value):
                    if isinstance(const, ast.Constant) and isinstance(const.value, str):
                        if const.value.split(".")[0] == "ptx_keras":
                            add(const.value, node.lineno)
        graph[module] = edges
    return graph


def layer_of(module):
    """Index of `module`'s layer in `LAYERS`, or None for exempt modules; raises for an unplaced module."""
    if module in EXEMPT:
        return None
    short = module.split(".", 1)[1]
    for index, names in enumerate(LAYERS):
        for name in names:
            if short == name or short.startswith(name + "."):
                return index
    raise AssertionError(f"{module} is in no layer of tests/test_layering.py LAYERS: place it")


def upward_imports(graph):
    bad = []
    for module, edges in graph.items():
        low = layer_of(module)
        if low is None:
            continue
        for target, line in edges.items():
            high = layer_of(target)
            if high is not None and high > low:
                bad.append(f"{module}:{line} imports {target} (layer {LAYERS[high]} above {LAYERS[low]})")
    return sorted(bad)


def find_cycles(graph):
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    counter = [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, {}):
            if nxt not in graph:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(out)


def test_every_module_has_a_layer():
    for module in import_graph():
        layer_of(module)


def test_no_import_climbs_the_layers():
    bad = upward_imports(import_graph())
    assert not bad, "imports that climb the layers:\n" + "\n".join(bad)


def test_no_import_cycles():
    # The package root is exempt from the layers, but cycles through it count too.
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_no_library_module_is_a_script():
    offenders = []
    for module, path in _modules().items():
        if module.startswith("ptx_keras.cli"):
            continue
        with open(path, encoding="utf-8") as f:
            source = f.read()
        if "__main__" in source or "argparse" in source:
            offenders.append(module)
    assert not offenders, f"__main__ hooks or argparse outside ptx_keras.cli: {offenders}"


def _write(root, relative, text):
    path = os.path.join(root, *relative.split("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def test_the_checks_catch_a_cycle_and_a_climb(tmp_path):
    """The checks themselves: a planted cycle, a function-local climb and a lazy-table edge are found."""
    root = tmp_path / "ptx_keras"
    _write(str(root), "__init__.py", "")
    _write(str(root), "diagnosis.py", "def f():\n    from ptx_keras import training\n")
    _write(str(root), "training.py", "from ptx_keras.evaluation import x\n")
    _write(str(root), "evaluation.py", "import ptx_keras.training\n")
    _write(str(root), "data/__init__.py", "_LAZY = {'a': ('ptx_keras.models', 'a')}\n")
    _write(str(root), "models.py", "")
    graph = import_graph(str(root))
    assert find_cycles(graph) == [["ptx_keras.evaluation", "ptx_keras.training"]]
    bad = upward_imports(graph)
    assert any(b.startswith("ptx_keras.diagnosis:2 imports ptx_keras.training") for b in bad), bad
    assert any(b.startswith("ptx_keras.data:1 imports ptx_keras.models") for b in bad), bad


@pytest.mark.parametrize(
    "module",
    [
        "ptx_keras.data.prepare",
        "ptx_keras.data.readers",
        "ptx_keras.config",
        "ptx_keras.data.phantoms.writing",
        "ptx_keras.artifacts",
    ],
)
def test_light_modules_do_not_import_tensorflow(module):
    """Preparation workers, configuration loading and reading an export back (ONNX / LiteRT deployments) stay free
    of TensorFlow/Keras."""
    import subprocess
    import sys

    code = f"import sys, {module}; print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"{module} imports {out.strip()}"
