"""Health, readiness and the problem type documents that error bodies point at."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from promptapi.errors import NotFound, all_problem_types
from promptapi.gateway import Gateway
from promptapi.web.http import JSON, route


async def healthz(request: Request) -> Response:
    return JSON({"status": "ok"})


async def readyz(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    try:
        await gateway.store.revision()
    except Exception:
        return JSON({"status": "unavailable", "database": "unreachable"}, status_code=503)
    return JSON(
        {
            "status": "ok",
            "prompts": len(gateway.registry.names()),
            "pending_call_records": gateway.recorder.pending,
        }
    )


def _problem_doc(code: str) -> dict[str, object]:
    cls = all_problem_types()[code]
    return {
        "type": f"/problems/{code}",
        "code": code,
        "title": cls.title,
        "status": cls.status,
        "description": cls.description,
    }


async def problems(request: Request) -> Response:
    return JSON({"problems": [_problem_doc(c) for c in sorted(all_problem_types())]})


async def problem(request: Request) -> Response:
    code = request.path_params["code"]
    if code not in all_problem_types():
        raise NotFound(f"No problem type {code!r}.")
    return JSON(_problem_doc(code))


routes = [
    route("/healthz", get=healthz),
    route("/readyz", get=readyz),
    route("/problems", get=problems),
    route("/problems/{code}", get=problem),
]
