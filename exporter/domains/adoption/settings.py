"""Settings of the adoption domain: the platform's capabilities and the rules that detect them."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from exporter.core.settings import Duration, Name, Section, StrictModel


class GatewayTrafficRule(StrictModel):
    """Adopted when the service served traffic through the gateway within ``window``."""

    rule: Literal["gateway_traffic"]
    window: Duration = 30 * 86400.0
    min_requests: int = Field(default=1, ge=1)


class PipelineTemplateRule(StrictModel):
    """Adopted when a pipeline run of the service used the platform's template within ``window``:
    a GitHub workflow path (or reusable workflow), a GitLab ``include``, or a pipeline
    (workflow, job) name that only the template defines; all matched as globs."""

    rule: Literal["pipeline_template"]
    window: Duration = 30 * 86400.0
    workflow_paths: list[str] = Field(default_factory=list)
    gitlab_includes: list[str] = Field(default_factory=list)
    pipeline_names: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _something(self) -> PipelineTemplateRule:
        if not (self.workflow_paths or self.gitlab_includes or self.pipeline_names):
            raise ValueError(
                "list at least one of workflow_paths, gitlab_includes or pipeline_names"
            )
        return self


class CatalogRule(StrictModel):
    """Adopted when the catalog entry carries the annotation (with ``value``, if given) or the tag."""

    rule: Literal["catalog"]
    annotation: str | None = None
    value: str | None = None
    tag: str | None = None

    @model_validator(mode="after")
    def _one(self) -> CatalogRule:
        if (self.annotation is None) == (self.tag is None):
            raise ValueError("give exactly one of annotation or tag")
        if self.value is not None and self.annotation is None:
            raise ValueError("value needs an annotation")
        return self


class ProbeRule(StrictModel):
    """Adopted when the service has at least one synthetic probe configured."""

    rule: Literal["probe"]


CapabilityRule = Annotated[
    GatewayTrafficRule | PipelineTemplateRule | CatalogRule | ProbeRule,
    Field(discriminator="rule"),
]


class CapabilityConfig(StrictModel):
    """A platform offering whose adoption is measured, and the rule that detects it."""

    name: Name
    description: str = ""
    detect: CapabilityRule
    # Cost-allocation services whose cost is this capability's running cost (cost per adopting service).
    cost_services: list[Name] = Field(default_factory=list)


class AdoptionSection(Section):
    """The ``capabilities:`` section."""

    capabilities: list[CapabilityConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_capabilities(self) -> Self:
        caps = [c.name for c in self.capabilities]
        dupes = sorted({n for n in caps if caps.count(n) > 1})
        if dupes:
            raise ValueError(f"capability names must be unique: {', '.join(dupes)}")
        return self

    def service_refs(self) -> list[tuple[str, str]]:
        return [
            *super().service_refs(),
            *(
                (f"capabilities[{i}].cost_services[{j}]", name)
                for i, cap in enumerate(self.capabilities)
                for j, name in enumerate(cap.cost_services)
            ),
        ]
