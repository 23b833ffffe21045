"""The engine's layout rules, read from the code's own imports and definitions.

- the engine (``plugins/module_utils``) never imports Ansible, but for the one adapter;
- drivers never import the firewall or each other;
- only the controller package imports the store;
- no import cycle anywhere (imports inside functions count too);
- inside the controller, a ladder: every ``self.<name>`` a class uses is defined by that
  class or a class below it (its bases), so nothing calls upward; the core (session,
  result, undo) imports no other controller file;
- no Python file under ``plugins/`` over 600 lines, no class over 400 lines, and every
  engine file opens with a docstring.
"""
import ast
import dataclasses
import importlib
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLUGINS = os.path.join(ROOT, "plugins")
ENGINE = os.path.join(PLUGINS, "module_utils")
PACKAGE = "ansible_collections.cnm.core.plugins.module_utils"
ADAPTER = "ansible_adapter"
# Shared bases drivers build on (not drivers themselves): the interface and the bridge+veth core.
SHARED_DRIVER_BASES = ("drivers.base", "drivers.bridged")
CORE = ("controller.session", "controller.result", "controller.undo")
MAX_FILE_LINES = 600
MAX_CLASS_LINES = 400


def _python_files(top):
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for name in sorted(filenames):
            if name.endswith(".py"):
                yield os.path.join(dirpath, name)


def _module_name(path):
    """``controller.session`` for ``plugins/module_utils/controller/session.py``."""
    rel = os.path.relpath(path, ENGINE)[:-3].replace(os.sep, ".")
    return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


def _engine_modules():
    return {_module_name(p): p for p in _python_files(ENGINE)}


def _imports(module, path, known):
    """Engine modules imported by ``module`` (anywhere in the file), and the names of
    outside top-level packages it imports."""
    tree = ast.parse(open(path).read(), path)
    is_package = path.endswith("__init__.py")
    inside, outside = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                name = alias.name
                if name.startswith(PACKAGE + "."):
                    inside.add(name[len(PACKAGE) + 1:])
                else:
                    outside.add(name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if (node.module or "").startswith(PACKAGE):
                    base = node.module[len(PACKAGE) + 1:]
                else:
                    outside.add((node.module or "").split(".")[0])
                    continue
            else:
                parts = module.split(".") if module else []
                package = parts if is_package else parts[:-1]
                package = package[:len(package) - (node.level - 1)]
                base = ".".join(package + ([node.module] if node.module else []))
            if base:
                inside.add(base)
            for alias in node.names:
                candidate = "%s.%s" % (base, alias.name) if base else alias.name
                if candidate in known:
                    inside.add(candidate)
    return {m for m in inside if m in known}, outside


@pytest.fixture(scope="module")
def graph():
    known = _engine_modules()
    return {m: _imports(m, p, known) for m, p in known.items()}


def test_the_engine_never_imports_ansible_but_through_the_adapter(graph):
    offenders = sorted(m for m, (dummy, outside) in graph.items()
                       if "ansible" in outside and m != ADAPTER)
    assert offenders == []
    assert "ansible" in graph[ADAPTER][1]


def test_drivers_never_import_the_firewall_or_each_other(graph):
    bad = []
    for module, (inside, dummy) in graph.items():
        if not module.startswith("drivers.") or module == "drivers":
            continue
        for target in inside:
            if target.startswith("firewall") or (
                    target.startswith("drivers.") and target not in SHARED_DRIVER_BASES):
                bad.append((module, target))
    assert bad == []


def test_only_the_controller_package_imports_the_store(graph):
    importers = sorted(m for m, (inside, dummy) in graph.items() if "store" in inside)
    assert importers and all(m.startswith("controller.") for m in importers), importers


def test_no_import_cycles(graph):
    edges = {m: {t for t in inside if t != m} for m, (inside, dummy) in graph.items()}
    # a package's __init__ importing its own submodules is how packages export names
    for module in edges:
        edges[module] = {t for t in edges[module] if not (t.startswith(module + ".")
                                                          and module in graph)}
    state, cycles = {}, []

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_the_controller_core_imports_no_object_file(graph):
    for module in CORE:
        inside = graph[module][0]
        assert {t for t in inside if t.startswith("controller.")} <= set(CORE), module


def _instance_attributes(cls):
    """Attributes assigned as ``self.x = ...`` anywhere in ``cls`` and its bases."""
    names = set()
    for klass in cls.__mro__:
        if klass is object:
            continue
        tree = ast.parse(open(importlib.import_module(klass.__module__).__file__).read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name == klass.__name__:
                for sub in ast.walk(node):
                    if (isinstance(sub, ast.Attribute) and isinstance(sub.ctx, ast.Store)
                            and isinstance(sub.value, ast.Name) and sub.value.id == "self"):
                        names.add(sub.attr)
    return names


def _controller_classes():
    out = []
    directory = os.path.join(ENGINE, "controller")
    for path in _python_files(directory):
        module = importlib.import_module("%s.%s" % (PACKAGE, _module_name(path)))
        tree = ast.parse(open(path).read(), path)
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and node.name != "Engine":
                out.append((getattr(module, node.name), node))
    return out


def test_controller_classes_form_a_ladder_nothing_calls_upward():
    """A method may use ``self.x`` only when ``x`` is defined by its own class or a
    class below it: a call that only the assembled Engine could resolve is upward."""
    upward = []
    for cls, node in _controller_classes():
        allowed = _instance_attributes(cls) | {n for k in cls.__mro__ for n in vars(k)}
        if dataclasses.is_dataclass(cls):
            allowed |= {f.name for f in dataclasses.fields(cls)}
        for sub in ast.walk(node):
            if (isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name)
                    and sub.value.id == "self" and sub.attr not in allowed):
                upward.append("%s uses self.%s (line %d)" % (cls.__name__, sub.attr,
                                                             sub.lineno))
    assert upward == []


def test_files_and_classes_are_small_and_say_what_they_hold():
    too_long, no_docstring = [], []
    for path in _python_files(PLUGINS):
        text = open(path).read()
        lines = text.count("\n")
        if lines > MAX_FILE_LINES:
            too_long.append("%s: %d lines" % (os.path.relpath(path, ROOT), lines))
        tree = ast.parse(text, path)
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                size = node.end_lineno - node.lineno + 1
                if size > MAX_CLASS_LINES:
                    too_long.append("%s: class %s %d lines"
                                    % (os.path.relpath(path, ROOT), node.name, size))
        if path.startswith(ENGINE + os.sep) and not (ast.get_docstring(tree) or "").strip():
            no_docstring.append(os.path.relpath(path, ROOT))
    assert too_long == []
    assert no_docstring == []


def test_the_architecture_map_names_only_paths_that_exist():
    """Every path ``docs/architecture.md`` names exists: from the repository root or
    from ``plugins/module_utils``; a bare file name in a folder's line or in the ladder
    exists in that folder, the controller or the engine."""
    import re
    text = open(os.path.join(ROOT, "docs", "architecture.md")).read()
    bases = [ROOT, ENGINE]
    missing = []
    for token in re.findall(r"`([^`\s]+)`", text):
        if "<" in token or "/" not in token:
            continue  # bare names: below
        token = token.rstrip("/")
        if not any(os.path.exists(os.path.join(b, token)) for b in bases):
            missing.append(token)
    folders = [os.path.join(ENGINE, d) for d in ("controller", "drivers", "firewall",
                                                 "netns", "ipam", "ports", "dns",
                                                 "dns/resolver")]
    folders += [os.path.join(PLUGINS, d) for d in ("modules", "connection", "doc_fragments")]
    for name in set(re.findall(r"(?<![\w/.-])([a-z_]+\.py)\b", text)):
        if not any(os.path.exists(os.path.join(d, name)) for d in folders + bases):
            missing.append(name)
    assert sorted(missing) == []
