"""The router and the circuit breaker with an injected clock, sleep and random source: exact
backoff delays, exact circuit transitions, and streaming that retries and falls back only before
the first delta. The upstreams are the fake OpenAI servers on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from promptapi.errors import CircuitOpen, DeadlineExceeded, UpstreamError
from promptapi.providers import CompletionRequest, Providers, load_models
from promptapi.providers.base import CircuitConfig
from promptapi.providers.circuit import PROBE_WAIT, Circuit
from promptapi.providers.router import Route, Router
from tests.conftest import UPSTREAM_KEY
from tests.fakes import Behaviour

KEY_ENV = "PROMPTAPI_TEST_UPSTREAM_KEY"
REQUEST = CompletionRequest(messages=[{"role": "user", "content": "hi"}], params={"max_tokens": 5})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Sleeps:
    """Records each wait and moves the clock on by it, without waiting."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.now += seconds


class Highest:
    """A random source that always jitters to the top of the range: delays are exact."""

    def uniform(self, low: float, high: float) -> float:
        return high

    def random(self) -> float:
        return 0.0


@pytest.fixture
async def make_router(tmp_path: Path) -> AsyncIterator[Any]:
    made: list[Router] = []

    def make(models: dict[str, Any], clock: Clock | None = None, rng: Any = None) -> Router:
        path = tmp_path / "models.yaml"
        specs = {
            name: {"provider": "openai", "model": "m", "api_key_env": KEY_ENV, **fields}
            for name, fields in models.items()
        }
        path.write_text(yaml.safe_dump({"models": specs}), encoding="utf-8")
        providers = Providers(load_models(path, environ={KEY_ENV: UPSTREAM_KEY}))
        clock = clock or Clock()
        router = Router(providers, clock=clock, sleep=Sleeps(clock), rng=rng or Highest())
        made.append(router)
        return router

    yield make
    for router in made:
        await router.providers.aclose()


# -- backoff --------------------------------------------------------------------------------


async def test_backoff_doubles_up_to_its_ceiling(make_router, fake):
    router = make_router(
        {"default": {"base_url": fake.base_url, "retries": 4, "backoff": {"base": 0.5, "max": 1.5}}}
    )
    fake.then(*[Behaviour(status=502)] * 4, Behaviour(content="done"))
    completion, route = await router.complete("default", REQUEST)
    assert completion.text == "done"
    assert route.attempts == 5 and route.deployment == "default#0"
    assert router.sleep.waits == [0.5, 1.0, 1.5, 1.5]


async def test_retry_after_replaces_the_backoff(make_router, fake):
    router = make_router({"default": {"base_url": fake.base_url}})
    fake.then(Behaviour(status=429, headers={"Retry-After": "2"}), Behaviour(content="ok"))
    _, route = await router.complete("default", REQUEST)
    assert route.attempts == 2
    assert router.sleep.waits == [2.0]


async def test_no_wait_reaches_past_the_deadline(make_router, fake):
    router = make_router({"default": {"base_url": fake.base_url, "deadline": 10, "retries": 5}})
    fake.then(Behaviour(status=503, headers={"Retry-After": "3"}), Behaviour(status=500))
    fake.default = Behaviour(status=503, headers={"Retry-After": "9"})
    with pytest.raises(UpstreamError):
        await router.complete("default", REQUEST)
    # 3 s, then the default backoff (0.5 * 2), then 9 s would end past 10 s: answered at once.
    assert router.sleep.waits == [3.0, 1.0]
    assert len(fake.requests) == 3


async def test_a_follow_up_call_shares_the_route_and_its_deadline(make_router, fake):
    router = make_router({"default": {"base_url": fake.base_url, "deadline": 10}})
    route = Route()
    await router.complete("default", REQUEST, route)
    router.clock.now += 9.5
    fake.default = Behaviour(status=500)
    with pytest.raises(UpstreamError):
        await router.complete("default", REQUEST, route)
    assert route.attempts == 2
    assert router.sleep.waits == []  # the 0.5 s backoff would have reached the deadline


async def test_no_attempt_starts_after_the_deadline(make_router, fake):
    router = make_router({"default": {"base_url": fake.base_url}})
    route = Route(deadline=router.clock.now)
    with pytest.raises(DeadlineExceeded):
        await router.complete("default", REQUEST, route)
    assert route.attempts == 0
    assert fake.requests == []
    [status] = router.status()[0]["deployments"]
    assert status["circuit"]["recent_attempts"] == 0  # nothing was held against it


# -- circuit --------------------------------------------------------------------------------


def test_circuit_transitions_are_exact() -> None:
    clock = Clock()
    circuit = Circuit("d", CircuitConfig(failures=2, open_seconds=10), clock)
    circuit.failure()
    assert circuit.wait() == 0 and circuit.state == "closed"
    circuit.success()
    circuit.failure()
    assert circuit.state == "closed"  # the success reset the consecutive count
    circuit.failure()
    assert circuit.state == "open"
    clock.now += 4
    assert circuit.wait() == pytest.approx(6)
    clock.now += 6
    assert circuit.wait() == 0 and circuit.state == "half_open"
    circuit.acquire()  # the one probe
    assert circuit.wait() == PROBE_WAIT
    circuit.release()  # its caller left: the next attempt may probe
    assert circuit.wait() == 0
    circuit.acquire()
    circuit.failure()
    assert circuit.state == "open" and circuit.wait() == pytest.approx(10)
    clock.now += 10
    assert circuit.wait() == 0
    circuit.acquire()
    circuit.success()
    assert circuit.state == "closed" and circuit.opened == 2


def test_circuit_error_rate_forgets_old_attempts() -> None:
    clock = Clock()
    config = CircuitConfig(failures=100, error_rate=0.5, window=10, min_calls=4)
    circuit = Circuit("d", config, clock)
    for _ in range(3):
        circuit.failure()
    clock.now += 11  # those failures have left the window
    circuit.success()
    circuit.failure()
    circuit.success()
    assert circuit.error_rate() == 0.3333  # rounded to 4 places
    circuit.failure()
    assert circuit.state == "open"  # 2 of 4 within the window
    assert circuit.snapshot()["recent_attempts"] == 4


async def test_an_open_circuit_answers_without_the_network(make_router, fake):
    router = make_router(
        {
            "default": {
                "base_url": fake.base_url,
                "retries": 0,
                "circuit": {"failures": 1, "open_seconds": 7},
            }
        }
    )
    fake.default = Behaviour(status=500)
    with pytest.raises(UpstreamError):
        await router.complete("default", REQUEST)
    router.clock.now += 2.5
    with pytest.raises(CircuitOpen) as raised:
        await router.complete("default", REQUEST)
    assert raised.value.headers == {"Retry-After": "5"}
    assert len(fake.requests) == 1


async def test_weighted_pick_follows_the_random_point(make_router, fake, fake_b):
    router = make_router(
        {
            "default": {
                "deployments": [
                    {"name": "a", "base_url": fake.base_url, "weight": 1},
                    {"name": "b", "base_url": fake_b.base_url, "weight": 3},
                ]
            }
        }
    )

    class Point:
        def __init__(self, value: float) -> None:
            self.value = value

        def random(self) -> float:
            return self.value

    picked = []
    for value in (0.0, 0.24, 0.26, 0.99):
        router.rng = Point(value)
        _, route = await router.complete("default", REQUEST)
        picked.append(route.deployment)
    assert picked == ["a", "a", "b", "b"]


# -- streaming ------------------------------------------------------------------------------


async def test_stream_retries_before_the_first_delta(make_router, fake):
    router = make_router({"default": {"base_url": fake.base_url}})
    fake.then(Behaviour(status=500), Behaviour(stream_chunks=["Grü", "ße"], usage=(3, 2)))
    route = Route()
    deltas = [d async for d in router.stream("default", REQUEST, route)]
    assert "".join(d.text for d in deltas) == "Grüße"
    assert deltas[-1].output_tokens == 2
    assert (route.attempts, route.deployment) == (2, "default#0")
    assert len(fake.requests) == 2


async def test_stream_falls_back_before_the_first_delta(make_router, fake):
    router = make_router(
        {
            "default": {"base_url": "http://127.0.0.1:1/v1", "retries": 0, "fallbacks": ["b"]},
            "b": {"base_url": fake.base_url},
        }
    )
    fake.default = Behaviour(stream_chunks=["from b"])
    route = Route()
    text = "".join([d.text async for d in router.stream("default", REQUEST, route)])
    assert text == "from b"
    assert (route.alias, route.deployment, route.attempts) == ("b", "b#0", 2)


async def test_stream_is_not_retried_after_the_first_delta(make_router, fake):
    router = make_router({"default": {"base_url": fake.base_url, "circuit": {"failures": 1}}})
    fake.default = Behaviour(stream_chunks=["a" * 50, "b" * 50], cut_stream_after=600)
    received: list[str] = []
    with pytest.raises(UpstreamError):
        async for delta in router.stream("default", REQUEST):
            received.append(delta.text)
    assert "a" * 50 in received
    assert len(fake.requests) == 1
    [status] = router.status()[0]["deployments"]
    assert status["circuit"]["state"] == "open"  # the cut counted against the deployment


async def test_stream_from_an_open_circuit_fails_before_any_delta(make_router, fake):
    router = make_router(
        {"default": {"base_url": fake.base_url, "retries": 0, "circuit": {"failures": 1}}}
    )
    fake.default = Behaviour(status=500)
    with pytest.raises(UpstreamError):
        await router.complete("default", REQUEST)
    with pytest.raises(CircuitOpen):
        _ = [d async for d in router.stream("default", REQUEST)]
    assert len(fake.requests) == 1
