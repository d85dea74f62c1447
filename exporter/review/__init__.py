"""The weekly platform review: the five headline KPIs, every team and service, what
changed and the data's health, for one ISO week, from the stored history through the
domains' KPI functions; rendered as html, markdown or json (see docs/report.md)."""
