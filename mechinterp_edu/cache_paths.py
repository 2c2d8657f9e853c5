"""Where the course's on-disk caches live (grader cases, lesson facts).

Each cache has an environment variable: a path moves it, ``off`` (or 0/none/false) disables it;
unset, it lives in the user's cache folder (``~/.cache/mechinterp_edu/<name>`` on Linux).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional


def cache_dir(env_var: str, name: str) -> Optional[Path]:
    """The folder of the cache ``name``, or None when ``env_var`` turns it off."""
    value = os.environ.get(env_var, "").strip()
    if value.lower() in ("off", "0", "none", "false"):
        return None
    if value:
        return Path(value).expanduser()
    from platformdirs import user_cache_path

    return user_cache_path("mechinterp_edu") / name
