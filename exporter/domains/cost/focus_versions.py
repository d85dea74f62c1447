"""The FOCUS versions this exporter reads, the columns it needs from each, and how a
file's version is told. Pure functions.

FOCUS 1.0, 1.1 and 1.2 keep every column read here; each release adds columns
(the specification's changelog,
https://github.com/FinOps-Open-Cost-and-Usage-Spec/FOCUS_Spec/blob/working_draft/CHANGELOG.md):
1.1 adds ``ServiceSubcategory``, ``CommitmentDiscountQuantity``,
``CommitmentDiscountUnit``, ``CapacityReservationId``, ``CapacityReservationStatus``,
``SkuMeter`` and ``SkuPriceDetails``; 1.2 adds ``BillingAccountType``,
``SubAccountType``, ``InvoiceId`` and the ``PricingCurrency*`` columns. A file's
version is the one configured (``sources.focus.focus_version``) or, with ``auto``,
the newest whose added columns it carries (``BillingAccountType`` alone does not
count: Azure's FOCUS 1.0 export has it already).
"""

from __future__ import annotations

from collections.abc import Collection

from exporter.domains.cost.focus_schema import REQUIRED

SUPPORTED = ("1.0", "1.1", "1.2")
# Columns each version adds that tell it apart (see the module docstring).
ADDED: dict[str, tuple[str, ...]] = {
    "1.1": (
        "ServiceSubcategory",
        "CommitmentDiscountQuantity",
        "CommitmentDiscountUnit",
        "CapacityReservationId",
        "CapacityReservationStatus",
        "SkuMeter",
        "SkuPriceDetails",
    ),
    "1.2": (
        "SubAccountType",
        "InvoiceId",
        "PricingCurrency",
        "PricingCurrencyContractedUnitPrice",
        "PricingCurrencyEffectiveCost",
        "PricingCurrencyListUnitPrice",
    ),
}


class VersionError(ValueError):
    """A file cannot be read as a supported FOCUS version; the message says why."""


def detect(columns: Collection[str]) -> str:
    """The newest supported version whose added columns ``columns`` include."""
    for version in reversed(SUPPORTED):
        if any(c in columns for c in ADDED.get(version, ())):
            return version
    return SUPPORTED[0]


def check(label: str, columns: Collection[str], declared: str = "auto") -> str:
    """The file's FOCUS version; VersionError naming the file and the problem (an
    unsupported version, or the required columns it lacks)."""
    if declared != "auto" and declared not in SUPPORTED:
        raise VersionError(
            f"{label}: FOCUS version {declared} is not supported "
            f"(supported: {', '.join(SUPPORTED)})"
        )
    version = detect(columns) if declared == "auto" else declared
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise VersionError(
            f"{label}: not a FOCUS {version} export: missing column(s) {', '.join(missing)}"
        )
    return version
