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
