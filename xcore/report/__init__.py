"""``xai report``: one self-contained HTML page per run (summary tables, curves, overlays, analysis figures).

Floor 7 of the layering (above :mod:`xcore.pipeline`, whose jobs reopen a run's dataset); pure xcore, no Ray or
Prefect.
"""

from __future__ import annotations

from xcore.report.build import write_report

__all__ = ["write_report"]
