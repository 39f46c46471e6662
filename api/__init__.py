"""The web layer: REST API (``/api/v1``), the published tree (``/repos/``) and HTML pages."""
