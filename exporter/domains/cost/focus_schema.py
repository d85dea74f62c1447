"""The FOCUS billing export columns: what the reader reads, and the layout exports have.

FOCUS 1.0, 1.1 and 1.2 (the columns read are the same in the three; which version a file
is, and what each adds: :mod:`exporter.domains.cost.focus_versions`; ``ServiceProviderName``
is read where ``ProviderName`` is absent). One list, used by the reader, the sandbox's
export, the tests and the ingest benchmark.
"""

from __future__ import annotations

#: Every column the reader reads, where present.
COLUMNS = (
    "BilledCost",
    "EffectiveCost",
    "BillingCurrency",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "ChargeCategory",
    "ChargeClass",
    "ServiceName",
    "ServiceCategory",
    "SubAccountId",
    "RegionId",
    "ResourceId",
    "Tags",
    "ProviderName",
    "ServiceProviderName",
)

#: The columns without which a file is not read: mandatory in every supported version.
REQUIRED = (
    "BilledCost",
    "EffectiveCost",
    "BillingCurrency",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "ChargeCategory",
)

#: The header of a FOCUS 1.0 export as the sandbox writes it (and the tests and the
#: benchmark): the read columns in export order, ``ProviderName`` for the provider.
EXPORT_HEADER = (
    "BilledCost",
    "EffectiveCost",
    "BillingCurrency",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "ChargeCategory",
    "ChargeClass",
    "ProviderName",
    "ServiceName",
    "ServiceCategory",
    "SubAccountId",
    "RegionId",
    "ResourceId",
    "Tags",
)
