"""Calls a model alias resiliently: weighted deployments, circuit breakers, retries with
backoff, one overall deadline, and fallback aliases.

Per attempt the router picks a deployment by weight among those whose circuit lets it through
(preferring ones that have not failed during this call). Only connect errors, 429 and 5xx are
retried, after a full-jitter exponential backoff or the provider's Retry-After; no wait may
cross the call's deadline (the last error is answered at once instead). When the alias's
retries are exhausted, or none of its deployments is usable, its fallback aliases are tried in
order with the time that is left. If they fail too, the primary alias's error is answered.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from promptapi.errors import (
    CircuitOpen,
    DeadlineExceeded,
    PromptAPIError,
    UpstreamAuthError,
)
from promptapi.providers import Providers
from promptapi.providers.base import (
    Completion,
    CompletionRequest,
    Deployment,
    ModelConfig,
    Provider,
    StreamDelta,
)
from promptapi.providers.circuit import Circuit

log = logging.getLogger("promptapi.providers")
T = TypeVar("T")
DEADLINE_SLACK = 0.05


@dataclass(slots=True)
class Route:
    """Where a call went: the alias and deployment that answered (or were tried last), the
    number of attempts so far, and the router-clock time by which the whole call must end.
    Pass the same Route to a follow-up call (e.g. an output repair) to share its deadline."""

    alias: str | None = None
    deployment: str | None = None
    config: ModelConfig | None = None
    attempts: int = 0
    deadline: float | None = None


def _counts_against(exc: PromptAPIError) -> bool:
    """Whether a failed attempt says the deployment is unhealthy. A 4xx other than 401/403/429
    says our request was wrong: the deployment itself answered."""
    if exc.retryable or isinstance(exc, UpstreamAuthError | DeadlineExceeded):
        return True
    status = exc.upstream_status
    return status is None or status >= 500


def _settle(circuit: Circuit, exc: PromptAPIError) -> None:
    if _counts_against(exc):
        circuit.failure()
    else:
        circuit.success()


def _falls_back(exc: PromptAPIError) -> bool:
    return exc.retryable or isinstance(exc, CircuitOpen)


class Router:
    def __init__(
        self,
        providers: Providers,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.providers = providers
        self.clock = clock
        self.sleep = sleep
        self.rng = rng or random.Random()
        self._circuits: dict[str, Circuit] = {}
        self._deployments: dict[str, tuple[tuple[Deployment, Circuit], ...]] = {}

    def circuit(self, deployment: Deployment, config: ModelConfig) -> Circuit:
        circuit = self._circuits.get(deployment.name)
        if circuit is None:
            circuit = self._circuits[deployment.name] = Circuit(
                deployment.name, config.routing.circuit, self.clock
            )
        return circuit

    async def complete(
        self, alias: str, request: CompletionRequest, route: Route | None = None
    ) -> tuple[Completion, Route]:
        route = Route() if route is None else route
        completion, _ = await self._call(
            alias, route, lambda provider: provider.complete(request), settle=True
        )
        return completion, route

    async def stream(
        self, alias: str, request: CompletionRequest, route: Route | None = None
    ) -> AsyncIterator[StreamDelta]:
        """The provider's deltas. Retries and fallbacks happen only before the first delta;
        `route` says which deployment is streaming once the first delta is out."""
        route = Route() if route is None else route

        async def first(provider: Provider) -> tuple[AsyncIterator[StreamDelta], Any]:
            deltas = provider.stream(request).__aiter__()
            try:
                return deltas, await deltas.__anext__()
            except StopAsyncIteration:
                return deltas, None
            except BaseException:
                await _aclose(deltas)
                raise

        (deltas, delta), circuit = await self._call(alias, route, first, settle=False)
        assert route.config is not None
        per_attempt = route.config.timeouts.deadline
        try:
            while delta is not None:
                yield delta
                delta = await self._within_deadline(route, per_attempt, _next(deltas))
        except PromptAPIError as exc:
            _settle(circuit, exc)
            raise
        except GeneratorExit:
            circuit.success()  # the caller stopped reading; the deployment was answering
            raise
        except BaseException:
            circuit.release()
            raise
        else:
            circuit.success()
        finally:
            await _aclose(deltas)

    async def _call(
        self,
        alias: str,
        route: Route,
        attempt: Callable[[Provider], Awaitable[T]],
        *,
        settle: bool,
    ) -> tuple[T, Circuit]:
        config = self.providers.config(alias)
        if route.deadline is None:
            route.deadline = self.clock() + config.routing.deadline
        primary: PromptAPIError | None = None
        for name in (alias, *config.routing.fallbacks):
            try:
                return await self._alias(name, route, attempt, settle=settle)
            except PromptAPIError as exc:
                if not _falls_back(exc):
                    raise
                primary = primary or exc
                log.info("alias %s gave up (%s); trying its next fallback if any", name, exc.code)
        assert primary is not None
        raise primary

    async def _alias(
        self,
        alias: str,
        route: Route,
        attempt: Callable[[Provider], Awaitable[T]],
        *,
        settle: bool,
    ) -> tuple[T, Circuit]:
        config = self.providers.config(alias)
        routing = config.routing
        assert route.deadline is not None
        failed: set[str] = set()
        tries = 0
        while True:
            if route.deadline <= self.clock():
                raise self._deadline(route)
            deployment, wait = self._pick(config, failed)
            if deployment is None:
                raise CircuitOpen(
                    f"Every deployment of model alias {alias!r} is failing; its circuit is open.",
                    headers={"Retry-After": str(max(1, math.ceil(wait)))},
                )
            circuit = self.circuit(deployment, config)
            circuit.acquire()
            tries += 1
            route.attempts += 1
            route.alias, route.deployment, route.config = alias, deployment.name, deployment.config
            provider = self.providers.deployment(deployment)
            try:
                per_attempt = deployment.config.timeouts.deadline
                if route.deadline - self.clock() + DEADLINE_SLACK >= per_attempt:
                    result = await attempt(provider)  # the provider's own timer comes first
                else:
                    result = await self._within_deadline(route, per_attempt, attempt(provider))
            except PromptAPIError as exc:
                _settle(circuit, exc)
                if not exc.retryable or tries > routing.retries:
                    raise
                failed.add(deployment.name)
                delay = exc.retry_after
                if delay is None:
                    ceiling = min(routing.backoff.max, routing.backoff.base * 2 ** (tries - 1))
                    delay = self.rng.uniform(0, ceiling)
                if self.clock() + delay >= route.deadline:
                    raise  # no attempt could finish in time: answer now rather than wait
                log.info(
                    "retry: alias=%s deployment=%s after=%s upstream_status=%s wait=%.3f s",
                    alias,
                    deployment.name,
                    exc.code,
                    exc.upstream_status,
                    delay,
                )
                await self.sleep(delay)
            except BaseException:
                circuit.release()
                raise
            else:
                if settle:
                    circuit.success()
                return result, circuit

    async def _within_deadline(self, route: Route, per_attempt: float, work: Awaitable[T]) -> T:
        """Await `work` within what is left of the call's deadline. The provider already bounds
        each attempt by its own timeout, so a second timer is armed only when the call's
        deadline comes sooner."""
        assert route.deadline is not None
        remaining = route.deadline - self.clock()
        # With the defaults both are 60 s: the provider's timer (started a moment later) may
        # then overrun the call's deadline by at most DEADLINE_SLACK, and saves a timer per call.
        if remaining + DEADLINE_SLACK >= per_attempt:
            return await work
        try:
            if remaining <= 0:
                raise TimeoutError
            async with asyncio.timeout(remaining):
                return await work
        except TimeoutError:
            if asyncio.iscoroutine(work):
                work.close()
            raise self._deadline(route) from None

    @staticmethod
    def _deadline(route: Route) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"The call to model alias {route.alias!r} passed its deadline "
            f"after {route.attempts} attempt{'s' if route.attempts != 1 else ''}."
        )

    def _pick(self, config: ModelConfig, failed: set[str]) -> tuple[Deployment | None, float]:
        """A deployment by weight among those whose circuit lets an attempt through, preferring
        ones that have not failed during this call; else None and the shortest wait."""
        deployments = self._deployments.get(config.alias)
        if deployments is None:
            deployments = self._deployments[config.alias] = tuple(
                (d, self.circuit(d, config)) for d in config.deployments
            )
        now = self.clock()
        if len(deployments) == 1:
            deployment, circuit = deployments[0]
            wait = circuit.wait(now)
            return (None, wait) if wait > 0 else (deployment, 0.0)
        usable: list[Deployment] = []
        soonest = math.inf
        for deployment, circuit in deployments:
            wait = circuit.wait(now)
            if wait > 0:
                soonest = min(soonest, wait)
            else:
                usable.append(deployment)
        fresh = [d for d in usable if d.name not in failed] or usable
        if len(fresh) <= 1:
            return (fresh[0] if fresh else None), soonest
        point = self.rng.random() * sum(d.weight for d in fresh)
        for deployment in fresh:
            point -= deployment.weight
            if point < 0:
                return deployment, 0.0
        return fresh[-1], 0.0

    def status(self) -> list[dict[str, Any]]:
        """Every alias without secrets, with each deployment's circuit state."""
        models = []
        for config in self.providers.models.values():
            entry = config.public()
            entry["deployments"] = [
                {
                    "name": d.name,
                    "weight": d.weight,
                    "provider": d.config.provider,
                    "model": d.config.model,
                    "base_url": d.config.base_url,
                    "api_key_env": d.config.api_key_env,
                    "api_key_set": bool(d.config.api_key),
                    "circuit": self.circuit(d, config).snapshot(),
                }
                for d in config.deployments
            ]
            models.append(entry)
        return models


async def _next(deltas: AsyncIterator[StreamDelta]) -> StreamDelta | None:
    try:
        return await deltas.__anext__()
    except StopAsyncIteration:
        return None


async def _aclose(deltas: AsyncIterator[StreamDelta]) -> None:
    close = getattr(deltas, "aclose", None)
    if close is not None:
        await close()
