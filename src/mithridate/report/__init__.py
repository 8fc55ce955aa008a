"""Reports: self-contained HTML pages with inline figures."""

from mithridate.report.html import kpis, page, render_scan_report, table

__all__ = ["kpis", "page", "render_scan_report", "table"]
