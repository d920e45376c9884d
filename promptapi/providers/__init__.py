"""Model aliases and the provider adapters behind them."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from promptapi.errors import ConfigError, ProviderUnavailable
from promptapi.providers.anthropic import AnthropicProvider
from promptapi.providers.base import (
    Completion,
    CompletionRequest,
    ModelConfig,
    Provider,
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
}
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
}


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
            raw = yaml.safe_load(models_file.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read models file {models_file}: {exc}") from None
        aliases = raw.get("models") if isinstance(raw, dict) else None
        if not isinstance(aliases, dict):
            raise ConfigError(f"{models_file}: expected a mapping under 'models:'")
        for alias, spec in aliases.items():
            models[str(alias)] = _model_config(str(alias), spec, env, models_file)
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
            models["default"] = ModelConfig(alias="default", provider="mock", model="mock")
    models.setdefault("mock", ModelConfig(alias="mock", provider="mock", model="mock"))
    return models


def _model_config(alias: str, spec: Any, env: Mapping[str, str], source: Path) -> ModelConfig:
    where = f"{source}: models.{alias}"
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
    api_key = env.get(key_env) if key_env else None
    if key_env and not api_key:
        log.warning("model alias %r: env var %s is not set", alias, key_env)
    timeouts = spec.get("timeouts") or {}
    prices = spec.get("prices") or {}
    structured = spec.get("structured_output", "json_schema")
    modes = {"json_schema", "json_object", "none"}
    if provider == "gemini":
        modes.add("response_schema")
    if structured not in modes:
        raise ConfigError(
            f"{where}.structured_output: json_schema, json_object or none "
            "(gemini also takes response_schema)"
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
        )
    except (TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _price(value: Any) -> float | None:
    return None if value is None else float(value)


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


class Providers:
    """One provider instance (and so one pooled HTTP client) per model alias."""

    def __init__(self, models: dict[str, ModelConfig]) -> None:
        self.models = models
        self._instances: dict[str, Provider] = {}

    @property
    def mock_default(self) -> bool:
        return self.models["default"].provider == "mock"

    def get(self, alias: str) -> Provider:
        provider = self._instances.get(alias)
        if provider is None:
            config = self.models.get(alias)
            if config is None:
                raise ProviderUnavailable(
                    f"Model alias {alias!r} is not configured on this server."
                )
            provider = self._instances[alias] = ADAPTERS[config.provider](config)
        return provider

    async def aclose(self) -> None:
        for provider in self._instances.values():
            await provider.aclose()
        self._instances.clear()


__all__ = [
    "Completion",
    "CompletionRequest",
    "ModelConfig",
    "Provider",
    "Providers",
    "StreamDelta",
    "Timeouts",
    "load_models",
]
