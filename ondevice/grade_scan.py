"""What of a student's code the grader runs, and what it flags (labs/README.md, "What the grader
trusts").

In the grading run (:mod:`ondevice.grade_run`) the given cells (setup, helpers, checks) come
from the gradebook, and every cell of the student only contributes its **definitions**: the
top-level statements

- ``def``, ``async def``, ``class`` (decorators included);
- ``import`` and ``from ... import``;
- assignments whose targets are plain names (``LEVELS = ...``, ``a, b = ...``);

that bind no name a given cell binds or a builtin (``max``, ``print``, ...) unless they bind
it to the very same import. Everything else (expressions, loops, ``with``, attribute or item
assignments, magics) is left out and listed. So a cell cannot act at the top level: patching the
checks or the kernel, reading files, ``exec``-ing other code all need a statement that is not a
definition.

Code that does run when a check calls it (a function body, a class body, a default value)
is scanned for what an exercise never needs; each hit is a **flag** for the teacher, with its
line: the names in :data:`FLAG_NAMES`, the attributes in :data:`FLAG_ATTRIBUTES`, imports of
:data:`FLAG_MODULES`, ``global`` / ``nonlocal`` of a given name, and assignments to an
attribute of a given name or module (``kernels.pack_bits_reference = ...``). Left-out
statements are scanned too: a cheat that the filter defeats is still worth a teacher's look.
"""

from __future__ import annotations

import ast
import builtins
from dataclasses import dataclass, field

FLAG_NAMES = frozenset({
    "get_ipython", "exec", "eval", "compile", "__import__", "globals", "vars", "locals", "setattr",
    "delattr", "open", "breakpoint", "__builtins__", "Checks", "labcheck",
})
FLAG_ATTRIBUTES = frozenset({
    "__dict__", "__globals__", "__code__", "__closure__", "__builtins__", "__subclasses__",
    "__bases__", "__mro__", "__setattr__", "__delattr__", "__enter__", "__exit__", "f_back",
    "f_globals", "f_locals", "f_builtins", "tb_frame", "gi_frame", "cr_frame", "ag_frame",
    "set_custom_exc", "CustomTB", "custom_exceptions", "showtraceback", "excepthook", "user_ns",
    "user_global_ns", "run_cell", "modules",
})
FLAG_MODULES = frozenset({
    "os", "sys", "subprocess", "shutil", "ctypes", "cffi", "gc", "inspect", "importlib", "builtins",
    "IPython", "ipykernel", "jupyter_client", "pathlib", "io", "socket", "urllib", "http",
    "requests", "pickle", "marshal", "types", "code", "codeop", "runpy", "signal", "threading",
    "multiprocessing", "concurrent", "atexit", "glob", "nbformat", "nbgrader", "tempfile", "mmap",
    "pty", "linecache", "zipimport", "pkgutil", "sqlite3", "ondevice.labcheck", "ondevice.grade",
    "ondevice.grade_guard", "ondevice.grade_run", "ondevice.grade_scan", "ondevice.labs_nbgrader",
})
BUILTIN_NAMES = frozenset(dir(builtins))


@dataclass
class Scanned:
    """One student cell as the grader runs it."""

    source: str  # what runs: the definitions, each on its own lines, the rest blanked
    ignored: list[str] = field(default_factory=list)  # "line 3: print(...)" per left-out statement
    flags: list[str] = field(default_factory=list)  # "line 5: uses open" per suspicious construct


def _parse(source: str) -> ast.Module:
    return compile(source, "<cell>", "exec", flags=ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
                   dont_inherit=True)


def _bound(node: ast.stmt) -> list[tuple[str, tuple | None]]:
    """(name, import key or None) for each name a top-level statement binds."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [(node.name, None)]
    if isinstance(node, ast.Import):
        return [((a.asname or a.name.split(".")[0]), ("import", a.name, a.asname)) for a in node.names]
    if isinstance(node, ast.ImportFrom):
        return [((a.asname or a.name), ("from", node.module, node.level, a.name, a.asname)) for a in node.names]
    names = []
    for target in _targets(node):
        names += [(n.id, None) for n in ast.walk(target) if isinstance(n, ast.Name)]
    return names


def _targets(node: ast.stmt) -> list[ast.expr]:
    if isinstance(node, ast.Assign):
        return list(node.targets)
    if isinstance(node, (ast.AnnAssign, ast.AugAssign, ast.For, ast.AsyncFor)):
        return [node.target]
    if isinstance(node, (ast.With, ast.AsyncWith)):
        return [item.optional_vars for item in node.items if item.optional_vars is not None]
    return []


def trusted_bindings(sources) -> dict[str, set]:
    """The names the given cells bind at the top level, each with the imports that bind it
    (an empty set: bound otherwise)."""
    out: dict[str, set] = {}
    for source in sources:
        try:
            tree = _parse(source)
        except SyntaxError:
            continue
        for node in _module_level(tree.body):
            for name, key in _bound(node):
                out.setdefault(name, set())
                if key is not None:
                    out[name].add(key)
    return out


def _module_level(body):
    """The statements that run at a cell's top level, those inside ``with``, ``for``, ``if`` and
    ``try`` blocks included (not the bodies of functions and classes)."""
    for node in body:
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for name in ("body", "orelse", "finalbody"):
                yield from _module_level(getattr(node, name, []))
            for handler in getattr(node, "handlers", []):
                yield from _module_level(handler.body)


def _plain_targets(node: ast.stmt) -> bool:
    def plain(t):
        return isinstance(t, ast.Name) or (isinstance(t, (ast.Tuple, ast.List)) and all(map(plain, t.elts)))
    targets = _targets(node)
    return bool(targets) and all(plain(t) for t in targets)


def _is_definition(node: ast.stmt) -> bool:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom)):
        return True
    return isinstance(node, (ast.Assign, ast.AnnAssign)) and _plain_targets(node)


def _first_line(node: ast.stmt) -> int:
    decorators = getattr(node, "decorator_list", [])
    return min([node.lineno] + [d.lineno for d in decorators])


def _root_name(node: ast.expr) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _module_flag(name: str | None) -> bool:
    return bool(name) and any(name == m or name.startswith(m + ".") for m in FLAG_MODULES)


def flags_in(tree: ast.AST, given: set[str]) -> list[str]:
    """One "line N: ..." per suspicious construct in ``tree`` (see the module docstring)."""
    imported = {name for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                for name, _ in _bound(node)}
    out = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Name) and node.id in FLAG_NAMES:
            out.append((line, f"uses {node.id}"))
        elif isinstance(node, ast.Attribute):
            if node.attr in FLAG_ATTRIBUTES or node.attr in FLAG_NAMES:
                out.append((line, f"uses the attribute {node.attr}"))
            root = _root_name(node)
            if isinstance(node.ctx, (ast.Store, ast.Del)) and (root in given or root in imported):
                out.append((line, f"changes {ast.unparse(node)}, which {'a given cell' if root in given else 'a module'} defines"))
        elif isinstance(node, ast.Import):
            out += [(line, f"imports {a.name}") for a in node.names if _module_flag(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and _module_flag(node.module):
            out.append((line, f"imports from {node.module}"))
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            out += [(line, f"declares {name} global") for name in node.names if name in given]
    return [f"line {line}: {what}" for line, what in sorted(set(out))]


def _clash(node: ast.stmt, given: dict[str, set]) -> str | None:
    """The given name (or builtin) this definition would rebind, if any."""
    for name, key in _bound(node):
        if name in given and not (key is not None and key in given[name]):
            return name
        if name in BUILTIN_NAMES and name not in given:
            return name
    return None


def definitions(source: str, given: dict[str, set]) -> Scanned:
    """The student cell ``source`` as the grader runs it (see the module docstring); ``given``:
    :func:`trusted_bindings` of the given cells."""
    lines = source.split("\n")
    kept_lines = list(lines)
    ignored = []
    for number, line in enumerate(lines, 1):  # IPython magics and shell escapes
        if line.lstrip().startswith(("%", "!")):
            kept_lines[number - 1] = ""
            ignored.append(f"line {number}: {line.strip()[:60]} (a magic)")
    text = "\n".join(kept_lines)
    try:
        tree = _parse(text)
    except SyntaxError as error:
        message = f"{error.msg} (line {error.lineno})"
        return Scanned(f"raise SyntaxError({message!r})", ignored + [f"the cell does not parse: {message}"])
    flags = flags_in(tree, set(given))
    blank: set[int] = set()
    shared = False
    for node in tree.body:
        span = range(_first_line(node), node.end_lineno + 1)
        why = None if _is_definition(node) else "not a definition"
        clash = _clash(node, given) if why is None else None
        if clash:
            why = f"it would rebind {clash}, which {'a given cell' if clash in given else 'Python'} defines"
        if why is None:
            continue
        if any(other is not node and (set(span) & set(range(_first_line(other), other.end_lineno + 1)))
               for other in tree.body):
            shared = True  # statements separated by ';' on one line
        blank.update(span)
        ignored.append(f"line {span[0]}: {ast.unparse(node).splitlines()[0][:60]} ({why})")
    if shared:  # rebuild from the kept statements (line numbers change)
        kept = [n for n in tree.body if not blank.intersection(range(_first_line(n), n.end_lineno + 1))]
        return Scanned(ast.unparse(ast.Module(body=kept, type_ignores=[])), ignored, flags)
    out = [("" if number in blank else line) for number, line in enumerate(kept_lines, 1)]
    return Scanned("\n".join(out), ignored, flags)


__all__ = ["FLAG_ATTRIBUTES", "FLAG_MODULES", "FLAG_NAMES", "Scanned", "definitions", "flags_in",
           "trusted_bindings"]
