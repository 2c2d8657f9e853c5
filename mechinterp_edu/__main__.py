import sys

# What the course installs into .venv; missing one means the wrong Python is running.
_DEPENDENCIES = {"torch", "transformer_lens", "transformers", "numpy", "sympy", "altair", "pandas",
                 "streamlit", "nbformat", "nbclient", "tqdm", "yaml", "einops", "vl_convert"}


def _run() -> int:
    try:
        from mechinterp_edu.cli import main
        return main()
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in _DEPENDENCIES:
            raise
        print(f"error: the Python at {sys.executable} lacks {exc.name!r}, which mechinterp-edu needs. "
              "Run `make setup` once, then use `.venv/bin/python -m mechinterp_edu ...` "
              "(or `. .venv/bin/activate` first).", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(_run())
