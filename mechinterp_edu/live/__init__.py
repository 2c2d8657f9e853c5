"""Live charts for the app and notebooks; see :mod:`mechinterp_edu.live.registry`."""
from mechinterp_edu.live.registry import LiveChart, all_charts, chart_decorator, compute, get_chart  # noqa: F401
