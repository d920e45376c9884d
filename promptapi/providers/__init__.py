"""Model aliases and the provider adapters behind them."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from promptapi import names, safeyaml
from promptapi.config import check_env_var_name, check_http_url
from promptapi.errors import ConfigError, ProviderUnavailable
from promptapi.providers import anthropic
from promptapi.providers.anthropic import AnthropicProvider
from promptapi.providers.base import (
    Backoff,
    CircuitConfig,
    Completion,
    CompletionRequest,
    Deployment,
    ModelConfig,
    Provider,
    Routing,
    StreamDelta,
    Timeouts,
)
from promptapi.providers.gemini import GeminiProvider
from promptapi.providers.mock import MockProvider
from promptapi.providers.openai import AzureOpenAIProvider, OpenAIProvider

log = logging.getLogger("promptapi.providers")

ADAPTERS: dict[str, Callable[[ModelConfig], Provider]] = {
    "openai": OpenAIProvider,
    "mock": MockProvider,
    "anthropic": AnthropicProvider,
    "gemini": GeminiProvider,
    "azure": AzureOpenAIProvider,
}
# Alias keys only some providers take.
_PROVIDER_KEYS = {
    "deployment": ("azure",),
    "api_version": ("azure", "anthropic", "gemini"),
    "max_tokens_field": ("openai", "azure"),
}
MAX_TOKENS_FIELDS = ("max_completion_tokens", "max_tokens")
_ALIAS_KEYS = {
    "provider",
    "model",
    "base_url",
    "api_key_env",
    "params",
    "timeouts",
    "prices",
    "structured_output",
    "headers",
    "deployment",
    "api_version",
    "max_tokens_field",
}
# Keys of the alias only: how the router calls it. Every other key may be overridden per deployment.
_ROUTING_KEYS = {"retries", "deadline", "backoff", "fallbacks", "circuit", "deployments"}
_DEPLOYMENT_KEYS = {"name", "weight"}
# The 'default' alias when neither a models file nor OPENAI_* names one.
IMPLICIT_DEFAULT = ModelConfig(alias="default", provider="mock", model="mock")
_DEPLOYMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:#@-]{0,127}")


def load_models(
    models_file: Path | None,
    *,
    environ: Mapping[str, str] | None = None,
    default_model: str = "gpt-4o-mini",
    openai_api_key: str | None = None,
    openai_base_url: str | None = None,
) -> dict[str, ModelConfig]:
    env = os.environ if environ is None else environ
    models: dict[str, ModelConfig] = {}
    if models_file is not None:
        try:
            raw = safeyaml.load_file(models_file, safeyaml.CONFIG_LIMIT, aliases=True) or {}
        except safeyaml.YAMLProblem as exc:
            raise ConfigError(f"cannot read models file {models_file}: {exc}") from None
        aliases = raw.get("models") if isinstance(raw, dict) else None
        if not isinstance(aliases, dict):
            raise ConfigError(f"{models_file}: expected a mapping under 'models:'")
        for alias, spec in aliases.items():
            if not names.is_model(str(alias)):
                raise ConfigError(
                    f"{models_file}: models.{str(alias)[:80]!r} is not an alias name: "
                    f"{names.MODEL_RULE}"
                )
            models[str(alias)] = _alias_config(str(alias), spec, env, models_file)
    if "default" not in models:
        if openai_api_key or openai_base_url:
            models["default"] = ModelConfig(
                alias="default",
                provider="openai",
                model=default_model,
                base_url=openai_base_url,
                api_key_env="OPENAI_API_KEY",
                api_key=openai_api_key,
            )
        else:
            models["default"] = IMPLICIT_DEFAULT
    models.setdefault("mock", ModelConfig(alias="mock", provider="mock", model="mock"))
    _check_routing(models, models_file)
    return models


def _alias_config(alias: str, spec: Any, env: Mapping[str, str], source: Path) -> ModelConfig:
    """An alias: its own fields (the defaults of its deployments) plus how to route calls."""
    where = f"{source}: models.{alias}"
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping")
    _mapping(spec, where, _ALIAS_KEYS | _ROUTING_KEYS)
    base = {k: v for k, v in spec.items() if k not in _ROUTING_KEYS}
    raw_deployments = spec.get("deployments")
    if raw_deployments is None:
        config = _model_config(alias, base, env, source)
        deployments: tuple[Deployment, ...] = ()
    else:
        if not isinstance(raw_deployments, list) or not raw_deployments:
            raise ConfigError(f"{where}.deployments: expected a non-empty list of mappings")
        deployments = tuple(
            _deployment(alias, i, base, item, env, source) for i, item in enumerate(raw_deployments)
        )
        names = [d.name for d in deployments]
        for name in names:
            if names.count(name) > 1:
                raise ConfigError(f"{where}.deployments: the name {name!r} is used twice")
        # The alias's own fields (shown by /admin/v1/models) are those of its first deployment.
        config = deployments[0].config
    routing = Routing(
        retries=_integer(spec, "retries", where, default=2, low=0, high=10),
        # Before `deadline` existed, timeouts.deadline bounded the whole call: it still does
        # for a file that sets only that.
        deadline=_number(
            spec, "deadline", where, default=config.timeouts.deadline, low=0.001, high=3600
        ),
        backoff=_backoff(spec.get("backoff"), f"{where}.backoff"),
        fallbacks=_fallbacks(spec.get("fallbacks"), alias, f"{where}.fallbacks"),
        circuit=_circuit(spec.get("circuit"), f"{where}.circuit"),
        deployments=deployments,
    )
    return dataclasses.replace(config, routing=routing)


def _deployment(
    alias: str, index: int, base: dict[str, Any], item: Any, env: Mapping[str, str], source: Path
) -> Deployment:
    where = f"{source}: models.{alias}.deployments[{index}]"
    if not isinstance(item, dict):
        raise ConfigError(f"{where}: expected a mapping")
    _mapping(item, where, _ALIAS_KEYS | _DEPLOYMENT_KEYS)
    name = item.get("name", f"{alias}#{index}")
    if not isinstance(name, str) or not _DEPLOYMENT_NAME.fullmatch(name):
        raise ConfigError(f"{where}.name: 1 to 128 letters, digits and _ . : # @ -, got {name!r}")
    weight = _number(item, "weight", where, default=1.0, low=None, high=1e6)
    if weight <= 0:
        raise ConfigError(f"{where}.weight: must be greater than 0, got {weight}")
    merged = {**base, **{k: v for k, v in item.items() if k not in _DEPLOYMENT_KEYS}}
    config = _model_config(alias, merged, env, source, where=where)
    return Deployment(name=name, weight=weight, config=config)


def _check_routing(models: dict[str, ModelConfig], source: Path | None) -> None:
    seen: dict[str, str] = {}
    for alias, config in models.items():
        for fallback in config.routing.fallbacks:
            if fallback not in models:
                raise ConfigError(
                    f"{source}: models.{alias}.fallbacks: unknown model alias {fallback!r}; "
                    f"configured: {', '.join(sorted(models))}"
                )
        for deployment in config.routing.deployments:
            other = seen.setdefault(deployment.name, alias)
            if other != alias:
                raise ConfigError(
                    f"{source}: models.{alias}.deployments: the name {deployment.name!r} is "
                    f"already used by alias {other!r}"
                )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(
    spec: Mapping[str, Any],
    key: str,
    where: str,
    *,
    default: float,
    low: float | None,
    high: float,
) -> float:
    value = spec.get(key, default)
    if not _is_number(value) or value != value or (low is not None and value < low) or value > high:
        bound = f"at least {low} and " if low is not None else ""
        raise ConfigError(f"{where}.{key}: expected a number {bound}at most {high}, got {value!r}")
    return float(value)


def _integer(
    spec: Mapping[str, Any], key: str, where: str, *, default: int, low: int, high: int
) -> int:
    value = spec.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"{where}.{key}: expected an integer from {low} to {high}, got {value!r}")
    return value


def _mapping(value: Any, where: str, allowed: set[str]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping")
    unknown = set(value) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
    return value


def _backoff(value: Any, where: str) -> Backoff:
    spec = _mapping(value, where, {"base", "max"})
    defaults = Backoff()
    base = _number(spec, "base", where, default=defaults.base, low=0, high=3600)
    top = _number(spec, "max", where, default=max(defaults.max, base), low=0, high=3600)
    if top < base:
        raise ConfigError(f"{where}.max: must be at least base ({base}), got {top}")
    return Backoff(base=base, max=top)


def _circuit(value: Any, where: str) -> CircuitConfig:
    spec = _mapping(value, where, {"failures", "error_rate", "window", "min_calls", "open_seconds"})
    defaults = CircuitConfig()
    rate = spec.get("error_rate")
    if rate is not None and (not _is_number(rate) or not 0 < rate <= 1):
        raise ConfigError(
            f"{where}.error_rate: expected a number above 0 and at most 1, got {rate!r}"
        )
    return CircuitConfig(
        failures=_integer(spec, "failures", where, default=defaults.failures, low=1, high=10_000),
        error_rate=None if rate is None else float(rate),
        window=_number(spec, "window", where, default=defaults.window, low=0.001, high=86_400),
        min_calls=_integer(
            spec, "min_calls", where, default=defaults.min_calls, low=1, high=1_000_000
        ),
        open_seconds=_number(
            spec, "open_seconds", where, default=defaults.open_seconds, low=0.001, high=86_400
        ),
    )


def _fallbacks(value: Any, alias: str, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}: expected a list of model alias names")
    if alias in value:
        raise ConfigError(f"{where}: an alias cannot fall back to itself ({alias!r})")
    for name in value:
        if value.count(name) > 1:
            raise ConfigError(f"{where}: {name!r} is listed twice")
    return tuple(value)


def _model_config(
    alias: str, spec: Any, env: Mapping[str, str], source: Path, *, where: str | None = None
) -> ModelConfig:
    where = where or f"{source}: models.{alias}"
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping")
    unknown = set(spec) - _ALIAS_KEYS
    if unknown:
        raise ConfigError(
            f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(_ALIAS_KEYS)}"
        )
    provider = spec.get("provider")
    if provider not in ADAPTERS:
        raise ConfigError(f"{where}.provider: must be one of {sorted(ADAPTERS)}, got {provider!r}")
    for key, providers in _PROVIDER_KEYS.items():
        if key in spec and provider not in providers:
            raise ConfigError(f"{where}.{key}: only for provider {' or '.join(providers)}")
    if provider == "azure" and not spec.get("base_url"):
        raise ConfigError(
            f"{where}.base_url: azure needs the resource endpoint, "
            "e.g. https://NAME.openai.azure.com"
        )
    if "api_key" in spec:
        raise ConfigError(f"{where}: put the key in an env var and name it in api_key_env")
    key_env = spec.get("api_key_env")
    for key, check in (("api_key_env", check_env_var_name), ("base_url", check_http_url)):
        problem = check(spec[key]) if spec.get(key) is not None else None
        if problem:
            raise ConfigError(f"{where}.{key} {problem}")
    api_key = env.get(key_env) if key_env else None
    if key_env and not api_key:
        log.warning("model alias %r: env var %s is not set", alias, key_env)
    timeouts = _mapping(spec.get("timeouts"), f"{where}.timeouts", {"connect", "read", "deadline"})
    for key in timeouts:
        _number(timeouts, key, f"{where}.timeouts", default=0, low=0.001, high=3600)
    prices = _mapping(spec.get("prices"), f"{where}.prices", {"input", "output"})
    for key, price in prices.items():
        if price is not None:
            _number(prices, key, f"{where}.prices", default=0, low=0, high=1e6)
    structured = spec.get("structured_output", "json_schema")
    modes = {"json_schema", "json_object", "none"}
    if provider == "gemini":
        modes.add("response_schema")
    if structured not in modes:
        raise ConfigError(
            f"{where}.structured_output: json_schema, json_object or none "
            "(gemini also takes response_schema)"
        )
    max_tokens_field = spec.get("max_tokens_field", MAX_TOKENS_FIELDS[0])
    if max_tokens_field not in MAX_TOKENS_FIELDS:
        raise ConfigError(
            f"{where}.max_tokens_field: {' or '.join(MAX_TOKENS_FIELDS)}, got {max_tokens_field!r}"
        )
    try:
        return ModelConfig(
            alias=alias,
            provider=provider,
            model=str(spec.get("model") or alias),
            base_url=spec.get("base_url"),
            api_key_env=key_env,
            api_key=api_key,
            params=dict(spec.get("params") or {}),
            timeouts=Timeouts(
                connect=float(timeouts.get("connect", 5.0)),
                read=float(timeouts.get("read", 60.0)),
                deadline=float(timeouts.get("deadline", 60.0)),
            ),
            price_input_per_mtok=_price(prices.get("input")),
            price_output_per_mtok=_price(prices.get("output")),
            structured_output=structured,
            headers={str(k): str(v) for k, v in (spec.get("headers") or {}).items()},
            deployment=_optional_str(spec.get("deployment")),
            api_version=_optional_str(spec.get("api_version")),
            max_tokens_field=max_tokens_field,
        )
    except (TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _price(value: Any) -> float | None:
    return None if value is None else float(value)


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


# Per provider: what its API would refuse for a prompt's params and output schema.
CONFLICTS: dict[
    str, Callable[[ModelConfig, dict[str, Any], dict[str, Any] | None], list[tuple[str, str]]]
] = {"anthropic": anthropic.conflicts}


def conflicts(
    models: Mapping[str, ModelConfig], definition: Mapping[str, Any]
) -> list[dict[str, str]]:
    """Problems (JSON pointer + message) of a checked definition that every deployment of its
    model alias, and of the aliases it falls back to, would refuse: found at registration rather
    than on every call."""
    params = definition.get("params") or {}
    schema = definition.get("output_schema")
    problems: list[dict[str, str]] = []
    pending = [definition.get("model", "default")]
    seen: set[str] = set()
    while pending:
        alias = pending.pop(0)
        config = models.get(alias)
        if alias in seen or config is None:
            continue
        seen.add(alias)
        for deployment in config.deployments:
            check = CONFLICTS.get(deployment.config.provider)
            for path, message in check(deployment.config, params, schema) if check else ():
                problem = {"path": path, "message": message}
                if problem not in problems:
                    problems.append(problem)
        pending.extend(config.routing.fallbacks)
    return problems


class Providers:
    """One provider instance (and so one pooled HTTP client) per deployment of a model alias."""

    def __init__(self, models: dict[str, ModelConfig]) -> None:
        self.models = models
        self._instances: dict[str, Provider] = {}

    @property
    def mock_default(self) -> bool:
        return self.models["default"].provider == "mock"

    def mock_default_warning(self) -> str | None:
        """The start-up warning while the 'default' alias is the mock, naming what is missing."""
        if not self.mock_default:
            return None
        configured = sorted(a for a in self.models if a not in ("default", "mock"))
        if configured and self.models["default"] is IMPLICIT_DEFAULT:
            return (
                f"the models file defines model aliases ({', '.join(configured)}) but no "
                "'default': prompts that name no model, and the 'default' alias, use the mock "
                "provider. Add a 'default' alias to PROMPTAPI_MODELS_FILE."
            )
        if self.models["default"] is not IMPLICIT_DEFAULT:
            return "the models file makes the 'default' model alias the mock provider."
        return (
            "no model provider is configured: the 'default' model alias is the mock provider. "
            "Set OPENAI_API_KEY / OPENAI_BASE_URL or PROMPTAPI_MODELS_FILE."
        )

    def config(self, alias: str) -> ModelConfig:
        config = self.models.get(alias)
        if config is None:
            raise ProviderUnavailable(f"Model alias {alias!r} is not configured on this server.")
        return config

    def get(self, alias: str) -> Provider:
        """The provider of the alias's first deployment (the router picks among all of them)."""
        return self.deployment(self.config(alias).deployments[0])

    def deployment(self, deployment: Deployment) -> Provider:
        provider = self._instances.get(deployment.name)
        if provider is None:
            config = deployment.config
            provider = self._instances[deployment.name] = ADAPTERS[config.provider](config)
        return provider

    async def aclose(self) -> None:
        for provider in self._instances.values():
            await provider.aclose()
        self._instances.clear()


__all__ = [
    "Completion",
    "CompletionRequest",
    "Deployment",
    "ModelConfig",
    "Provider",
    "Providers",
    "StreamDelta",
    "Timeouts",
    "conflicts",
    "load_models",
]
