"""No import cycles among mmserve's modules (``tools/import_cycles.py``), function-level and
``TYPE_CHECKING`` imports included; and the finder does see the cycles such imports close."""

from __future__ import annotations

from pathlib import Path

from tools import import_cycles


def test_the_first_party_packages_have_no_import_cycle():
    assert import_cycles.cycles() == [], import_cycles.report()


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_cycle_closed_inside_a_function_is_found(tmp_path):
    root = _package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "from pkg import b\n",
            "b.py": "def later():\n    from pkg.a import thing\n",
            "c.py": "from . import a\n",  # imports into the cycle, is not part of it
        },
    )
    assert import_cycles.cycles(root, ("pkg",)) == [["pkg.a", "pkg.b"]]
    assert "pkg/b.py:2  pkg.b -> pkg.a" in import_cycles.report(root, ("pkg",))


def test_type_checking_and_relative_imports_count(tmp_path):
    root = _package(
        tmp_path,
        {
            "__init__.py": "",
            "sub/__init__.py": "from .x import X\n",
            "sub/x.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..y import Y\nX = 1\n",
            "y.py": "import pkg.sub\nY = 2\n",
        },
    )
    assert import_cycles.cycles(root, ("pkg",)) == [["pkg.sub", "pkg.sub.x", "pkg.y"]]


def test_a_tree_without_cycles_has_none(tmp_path):
    root = _package(tmp_path, {"__init__.py": "", "a.py": "import pkg.b\n", "b.py": "import json\n"})
    assert import_cycles.cycles(root, ("pkg",)) == []
