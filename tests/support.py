"""Plain helpers shared by test modules (fixtures live in conftest.py)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def import_file(path, name: str):
    """Import the .py file at ``path`` as a module called ``name`` (registered in sys.modules,
    which dataclasses and pickling look up). Exercise and solution files are not a package."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def add_fake_lesson(monkeypatch, slug: str, number: int = 90, **lists):
    """Add a lesson ``slug`` to the course map whose package is built in memory: each keyword
    names a part module and gives its list, e.g. ``derivations=[demo]`` or ``charts=[chart]``."""
    import types

    from mechinterp_edu import course

    package = f"_fake_lesson_{slug}"
    monkeypatch.setitem(sys.modules, package, types.ModuleType(package))
    for part, items in lists.items():
        module = types.ModuleType(f"{package}.{part}")
        setattr(module, course.PART_LISTS[part], list(items))
        monkeypatch.setitem(sys.modules, module.__name__, module)
    lesson = course.Lesson(number, slug, f"Fake lesson {slug}", package=package)
    monkeypatch.setattr(course, "LESSONS", course.LESSONS + (lesson,))
    return lesson
