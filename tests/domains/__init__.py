"""Tests of each domain, one folder per domain, beside its KPI tests."""
