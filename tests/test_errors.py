"""The error tree drawn in errors.py's docstring is the tree the code defines."""

from __future__ import annotations

import importlib
import pkgutil
import re

import asyncmig
from asyncmig import errors

# One drawn line: the tree's branches, a class name, and its exit code.
_LINE = re.compile(r"^(?P<indent>[ │├└─]*)(?P<name>[A-Z]\w+)\s+(?P<code>\d+)?")


def _drawing() -> dict[str, tuple[str | None, int | None]]:
    """Each drawn class: its drawn parent and exit code."""
    doc = errors.__doc__ or ""
    body = doc.split("AsyncmigError                          exit code", 1)[1]
    drawn: dict[str, tuple[str | None, int | None]] = {"AsyncmigError": (None, None)}
    parents: list[tuple[int, str]] = [(0, "AsyncmigError")]
    for line in body.splitlines():
        found = _LINE.match(line.removeprefix("    "))
        if found is None or "──" not in found["indent"]:
            continue
        depth = len(found["indent"])
        while parents and parents[-1][0] >= depth:
            parents.pop()
        code = int(found["code"]) if found["code"] else None
        drawn[found["name"]] = (parents[-1][1], code)
        parents.append((depth, found["name"]))
    return drawn


def _every_subclass() -> set[type[errors.AsyncmigError]]:
    for module in pkgutil.walk_packages(asyncmig.__path__, "asyncmig."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    found: set[type[errors.AsyncmigError]] = set()
    todo = [errors.AsyncmigError]
    while todo:
        for sub in todo.pop().__subclasses__():
            found.add(sub)
            todo.append(sub)
    return found


def test_every_error_class_is_drawn_with_its_exit_code_and_parent() -> None:
    """Every AsyncmigError subclass defined anywhere in asyncmig lives in errors.py, is
    drawn in its docstring under its real base class, and shows its own exit code."""
    drawn = _drawing()
    for cls in _every_subclass():
        assert cls.__module__ == "asyncmig.errors", f"{cls.__name__} lives in {cls.__module__}"
        assert cls.__name__ in drawn, f"{cls.__name__} is not in the drawing"
        parent, code = drawn[cls.__name__]
        assert parent == cls.__bases__[0].__name__, cls.__name__
        assert code == cls.exit_code, f"{cls.__name__}: drawn {code}, exits {cls.exit_code}"
    assert set(drawn) == {c.__name__ for c in _every_subclass()} | {"AsyncmigError"}
