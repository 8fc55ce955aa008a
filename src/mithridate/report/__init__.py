"""Reports: results rendered as self-contained HTML pages with inline figures. Results (the scan's
``Report``, validation's ``Verdict``) hold data and write their data files; only this package renders.

- :mod:`.page`: what every page shares; :mod:`.plots`: the figures;
- :mod:`.scan`: the scan's page (:func:`write_scan_report`); :mod:`.validation`: a validation's;
  :mod:`.evaluation`: the attack x defence matrix's.
"""

from mithridate.report.page import kpis, page, table, write_page
from mithridate.report.scan import render_scan_report, write_scan_report

__all__ = ["kpis", "page", "render_scan_report", "table", "write_page", "write_scan_report"]
