"""KPI functions: pure, records or store rows in, numbers out. No I/O.

A KPI with no data returns ``None``, never 0: the metric is then absent and a
``*_samples`` gauge says why.
"""
