"""Imports run one way: no module of the package imports, directly or through others, a module that imports it.

Every ``import`` / ``from … import`` of a keras_visrec module is an edge, at module level or inside a
function (a lazy import still ties the two designs together). A name taken from a package's face
(``__init__.py``) is followed to the module the face takes it from, so re-exports hide no cycle.
"""

import ast
import pathlib

import keras_visrec

ROOT = pathlib.Path(__file__).resolve().parents[1]
FOLDERS = {"keras_visrec": "keras_visrec", "zoo": "keras_visrec.zoo", "converters": "keras_visrec.converters",
           "tflite": "keras_visrec.tflite"}


def _modules():
    modules = {}
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join((package,) + parts)
            if folder == "keras_visrec" and parts and parts[0] in ("zoo", "converters", "tflite"):
                continue
            modules[name] = path
    return modules


def _imports(path, name, is_face):
    package = name if is_face else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                yield base, alias.name


def _graph():
    modules = _modules()
    faces = {name for name, path in modules.items() if path.name == "__init__.py"}
    lazy = dict(getattr(keras_visrec, "_LAZY", {}))
    face_names = {}
    for face in faces:
        for base, attr in _imports(modules[face], face, True):
            if attr and base in modules:
                face_names.setdefault(face, {})[attr] = base
    face_names.setdefault("keras_visrec", {}).update(lazy)

    def resolve(base, attr):
        if attr and f"{base}.{attr}" in modules:
            return f"{base}.{attr}"
        if base in faces and attr in face_names.get(base, {}):
            return resolve(face_names[base][attr], None)
        return base if base in modules else None

    edges = {}
    for name, path in modules.items():
        if name in faces:
            continue
        targets = set()
        for base, attr in _imports(path, name, False):
            target = resolve(base, attr)
            if target and target != name and target not in faces:
                targets.add(target)
        edges[name] = targets
    return edges


def _cycles(edges):
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for other in edges.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in edges:
        if node not in index:
            visit(node)
    return found


def test_the_package_has_no_import_cycle():
    edges = _graph()
    assert len(edges) > 40
    assert _cycles(edges) == []


def test_the_registry_and_the_checkpoint_readers_import_no_model_family():
    edges = _graph()
    families = {"keras_visrec.convnext", "keras_visrec.hrnet", "keras_visrec.cifar", "keras_visrec.adpc.model",
                "keras_visrec.upernet"}
    assert not edges["keras_visrec.registry"] & families
    for module, targets in edges.items():
        if module.startswith(("keras_visrec.converters.", "keras_visrec.zoo.")) and not module.endswith(".cli"):
            assert not targets & families, (module, targets & families)


def test_a_cycle_is_found_when_there_is_one():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
