"""Configuration: a YAML file plus ``PLATFORM_KPI_...`` environment overrides.

Everything is validated up front by pydantic. Unknown keys are errors, secrets
are :class:`~pydantic.SecretStr` (given inline, or as ``{env: NAME}`` or
``{file: /path}`` for Kubernetes secret mounts), and a bad config raises
:class:`ConfigError` whose message names the file, the field path and the
reason. Environment variables override the file, nested with ``__``:
``PLATFORM_KPI_SERVER__PORT=9100``.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import yaml
from pydantic import Field, ValidationError, create_model

from exporter.core.settings import ConfigBase, ServiceBase, StrictModel
from exporter.core.yamlfile import UniqueKeyLoader, format_validation_error, one_line
from exporter.domains import domains, needed, source_classes

if TYPE_CHECKING:
    from exporter.core.domain import Domain


class ConfigError(Exception):
    """The configuration is invalid. ``str()`` is the message to print."""

    def __init__(self, file: str, problems: list[str]) -> None:
        self.file = file
        self.problems = problems
        super().__init__(
            "\n".join(f"config error in {file}: {one_line(p)}" for p in problems)
            or f"config error in {file}"
        )


def _service_model(used: tuple[Domain, ...]) -> type[ServiceBase]:
    """A service of the catalog with these domains' ``services[]`` keys, in the registry's
    order: the bases are listed last first, since pydantic lays out fields from the deepest
    base up."""
    mixins = [d.service_fields for d in used if d.service_fields is not None]
    return cast(
        type[ServiceBase],
        create_model(
            "ServiceConfig",
            __base__=(*reversed(mixins), ServiceBase),
            __doc__="A service of the catalog: the identity every KPI joins on.",
            __module__=__name__,
        ),
    )


def _sources_model(used: tuple[Domain, ...]) -> type[StrictModel]:
    """One block per source kind of these domains, in the registry's order: a kind that is
    on by default (the probe) is there without being written; the others are absent until
    given."""
    fields: dict[str, Any] = {}
    for kind, cls in source_classes(used).items():
        model = cls.settings_model
        fields[kind] = (
            (model, Field(default_factory=model)) if cls.default_on else (model | None, None)
        )
    return create_model(
        "SourcesConfig",
        __base__=StrictModel,
        __doc__="One block per upstream.",
        __module__=__name__,
        **fields,
    )


def config_model(used: tuple[Domain, ...]) -> type[ConfigBase]:
    """The config model of these domains. It knows the domains it was built from (see
    :func:`exporter.domains.of`)."""
    return _models(used)[0]


@cache
def _models(
    used: tuple[Domain, ...],
) -> tuple[type[ConfigBase], type[ServiceBase], type[StrictModel]]:
    """(config, service, sources) models of these domains: the core keys re-typed with the
    assembled models (a variable cannot be an annotation, hence create_model), then each
    domain's sections, bases listed last first as above."""
    services = _service_model(used)
    sources = _sources_model(used)
    list_of: Any = list
    core = create_model(
        "CoreConfig",
        __base__=ConfigBase,
        __module__=__name__,
        services=(list_of[services], Field(default_factory=list)),
        sources=(sources, Field(default_factory=sources)),
    )
    model = cast(
        type[ConfigBase],
        create_model(
            "Config",
            __base__=(*reversed([d.section for d in used if d.section is not None]), core),
            __doc__="The whole configuration.",
            __module__=__name__,
        ),
    )
    model.domain_names = services.domain_names = frozenset(d.name for d in used)
    return model, services, sources


# The models of every domain, for what is not one file's config (the sandbox, the tests);
# built on first use, so the daemon of a config using few domains never imports the others.
_WHOLE = ("Config", "ServiceConfig", "SourcesConfig")


def __getattr__(name: str) -> Any:
    if name not in _WHOLE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return _models(domains())[_WHOLE.index(name)]


def _non_string_key(data: Any, path: tuple[str, ...]) -> str | None:
    """The path of the first mapping key that is not a string, if any."""
    if isinstance(data, dict):
        for key, value in data.items():
            if not isinstance(key, str):
                return ".".join(path) + f"[{key!r}]" if path else f"{key!r}"
            found = _non_string_key(value, (*path, key))
            if found is not None:
                return found
    elif isinstance(data, list):
        for i, value in enumerate(data):
            found = _non_string_key(
                value, (*path[:-1], f"{path[-1]}[{i}]") if path else (f"[{i}]",)
            )
            if found is not None:
                return found
    return None


def load_config(path: str | Path) -> ConfigBase:
    """Read, merge with the environment, and validate; raise ConfigError naming the problem."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(file, [f"cannot read file: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(file, [f"not UTF-8 text (byte {exc.start})"]) from None
    try:
        data = yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader: no arbitrary objects
    except yaml.YAMLError as exc:
        raise ConfigError(file, [f"invalid YAML: {' '.join(str(exc).split())}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(file, ["(top level): must be a mapping of sections"])
    bad_key = _non_string_key(data, ())
    if bad_key is not None:
        raise ConfigError(file, [f"{bad_key}: keys must be strings"])
    try:
        return config_model(needed(data))(**data)
    except ValidationError as exc:
        raise ConfigError(file, format_validation_error(exc)) from None


def masked(config: ConfigBase) -> dict[str, Any]:
    """The resolved config as plain data, with every secret shown as ``**********``."""
    return config.model_dump(mode="json")
