"""Live charts for the app and notebooks; see :mod:`mechinterp_edu.live.registry`."""
from mechinterp_edu.live.registry import LiveChart, all_charts, compute, get_chart, live_chart  # noqa: F401
