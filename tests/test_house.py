"""The package's layout rules, checked on the source: no fna_d2 module over ~400 lines, no
import cycle between fna_d2 modules (imports inside functions and under TYPE_CHECKING count too), dependencies in the
direction of docs/design.md (e.g. the report never reaches the pipeline, seeds never reach
remap, the adaptation trainer never reaches the search), every error class in fna_d2.errors,
and the tests use public names only."""
import ast
import os
import re


import fna_d2
import fna_d2.errors

PKG = os.path.dirname(os.path.abspath(fna_d2.__file__))
ROOT = os.path.dirname(PKG)
MAX_LINES = 400


def _modules():
    out = {}
    for d, _, files in os.walk(PKG):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(d, f)
                rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                name = rel[: -len(".__init__")] if rel.endswith(".__init__") else rel
                out[name] = path
    return out


MODULES = _modules()


def _imports(name, path):
    """fna_d2 modules that ``name`` imports anywhere in its file (resolved to modules)."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    is_pkg = path.endswith("__init__.py")
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                mod = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            if t in MODULES and t != name:
                found.add(t)
    return found


def test_no_module_is_over_the_limit():
    long = {n: sum(1 for _ in open(p, encoding="utf-8")) for n, p in MODULES.items()}
    assert {n: c for n, c in long.items() if c > MAX_LINES} == {}


def test_no_import_cycles():
    graph = {n: _imports(n, p) for n, p in MODULES.items()}
    # a package's __init__ re-exporting its submodules is an edge package -> submodule; a
    # submodule importing a sibling through the package is resolved to the sibling by
    # _imports only when it names it, so edges submodule -> own package are dropped here
    for n in graph:
        graph[n] = {d for d in graph[n] if not n.startswith(d + ".")}
    cycles = []
    state = {}

    def visit(n, stack):
        state[n] = 1
        stack.append(n)
        for d in sorted(graph[n]):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d, stack)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [])
    assert cycles == []


def _reachable(graph, start):
    seen, todo = set(), [start]
    while todo:
        for d in graph[todo.pop()]:
            if d not in seen:
                seen.add(d)
                todo.append(d)
    return seen


# (modules, prefixes they must never reach, directly or through others): the direction of the
# house (docs/design.md). Leaves import nothing of fna_d2 but the leaves below them.
ONE_WAY = [
    (("fna_d2.errors",), ("fna_d2.",)),
    (("fna_d2.utils",), ("fna_d2.",)),
    (("fna_d2.tasks",), ("fna_d2.",)),
    (("fna_d2.arch",), ("fna_d2.modeling", "fna_d2.remap", "fna_d2.cost", "fna_d2.latency",
                        "fna_d2.engine", "fna_d2.pipeline", "fna_d2.report", "fna_d2.seeds")),
    # torch only: what latency tables time, also on a box without detectron2
    (("fna_d2.blocks",), ("fna_d2.modeling", "fna_d2.config", "fna_d2.data", "fna_d2.remap",
                          "fna_d2.cost", "fna_d2.latency", "fna_d2.engine", "fna_d2.pipeline",
                          "fna_d2.report", "fna_d2.seeds", "fna_d2.checkpoint")),
    # python -m fna_d2.latency runs where only torch and fna_d2 are installed
    (("fna_d2.latency",), ("fna_d2.modeling", "fna_d2.config", "fna_d2.data", "fna_d2.seeds",
                           "fna_d2.remap", "fna_d2.cost", "fna_d2.checkpoint")),
    (("fna_d2.modeling",), ("fna_d2.engine", "fna_d2.pipeline", "fna_d2.cost", "fna_d2.latency",
                            "fna_d2.remap", "fna_d2.report", "fna_d2.checkpoint")),
    (("fna_d2.seeds",), ("fna_d2.remap", "fna_d2.engine", "fna_d2.pipeline")),
    (("fna_d2.remap", "fna_d2.cost", "fna_d2.latency"), ("fna_d2.engine", "fna_d2.pipeline",
                                                         "fna_d2.report")),
    (("fna_d2.engine.trainer", "fna_d2.engine.data", "fna_d2.engine.ddp"),
     ("fna_d2.engine.search", "fna_d2.engine.launch", "fna_d2.pipeline")),
    (("fna_d2.engine",), ("fna_d2.pipeline", "fna_d2.report")),
    (("fna_d2.report",), ("fna_d2.pipeline", "fna_d2.engine")),
    # the user's modules are imported before anything of fna_d2 is built
    (("fna_d2.user_imports",), ("fna_d2.modeling", "fna_d2.engine", "fna_d2.pipeline",
                                "fna_d2.cost", "fna_d2.data", "fna_d2.tools", "fna_d2.utils")),
    # the controls and tools stand on the library; nothing of it stands on them
    (("fna_d2.arch", "fna_d2.cost", "fna_d2.modeling", "fna_d2.engine", "fna_d2.remap"),
     ("fna_d2.controls", "fna_d2.tools")),
]


def test_dependencies_run_one_way():
    graph = {n: {d for d in _imports(n, p) if not n.startswith(d + ".")}
             for n, p in MODULES.items()}
    wrong = []
    for sources, banned in ONE_WAY:
        for n in graph:
            if not any(n == s or n.startswith(s + ".") for s in sources):
                continue
            for d in sorted(_reachable(graph, n)):
                own = any(d == s or d.startswith(s + ".") for s in sources)
                if not own and any(d == b.rstrip(".") or d.startswith(b if b.endswith(".")
                                                                      else b + ".") or d == b
                                   for b in banned):
                    wrong.append(f"{n} -> {d}")
    assert wrong == []


def test_every_exception_class_of_the_package_derives_from_fnaerror():
    offenders = []
    for name, path in MODULES.items():
        tree = ast.parse(open(path, encoding="utf-8").read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and re.search(r"(Error|Exception)$", node.name):
                if name != "fna_d2.errors" and node.name != "FNAError":
                    offenders.append(f"{name}.{node.name}")
    # every error class lives in fna_d2.errors, where test_utils checks the common base
    assert offenders == []


def test_tests_use_public_names():
    """No test reads a private attribute (``obj._name``) of fna_d2's objects or of the
    libraries' (a test's own helper classes may use ``self._name``)."""
    tests = os.path.join(ROOT, "tests")
    hits = []
    for f in sorted(os.listdir(tests)):
        if not f.endswith(".py"):
            continue
        path = os.path.join(tests, f)
        tree = ast.parse(open(path, encoding="utf-8").read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and re.match(r"^_[a-z]", node.attr):
                if not (isinstance(node.value, ast.Name) and node.value.id == "self"):
                    hits.append(f"{f}:{node.lineno}: .{node.attr}")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fna_d2"):
                hits += [f"{f}:{node.lineno}: import {a.name}" for a in node.names
                         if re.match(r"^_[a-z]", a.name)]
    assert hits == []
