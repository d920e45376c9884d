"""Version lifecycle (draft / published / deprecated / retired), labels, drafts and keys that
may call them, deprecation headers and 410 for retired versions, through HTTP against a live
server on SQLite and PostgreSQL."""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ECHO, Server
from tests.helpers import assert_problem, eventually
from tests.test_database import run_cli

SUNSET = "2031-06-30T23:59:59Z"
SUNSET_HTTP = "Mon, 30 Jun 2031 23:59:59 GMT"


def echo(text: str = "Repeat", **changes: Any) -> dict[str, Any]:
    definition = copy.deepcopy(ECHO)
    definition["messages"] = [{"role": "user", "content": f"{text}: {{{{ text }}}}"}]
    definition.update(changes)
    return definition


def register(server: Server, text: str = "Repeat", **changes: Any) -> dict[str, Any]:
    response = server.admin.post("/admin/v1/prompts", json=echo(text, **changes))
    assert response.status_code == 201, response.text
    return response.json()


def act(server: Server, version: int, action: str, body: Any = None, name: str = "echo"):
    path = f"/admin/v1/prompts/{name}/versions/{version}/{action}"
    if body is None:
        return server.admin.post(path)
    return server.admin.post(path, json=body)


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    return response.json()


def keyed(server: Server, *, allow_drafts: bool = False) -> httpx.Client:
    created = server.admin.post("/admin/v1/keys", json={"name": "k", "allow_drafts": allow_drafts})
    assert created.status_code == 201, created.text
    assert created.json()["allow_drafts"] is allow_drafts
    return httpx.Client(
        base_url=server.url,
        timeout=30,
        headers={"Authorization": f"Bearer {created.json()['key']}"},
    )


def call(client: httpx.Client, path: str = "/v1/prompts/echo", **params: Any) -> httpx.Response:
    return client.post(path, json={"text": "x"}, params=params)


def served(client: httpx.Client, path: str = "/v1/prompts/echo", **params: Any) -> int:
    response = call(client, path, **params)
    assert response.status_code == 200, response.text
    return response.json()["prompt"]["version"]


def prompt_file(tmp_path: Path, name: str, extra: str = "") -> None:
    """A minimal version-1 prompt file in the folder make_server syncs."""
    folder = tmp_path / "prompts"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.yaml").write_text(
        f"name: {name}\nversion: 1\n{extra}input_schema: {{type: object}}\n"
        "messages: [{role: user, content: hi}]\n"
    )


def epoch(stamp: str) -> int:
    return int(datetime.fromisoformat(stamp).timestamp())


# -- transitions --------------------------------------------------------------------------


def test_every_transition_and_every_refusal(server, fake):
    assert register(server)["state"] == "published"

    refused = assert_problem(act(server, 1, "publish"), 409, "transition_refused")
    assert refused["state"] == "published"
    assert refused["action"] == "publish"
    assert refused["allowed"] == ["deprecate", "retire"]
    assert refused["detail"] == "Cannot publish version 1 of 'echo': it is published."

    # published -> deprecated, with no successor while no other version is published.
    deprecated = ok(act(server, 1, "deprecate"))
    assert deprecated["state"] == "deprecated"
    assert deprecated["successor"] is None and deprecated["sunset"] is None
    assert deprecated["state_changed_by"] == "admin"
    assert deprecated["deprecated_at"] == deprecated["state_changed_at"]
    first_deprecation = deprecated["deprecated_at"]

    # deprecated -> deprecated: a new sunset and the default successor; the date stays.
    register(server, "Say back")
    again = ok(act(server, 1, "deprecate", {"sunset": SUNSET}))
    assert again["state"] == "deprecated"
    assert again["deprecated_at"] == first_deprecation
    assert again["sunset"] == SUNSET
    assert again["successor"] == 2

    # deprecated -> published undoes the deprecation.
    undone = ok(act(server, 1, "publish"))
    assert (undone["state"], undone["deprecated_at"], undone["sunset"], undone["successor"]) == (
        "published",
        None,
        None,
        None,
    )

    # published -> retired names the newest published version as successor.
    retired = ok(act(server, 1, "retire"))
    assert (retired["state"], retired["successor"]) == ("retired", 2)

    # retired is final.
    for action in ("publish", "deprecate", "retire"):
        problem = assert_problem(act(server, 1, action), 409, "transition_refused")
        assert problem["state"] == "retired"
        assert problem["allowed"] == []
        assert problem["action"] == action
        assert problem["detail"].endswith("Retired versions are final.")

    # draft: publish or retire, never deprecate.
    assert register(server, "Draft", state="draft")["state"] == "draft"
    problem = assert_problem(act(server, 3, "deprecate"), 409, "transition_refused")
    assert (problem["state"], problem["allowed"]) == ("draft", ["publish", "retire"])
    assert ok(act(server, 3, "publish"))["state"] == "published"
    assert register(server, "Abandoned", state="draft")["state"] == "draft"
    assert ok(act(server, 4, "retire"))["state"] == "retired"

    detail = ok(server.admin.get("/admin/v1/prompts/echo"))
    assert [(v["version"], v["state"]) for v in detail["versions"]] == [
        (1, "retired"),
        (2, "published"),
        (3, "published"),
        (4, "retired"),
    ]
    assert_problem(act(server, 99, "publish"), 404, "not_found")
    assert_problem(act(server, 1, "publish", name="nope"), 404, "not_found")


def test_transition_bodies_are_checked_and_refusals_change_nothing(server, fake):
    register(server)
    register(server, "Two")
    register(server, "Three", state="draft")
    cases: list[tuple[str, Any, str, str]] = [
        ("deprecate", {"sunset": "tomorrow"}, "/sunset", "RFC 3339"),
        ("deprecate", {"sunset": "2031-01-01T00:00:00"}, "/sunset", "time zone"),
        ("deprecate", {"sunset": "2020-01-01T00:00:00Z"}, "/sunset", "must not be earlier"),
        ("deprecate", {"successor": "2"}, "/successor", "version number"),
        ("deprecate", {"successor": 99}, "/successor", "'echo' has no version 99"),
        ("deprecate", {"successor": 1}, "/successor", "cannot succeed itself"),
        (
            "deprecate",
            {"successor": 3},
            "/successor",
            "must be a published version; version 3 is draft",
        ),
        ("deprecate", {"reason": "x"}, "/reason", "unexpected property 'reason'"),
        ("publish", {"sunset": SUNSET}, "/sunset", "unexpected property 'sunset'"),
        ("retire", {"sunset": SUNSET}, "/sunset", "unexpected property 'sunset'"),
        ("deprecate", [1], "", "expected an object"),
    ]
    for action, body, path, message in cases:
        problem = assert_problem(act(server, 1, action, body), 422, "request_invalid")
        assert [e["path"] for e in problem["errors"]] == [path], (action, body, problem)
        assert message in problem["errors"][0]["message"], (action, body, problem)
    not_json = server.admin.post(
        "/admin/v1/prompts/echo/versions/1/deprecate",
        content=b"{",
        headers={"Content-Type": "application/json"},
    )
    assert_problem(not_json, 400, "malformed_request")

    version = ok(server.admin.get("/admin/v1/prompts/echo/versions/1"))
    assert version["state"] == "published" and version["deprecated_at"] is None
    audit = ok(server.admin.get("/admin/v1/audit", params={"target": "echo@1"}))
    assert [r["action"] for r in audit["records"]] == ["prompt.create"]


def test_retire_is_refused_while_a_label_points_at_the_version(server, fake):
    register(server)
    register(server, "Two")
    assert ok(server.admin.put("/admin/v1/prompts/echo/labels/production", json={"version": 1}))
    assert ok(server.admin.put("/admin/v1/prompts/echo/labels/canary", json={"version": 1}))
    problem = assert_problem(act(server, 1, "retire"), 409, "transition_refused")
    assert problem["labels"] == ["canary", "production"]
    assert problem["state"] == "published"
    assert "move or delete them first" in problem["detail"]
    ok(server.admin.put("/admin/v1/prompts/echo/labels/production", json={"version": 2}))
    ok(server.admin.delete("/admin/v1/prompts/echo/labels/canary"))
    assert ok(act(server, 1, "retire"))["state"] == "retired"


# -- what callers see ---------------------------------------------------------------------


def test_deprecated_calls_carry_deprecation_sunset_and_successor_headers(server, client, fake):
    register(server)
    register(server, "Two")
    deprecated = ok(act(server, 1, "deprecate", {"sunset": SUNSET, "successor": 2}))

    pinned = call(client, "/v1/prompts/echo/versions/1")
    assert pinned.status_code == 200, pinned.text
    assert pinned.json()["prompt"] == {"name": "echo", "version": 1}
    assert re.fullmatch(r"@\d+", pinned.headers["deprecation"])
    assert pinned.headers["deprecation"] == f"@{epoch(deprecated['deprecated_at'])}"
    assert pinned.headers["sunset"] == SUNSET_HTTP
    assert pinned.headers["link"] == '</v1/prompts/echo/versions/2>; rel="successor-version"'

    current = call(client)
    assert current.json()["prompt"]["version"] == 2
    assert {"deprecation", "sunset", "link"}.isdisjoint(current.headers)

    # Without a sunset and with no other published version: only the Deprecation header.
    ok(act(server, 2, "deprecate"))
    only = call(client, "/v1/prompts/echo/versions/2")
    assert only.status_code == 200
    assert only.headers["deprecation"].startswith("@")
    assert "sunset" not in only.headers and "link" not in only.headers
    # Every version deprecated: unpinned calls get the newest deprecated one, with headers.
    unpinned = call(client)
    assert unpinned.json()["prompt"]["version"] == 2
    assert unpinned.headers["deprecation"] == only.headers["deprecation"]


def test_retired_versions_answer_410_naming_the_successor(server, client, fake):
    register(server)
    register(server, "Two")
    ok(act(server, 1, "retire"))
    sent = len(fake.requests)
    for caller in (client, server.admin):
        problem = assert_problem(
            call(caller, "/v1/prompts/echo/versions/1"), 410, "version_retired"
        )
        assert problem["version"] == 1
        assert problem["successor"] == 2
        assert problem["successor_url"] == "/v1/prompts/echo/versions/2"
        assert problem["detail"] == (
            "Version 1 of prompt 'echo' is retired; call version 2 instead "
            "(/v1/prompts/echo/versions/2)."
        )
    retired = call(client, "/v1/prompts/echo/versions/1")
    assert retired.headers["link"] == '</v1/prompts/echo/versions/2>; rel="successor-version"'
    assert len(fake.requests) == sent  # the model was never called
    assert served(client) == 2

    # Every version retired: unpinned calls are 410 too, with no successor to name.
    ok(act(server, 2, "retire"))
    problem = assert_problem(call(client), 410, "version_retired")
    assert (problem["version"], problem["successor"], problem["successor_url"]) == (2, None, None)
    assert "link" not in call(client).headers
    # The prompt stays listed for pinned callers to learn what happened.
    detail = ok(client.get("/v1/prompts/echo"))
    assert [v["state"] for v in detail["versions"]] == ["retired", "retired"]
    assert detail["version"] is None
    assert "echo" not in [p["name"] for p in ok(client.get("/v1/prompts"))["prompts"]]


def test_drafts_are_invisible_to_plain_keys_and_callable_with_drafts_allowed(server, client, fake):
    register(server)
    register(server, "Draft", state="draft")
    register(server, name="secret", state="draft")
    drafts = keyed(server, allow_drafts=True)

    # A plain key: the draft looks exactly like a version that does not exist.
    missing = assert_problem(call(client, "/v1/prompts/echo/versions/9"), 404, "not_found")
    hidden = assert_problem(call(client, "/v1/prompts/echo/versions/2"), 404, "not_found")
    assert hidden["detail"] == missing["detail"].replace("9", "2")
    unknown = assert_problem(call(client, "/v1/prompts/nothing"), 404, "not_found")
    secret = assert_problem(call(client, "/v1/prompts/secret"), 404, "not_found")
    assert secret["detail"] == unknown["detail"].replace("nothing", "secret")
    assert_problem(call(client, "/v1/prompts/secret/versions/1"), 404, "not_found")
    assert_problem(client.get("/v1/prompts/secret"), 404, "not_found")
    assert served(client) == 1  # drafts are never the current version
    listing = ok(client.get("/v1/prompts"))["prompts"]
    assert [p["name"] for p in listing] == ["echo"]
    assert [v["version"] for v in ok(client.get("/v1/prompts/echo"))["versions"]] == [1]

    # A key allowed drafts, and the admin credential, call them by version.
    for caller in (drafts, server.admin):
        assert served(caller, "/v1/prompts/echo/versions/2") == 2
        assert served(caller, "/v1/prompts/secret/versions/1") == 1
        assert served(caller) == 1
        problem = assert_problem(call(caller, "/v1/prompts/secret"), 404, "not_found")
        assert "no published version yet" in problem["detail"]
    assert fake.requests[-1]["body"]["messages"][0]["content"] == "Repeat: x"
    assert [p["name"] for p in ok(drafts.get("/v1/prompts"))["prompts"]] == ["echo", "secret"]
    versions = ok(drafts.get("/v1/prompts/echo"))["versions"]
    assert [(v["version"], v["state"]) for v in versions] == [(1, "published"), (2, "draft")]

    # Published, the draft is everyone's (and, being newest, the current version).
    ok(act(server, 2, "publish"))
    assert served(client) == 2
    keys = ok(server.admin.get("/admin/v1/keys"))["keys"]
    assert sorted(k["allow_drafts"] for k in keys) == [False, True]
    bad = server.admin.post("/admin/v1/keys", json={"name": "x", "allow_drafts": "yes"})
    assert [e["path"] for e in assert_problem(bad, 422, "request_invalid")["errors"]] == [
        "/allow_drafts"
    ]
    drafts.close()


def test_default_state_setting_applies_to_api_and_files(make_server, fake, tmp_path):
    prompt_file(tmp_path, "greet")
    prompt_file(tmp_path, "live", "state: published\n")
    server = make_server(default_state="draft")
    assert register(server)["state"] == "draft"
    assert register(server, "Two", state="published")["state"] == "published"
    states = {
        p["name"]: [v["state"] for v in p["versions"]]
        for p in ok(server.admin.get("/admin/v1/prompts"))["prompts"]
    }
    assert states == {"echo": ["draft", "published"], "greet": ["draft"], "live": ["published"]}
    with server.consumer() as client:
        assert served(client) == 2
        assert_problem(client.post("/v1/prompts/greet", json={}), 404, "not_found")

    bad_state = server.admin.post("/admin/v1/prompts", json=echo("Three", state="retired"))
    problem = assert_problem(bad_state, 422, "definition_invalid")
    assert [e["path"] for e in problem["errors"]] == ["/state"]
    refused = run_cli(
        "keys",
        "list",
        database_url=f"sqlite:///{tmp_path}/x.db",
        cwd=tmp_path,
        PROMPTAPI_DEFAULT_STATE="deprecated",
    )
    assert refused.returncode == 2
    assert refused.stderr == (
        "promptapi: PROMPTAPI_DEFAULT_STATE must be one of draft, published, not 'deprecated'\n"
    )


# -- labels -------------------------------------------------------------------------------


def test_labels_route_unpinned_and_labelled_calls(server, client, fake):
    for text in ("One", "Two", "Three"):
        register(server, text)
    register(server, "Four", state="draft")
    digest = ok(server.admin.get("/admin/v1/prompts/echo/versions/1"))["digest"]
    drafts = keyed(server, allow_drafts=True)

    assert served(client) == 3  # no production label: the newest published version
    moved = ok(server.admin.put("/admin/v1/prompts/echo/labels/production", json={"version": 1}))
    assert moved == {
        "name": "echo",
        "label": "production",
        "version": 1,
        "previous": None,
        "changed": True,
    }
    assert served(client) == 1
    again = ok(server.admin.put("/admin/v1/prompts/echo/labels/production", json={"version": 1}))
    assert (again["changed"], again["previous"]) == (False, 1)

    ok(server.admin.put("/admin/v1/prompts/echo/labels/staging", json={"version": 2}))
    assert served(client, label="staging") == 2
    assert served(client, label="production") == 1
    # A label may point at a draft (not production): plain keys cannot see it.
    ok(server.admin.put("/admin/v1/prompts/echo/labels/next", json={"version": 4}))
    hidden = assert_problem(call(client, label="next"), 404, "not_found")
    unknown = assert_problem(call(client, label="nope"), 404, "not_found")
    assert unknown["detail"] == "Prompt 'echo' has no label 'nope'."
    assert unknown["label"] == "nope"
    assert hidden["detail"] == "Prompt 'echo' has no label 'next'."
    assert served(drafts, label="next") == 4

    problem = assert_problem(
        server.admin.put("/admin/v1/prompts/echo/labels/production", json={"version": 4}),
        409,
        "label_refused",
    )
    assert (problem["label"], problem["version"], problem["state"]) == ("production", 4, "draft")
    ok(server.admin.put("/admin/v1/prompts/echo/labels/staging", json={"version": 3}))
    ok(server.admin.put("/admin/v1/prompts/echo/labels/staging", json={"version": 2}))
    ok(act(server, 3, "retire"))
    problem = assert_problem(
        server.admin.put("/admin/v1/prompts/echo/labels/staging", json={"version": 3}),
        409,
        "label_refused",
    )
    assert problem["state"] == "retired"
    assert "labels cannot point at retired versions" in problem["detail"]

    bad = [
        ({"version": 99}, "/version"),
        ({"version": "1"}, "/version"),
        ({}, "/version"),
        ({"version": 1, "extra": 1}, "/extra"),
        ([], ""),
    ]
    for body, path in bad:
        response = server.admin.put("/admin/v1/prompts/echo/labels/staging", json=body)
        assert [e["path"] for e in assert_problem(response, 422, "request_invalid")["errors"]] == [
            path
        ], body
    bad_name = assert_problem(
        server.admin.put("/admin/v1/prompts/echo/labels/Not%20A%20Label", json={"version": 1}),
        400,
        "malformed_request",
    )
    assert bad_name["errors"][0]["path"] == "{label}"
    assert_problem(
        server.admin.put("/admin/v1/prompts/nope/labels/staging", json={"version": 1}),
        404,
        "not_found",
    )
    pinned_and_label = assert_problem(
        call(client, "/v1/prompts/echo/versions/1", label="staging"), 400, "malformed_request"
    )
    assert pinned_and_label["errors"] == [
        {"path": "?label", "message": "a pinned version and a label cannot be combined"}
    ]
    assert_problem(call(client, label=""), 400, "malformed_request")

    detail = ok(server.admin.get("/admin/v1/prompts/echo"))
    assert detail["labels"] == {"next": 4, "production": 1, "staging": 2}
    assert [v["labels"] for v in detail["versions"]] == [["production"], ["staging"], [], ["next"]]
    consumer_view = ok(client.get("/v1/prompts/echo"))
    assert consumer_view["labels"] == {"production": 1, "staging": 2}
    assert (consumer_view["version"], consumer_view["state"]) == (1, "published")
    assert ok(client.get("/v1/prompts"))["prompts"][0]["labels"] == consumer_view["labels"]
    # Labels are not content: the version's digest did not change.
    version = ok(server.admin.get("/admin/v1/prompts/echo/versions/1"))
    assert (version["digest"], version["labels"]) == (digest, ["production"])

    removed = ok(server.admin.delete("/admin/v1/prompts/echo/labels/production"))
    assert removed == {"name": "echo", "label": "production", "version": 1}
    assert served(client) == 2  # newest published now that 3 is retired
    assert_problem(server.admin.delete("/admin/v1/prompts/echo/labels/production"), 404)

    # Labels in a registration move with it, in the same transaction.
    created = server.admin.post(
        "/admin/v1/prompts", json=echo("Five", labels=["production", "staging"])
    )
    assert created.status_code == 201, created.text
    assert created.json()["labels"] == ["production", "staging"]
    assert served(client) == 5 and served(client, label="staging") == 5
    drafts.close()


def test_labels_declared_in_prompt_files(make_server, fake, tmp_path):
    folder = tmp_path / "prompts"
    body = (
        "name: greet\nversion: {v}\n{extra}input_schema: {{type: object}}\n"
        "messages: [{{role: user, content: 'hello {v}'}}]\n"
    )
    write = lambda v, extra="": (folder / f"greet/{v}.yaml").write_text(  # noqa: E731
        body.format(v=v, extra=extra)
    )
    (folder / "greet").mkdir(parents=True)
    write(1, "labels: [production]\n")
    write(2)
    write(3, "state: draft\nlabels: [staging]\n")
    server = make_server()
    with server.consumer() as client:
        assert served(client, "/v1/prompts/greet") == 1
    detail = ok(server.admin.get("/admin/v1/prompts/greet"))
    assert detail["labels"] == {"production": 1, "staging": 3}
    assert [v["state"] for v in detail["versions"]] == ["published", "published", "draft"]

    # Moving the label in the files moves it on sync; the versions themselves are unchanged.
    write(1)
    write(2, "labels: [production]\n")
    report = ok(server.admin.post("/admin/v1/sync"))
    assert {k: report[k] for k in ("created", "unchanged", "errors", "labels")} == {
        "created": [],
        "unchanged": ["greet@1", "greet@2", "greet@3"],
        "errors": [],
        "labels": ["greet:production -> 2"],
    }
    with server.consumer() as client:
        assert served(client, "/v1/prompts/greet") == 2
    assert ok(server.admin.post("/admin/v1/sync"))["labels"] == []

    # Two files claiming one label: an error naming both, and the label stays where it is.
    write(1, "labels: [production]\n")
    report = ok(server.admin.post("/admin/v1/sync"))
    first, second = str(folder / "greet/1.yaml"), str(folder / "greet/2.yaml")
    assert report["labels"] == []
    assert report["errors"] == [
        {
            "file": first,
            "detail": f"label 'production' of greet is also declared by {second}; a label "
            "points at one version, so declare it in one file (not moved)",
        },
        {
            "file": second,
            "detail": f"label 'production' of greet is also declared by {first}; a label "
            "points at one version, so declare it in one file (not moved)",
        },
    ]
    assert ok(server.admin.get("/admin/v1/prompts/greet"))["labels"]["production"] == 2

    # A file may not point production at a draft: that file is refused, nothing is stored.
    write(1)
    write(2)
    write(4, "state: draft\nlabels: [production]\n")
    report = ok(server.admin.post("/admin/v1/sync"))
    assert [e["file"] for e in report["errors"]] == [str(folder / "greet/4.yaml")]
    assert "production cannot point at a draft" in report["errors"][0]["detail"]
    assert [v["version"] for v in ok(server.admin.get("/admin/v1/prompts/greet"))["versions"]] == [
        1,
        2,
        3,
    ]
    bad = folder / "greet/5.yaml"
    bad.write_text(body.format(v=5, extra="labels: [Prod!]\nstate: gone\n"))
    report = ok(server.admin.post("/admin/v1/sync"))
    errors = [e for e in report["errors"] if e["file"] == str(bad)]
    assert [e["path"] for e in errors[0]["errors"]] == ["/labels/0", "/state"]


# -- two servers on one database ------------------------------------------------------------


def test_transitions_and_label_moves_reach_another_server(make_server, fake):
    a = make_server(refresh_interval=0.1)
    b = make_server(refresh_interval=0.1)
    register(a)
    register(a, "Two")
    register(a, "Three", state="draft")
    client = b.consumer("on-b")
    eventually(lambda: call(client).status_code == 200, what="B serving echo")
    assert served(client) == 2

    ok(a.admin.put("/admin/v1/prompts/echo/labels/production", json={"version": 1}))
    eventually(lambda: served(client) == 1, what="B following production to 1")
    ok(a.admin.put("/admin/v1/prompts/echo/labels/staging", json={"version": 2}))
    eventually(lambda: call(client, label="staging").status_code == 200, what="B knowing staging")

    ok(act(a, 2, "deprecate", {"sunset": SUNSET}))
    eventually(
        lambda: call(client, label="staging").headers.get("sunset") == SUNSET_HTTP,
        what="B sending deprecation headers",
    )
    ok(act(a, 3, "publish"))
    eventually(
        lambda: call(client, "/v1/prompts/echo/versions/3").status_code == 200,
        what="B serving the published draft",
    )
    ok(a.admin.delete("/admin/v1/prompts/echo/labels/production"))
    eventually(lambda: served(client) == 3, what="B dropping the production label")
    ok(act(a, 1, "retire"))
    eventually(
        lambda: call(client, "/v1/prompts/echo/versions/1").status_code == 410,
        what="B answering 410 for the retired version",
    )
    detail = ok(b.admin.get("/admin/v1/prompts/echo"))
    assert detail["labels"] == {"staging": 2}
    assert [v["state"] for v in detail["versions"]] == ["retired", "deprecated", "published"]
    client.close()


def test_a_prompt_file_state_only_sets_the_initial_state(make_server, fake, tmp_path):
    prompt_file(tmp_path, "greet", "state: draft\n")
    server = make_server()
    ok(act(server, 1, "publish", name="greet"))
    report = ok(server.admin.post("/admin/v1/sync"))
    assert report["unchanged"] == ["greet@1"] and report["errors"] == []
    version = ok(server.admin.get("/admin/v1/prompts/greet/versions/1"))
    assert version["state"] == "published"
    assert datetime.fromisoformat(version["state_changed_at"]) <= datetime.now(UTC)


def test_publishing_checks_the_policy_for_published_versions(make_server, tmp_path, fake):
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules:\n  examples: {severity: error, min: 1}\n")
    server = make_server(policy_file=policy)
    # A draft needs no examples yet; a published version does.
    assert register(server, state="draft")["state"] == "draft"
    refused = assert_problem(
        server.admin.post("/admin/v1/prompts", json=echo("Two")), 422, "policy_violation"
    )
    assert [e["path"] for e in refused["errors"]] == ["/examples"]
    problem = assert_problem(act(server, 1, "publish"), 422, "policy_violation")
    assert [(e["path"], e["rule"]) for e in problem["errors"]] == [("/examples", "examples")]
    assert ok(server.admin.get("/admin/v1/prompts/echo/versions/1"))["state"] == "draft"
    audit = ok(server.admin.get("/admin/v1/audit", params={"action": "version.publish"}))
    assert audit["records"] == []

    with_example = register(
        server, "Three", state="draft", examples=[{"input": {"text": "a"}, "output": "a"}]
    )
    assert ok(act(server, with_example["version"], "publish"))["state"] == "published"
