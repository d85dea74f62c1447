"""FOCUS 1.0, 1.1 and 1.2 exports: the version told from the columns (or configured),
the same totals from each, a missing required column named with its file, and an
unsupported version said plainly.

Columns each version adds: the FOCUS changelog,
https://github.com/FinOps-Open-Cost-and-Usage-Spec/FOCUS_Spec/blob/working_draft/CHANGELOG.md
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from exporter.domains.cost.allocation import Allocator, ServiceRule
from exporter.domains.cost.focus_schema import REQUIRED
from exporter.domains.cost.focus_versions import ADDED, check, detect
from exporter.domains.cost.sources.focus_reader import FocusFormatError, read_file
from tests.domains.cost.test_focus_source import HEADER, line

ALLOCATOR = Allocator([ServiceRule("checkout", "payments", tags={"service": "checkout"})])
ROWS = [line(9, 9, "2026-11-20", service="checkout"), line(5, 4, "2026-11-21", service="checkout")]


def write(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def with_columns(extra: tuple[str, ...]) -> tuple[list[str], list[list[str]]]:
    """The sample rows with ``extra`` (empty) columns appended, as a newer export has."""
    return [*HEADER, *extra], [[*r, *([""] * len(extra))] for r in ROWS]


def totals(path: Path, version: str = "auto") -> tuple[str, float, float]:
    result = read_file(path, ALLOCATOR, focus_version=version)
    return (
        result.version,
        sum(d.billed for d in result.days),
        sum(d.effective for d in result.days),
    )


class TestVersions:
    @pytest.mark.parametrize(
        ("extra", "version"),
        [
            ((), "1.0"),
            (("BillingAccountType",), "1.0"),  # Azure's 1.0 export has it already
            (("ServiceSubcategory", "CommitmentDiscountQuantity", "SkuMeter"), "1.1"),
            (("ServiceSubcategory", "BillingAccountType", "SubAccountType", "InvoiceId"), "1.2"),
        ],
    )
    def test_each_version_is_told_and_read_alike(
        self, tmp_path: Path, extra: tuple[str, ...], version: str
    ) -> None:
        """Billed 9 + 5 = 14, effective 9 + 4 = 13, whatever the version."""
        header, rows = with_columns(extra)
        path = write(tmp_path / "export.csv", header, rows)
        assert totals(path) == (version, 14.0, 13.0)

    def test_the_added_columns_of_each_version_tell_it(self) -> None:
        for version, columns in ADDED.items():
            assert detect([*REQUIRED, columns[0]]) == version
        assert detect(REQUIRED) == "1.0"

    def test_a_configured_version_is_used(self, tmp_path: Path) -> None:
        path = write(tmp_path / "export.csv", HEADER, ROWS)
        assert totals(path, "1.2") == ("1.2", 14.0, 13.0)


class TestRejected:
    @pytest.mark.parametrize("column", ["ChargeCategory", "ChargePeriodEnd", "EffectiveCost"])
    def test_a_missing_required_column_names_the_file_and_the_column(
        self, tmp_path: Path, column: str
    ) -> None:
        i = HEADER.index(column)
        header = [h for h in HEADER if h != column]
        rows = [r[:i] + r[i + 1 :] for r in ROWS]
        path = write(tmp_path / "export.csv", header, rows)
        with pytest.raises(FocusFormatError) as err:
            read_file(path, ALLOCATOR, label="s3://bucket/exports/export.csv")
        assert str(err.value) == (
            f"s3://bucket/exports/export.csv: not a FOCUS 1.0 export: missing column(s) {column}"
        )

    def test_an_unsupported_version_is_said_plainly(self, tmp_path: Path) -> None:
        path = write(tmp_path / "export.csv", HEADER, ROWS)
        with pytest.raises(FocusFormatError) as err:
            read_file(path, ALLOCATOR, label="export.csv", focus_version="1.3")
        assert str(err.value) == (
            "export.csv: FOCUS version 1.3 is not supported (supported: 1.0, 1.1, 1.2)"
        )

    def test_check_names_every_missing_column(self) -> None:
        with pytest.raises(
            ValueError,
            match=r"f\.csv: not a FOCUS 1\.1 export: missing column\(s\) "
            r"ChargePeriodEnd, ChargeCategory",
        ):
            check(
                "f.csv",
                [
                    "BilledCost",
                    "EffectiveCost",
                    "BillingCurrency",
                    "ChargePeriodStart",
                    "ServiceSubcategory",
                ],
            )
