"""Rendering of stored safety reports (HTML); no ML imports, the figures arrive as base64 PNGs."""

from api.reports.html import render_report_html

__all__ = ["render_report_html"]
