"""The diff between versions (HTTP and `promptapi diff`) and the audit log of admin changes
(`GET /admin/v1/audit`), on SQLite and PostgreSQL."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson

from tests.conftest import SENTIMENT
from tests.helpers import assert_problem, query
from tests.test_database import run_cli
from tests.test_lifecycle import act, echo, ok, register

LANG = {"type": "string", "maxLength": 10}


def sentiment_v2() -> dict[str, Any]:
    v2 = copy.deepcopy(SENTIMENT)
    v2["description"] = "Sentiment of a review."
    v2["model"] = "mock"
    v2["params"] = {"temperature": 0.5, "max_tokens": 50, "seed": 7}
    v2["input_schema"]["properties"]["text"]["maxLength"] = 2000
    v2["input_schema"]["properties"]["lang"] = LANG
    v2["output_schema"]["properties"]["label"]["enum"].append("mixed")
    v2["output_schema"]["required"] = ["label"]
    v2["messages"][0]["content"] = "Classify the sentiment of the review. Answer as JSON."
    return v2


EXPECTED_CHANGES = {
    "description": {"from": "Sentiment of a text.", "to": "Sentiment of a review."},
    "model": {"from": "default", "to": "mock"},
    "messages": {
        "diff": "--- sentiment@1/messages\n"
        "+++ sentiment@2/messages\n"
        "@@ -1,4 +1,4 @@\n"
        " ## system\n"
        "-Classify the sentiment. Answer as JSON.\n"
        "+Classify the sentiment of the review. Answer as JSON.\n"
        " ## user\n"
        " {{ text }}"
    },
    "params": [
        {"op": "added", "path": "/seed", "to": 7},
        {"op": "changed", "path": "/temperature", "from": 0, "to": 0.5},
    ],
    "input_schema": [
        {"op": "added", "path": "/properties/lang", "to": LANG},
        {"op": "changed", "path": "/properties/text/maxLength", "from": 1000, "to": 2000},
    ],
    "output_schema": [
        {"op": "added", "path": "/properties/label/enum/3", "to": "mixed"},
        {"op": "removed", "path": "/required/1", "from": "score"},
    ],
}

EXPECTED_TEXT = """\
sentiment: version 1 (published) -> version 2 (deprecated)
description:
  - "Sentiment of a text."
  + "Sentiment of a review."
model:
  - "default"
  + "mock"
messages:
  --- sentiment@1/messages
  +++ sentiment@2/messages
  @@ -1,4 +1,4 @@
   ## system
  -Classify the sentiment. Answer as JSON.
  +Classify the sentiment of the review. Answer as JSON.
   ## user
   {{ text }}
params:
  + /seed: 7
  ~ /temperature: 0 -> 0.5
input_schema:
  + /properties/lang: {"type":"string","maxLength":10}
  ~ /properties/text/maxLength: 1000 -> 2000
output_schema:
  + /properties/label/enum/3: "mixed"
  - /required/1: "score"
"""


def test_diff_lists_what_changed_per_field(server, database_url, tmp_path, fake):
    v1 = server.admin.post("/admin/v1/prompts", json=SENTIMENT)
    v2 = server.admin.post("/admin/v1/prompts", json=sentiment_v2())
    assert (v1.status_code, v2.status_code) == (201, 201)
    ok(act(server, 2, "deprecate", name="sentiment"))

    result = ok(server.admin.get("/admin/v1/prompts/sentiment/diff", params={"from": 1, "to": 2}))
    assert result["name"] == "sentiment"
    assert result["from"] == {"version": 1, "state": "published", "digest": v1.json()["digest"]}
    assert result["to"] == {"version": 2, "state": "deprecated", "digest": v2.json()["digest"]}
    assert result["identical"] is False
    assert result["changes"] == EXPECTED_CHANGES

    back = ok(server.admin.get("/admin/v1/prompts/sentiment/diff", params={"from": 2, "to": 1}))
    assert back["changes"]["model"] == {"from": "mock", "to": "default"}
    assert back["changes"]["params"][0] == {"op": "removed", "path": "/seed", "from": 7}
    same = ok(server.admin.get("/admin/v1/prompts/sentiment/diff", params={"from": 1, "to": 1}))
    assert (same["identical"], same["changes"]) == (True, {})

    # An output schema added where there was none, and a type change (1 vs true in JSON).
    register(server)
    register(server, output_schema={"type": "object", "default": 1}, params={"seed": 1})
    register(server, output_schema={"type": "object", "default": True}, state="draft")
    echo = ok(server.admin.get("/admin/v1/prompts/echo/diff", params={"from": 1, "to": 2}))
    assert echo["changes"] == {
        "output_schema": [{"op": "added", "path": "", "to": {"type": "object", "default": 1}}],
        "params": [{"op": "added", "path": "/seed", "to": 1}],
    }
    echo = ok(server.admin.get("/admin/v1/prompts/echo/diff", params={"from": 2, "to": 3}))
    assert echo["to"]["state"] == "draft"
    assert echo["changes"] == {
        "output_schema": [{"op": "changed", "path": "/default", "from": 1, "to": True}],
        "params": [{"op": "removed", "path": "/seed", "from": 1}],
    }

    for params, status, path in [
        ({"to": 2}, 400, "?from"),
        ({"from": 1}, 400, "?to"),
        ({"from": "x", "to": 2}, 400, "?from"),
        ({"from": 0, "to": 2}, 400, "?from"),
    ]:
        problem = assert_problem(
            server.admin.get("/admin/v1/prompts/sentiment/diff", params=params), status
        )
        assert problem["errors"][0]["path"] == path
    missing = server.admin.get("/admin/v1/prompts/sentiment/diff", params={"from": 1, "to": 9})
    assert assert_problem(missing, 404)["detail"] == "Prompt 'sentiment' has no version 9."
    unknown = server.admin.get("/admin/v1/prompts/nope/diff", params={"from": 1, "to": 2})
    assert assert_problem(unknown, 404)["detail"] == "No prompt named 'nope'."

    # The command reads the database and prints the same diff.
    text = run_cli("diff", "sentiment", "1", "2", database_url=database_url, cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    assert text.stdout == EXPECTED_TEXT
    as_json = run_cli(
        "diff", "sentiment", "1", "2", "--json", database_url=database_url, cwd=tmp_path
    )
    assert as_json.returncode == 0, as_json.stderr
    assert orjson.loads(as_json.stdout) == result
    nothing = run_cli("diff", "sentiment", "1", "1", database_url=database_url, cwd=tmp_path)
    assert nothing.stdout.splitlines()[1] == "no changes"
    bad = run_cli("diff", "sentiment", "1", "9", database_url=database_url, cwd=tmp_path)
    assert bad.returncode == 1
    assert "No version 9 of prompt 'sentiment'" in bad.stderr


# -- audit ----------------------------------------------------------------------------------


def audit(server, **params: Any) -> dict[str, Any]:
    return ok(server.admin.get("/admin/v1/audit", params=params))


def test_every_admin_change_writes_one_audit_record(server, database_url, fake):
    created = server.admin.post("/admin/v1/keys", json={"name": "svc", "allow_drafts": True})
    key = created.json()
    ok(server.admin.delete(f"/admin/v1/keys/{key['id']}"))
    ok(server.admin.delete(f"/admin/v1/keys/{key['id']}"))  # already revoked: no change
    register(server)
    register(server, "Two")
    assert server.admin.post("/admin/v1/prompts", json=echo("Two")).status_code == 200  # same
    ok(act(server, 1, "deprecate", {"sunset": "2031-06-30T23:59:59Z"}))
    ok(act(server, 1, "publish"))
    ok(server.admin.put("/admin/v1/prompts/echo/labels/production", json={"version": 2}))
    ok(server.admin.put("/admin/v1/prompts/echo/labels/production", json={"version": 2}))
    ok(server.admin.put("/admin/v1/prompts/echo/labels/production", json={"version": 1}))
    ok(server.admin.delete("/admin/v1/prompts/echo/labels/production"))
    ok(act(server, 2, "retire"))
    refused = act(server, 2, "publish")
    assert refused.status_code == 409
    folder = Path(server.settings.prompts_dir)
    (folder / "greet.yaml").write_text(
        "name: greet\nversion: 1\nlabels: [staging]\ninput_schema: {type: object}\n"
        "messages: [{role: user, content: hi}]\n"
    )
    ok(server.admin.post("/admin/v1/sync"))
    ok(server.admin.post("/admin/v1/sync"))  # nothing changed: nothing recorded

    records = audit(server)["records"]
    assert [(r["actor"], r["action"], r["target"], r["prompt"]) for r in reversed(records)] == [
        ("admin", "key.create", f"key:{key['id']}", None),
        ("admin", "key.revoke", f"key:{key['id']}", None),
        ("admin", "prompt.create", "echo@1", "echo"),
        ("admin", "version.create", "echo@2", "echo"),
        ("admin", "version.deprecate", "echo@1", "echo"),
        ("admin", "version.publish", "echo@1", "echo"),
        ("admin", "label.move", "echo:production", "echo"),
        ("admin", "label.move", "echo:production", "echo"),
        ("admin", "label.delete", "echo:production", "echo"),
        ("admin", "version.retire", "echo@2", "echo"),
        ("admin", "prompt.create", "greet@1", "greet"),
        ("admin", "label.move", "greet:staging", "greet"),
        ("admin", "sync.run", f"sync:{folder}", None),
    ]
    by_action = {}
    for record in reversed(records):
        by_action.setdefault(record["action"], []).append(record)
    key_record = by_action["key.create"][0]
    assert key_record["before"] is None
    assert key_record["after"] == {
        "name": "svc",
        "prefix": key["prefix"],
        "scopes": ["*"],
        "allow_drafts": True,
    }
    assert by_action["key.revoke"][0]["after"]["revoked_at"] is not None
    deprecate = by_action["version.deprecate"][0]
    assert deprecate["before"] == {
        "state": "published",
        "deprecated_at": None,
        "sunset": None,
        "successor": None,
    }
    assert deprecate["after"]["state"] == "deprecated"
    assert deprecate["after"]["sunset"] == "2031-06-30T23:59:59Z"
    assert deprecate["after"]["successor"] == 2
    assert by_action["version.publish"][0]["before"]["state"] == "deprecated"
    assert by_action["version.retire"][0]["after"]["state"] == "retired"
    created_v2 = by_action["version.create"][0]["after"]
    assert created_v2 == {"version": 2, "state": "published", "digest": created_v2["digest"]}
    moves = [(r["before"], r["after"]) for r in by_action["label.move"]]
    assert moves == [
        (None, {"version": 2}),
        ({"version": 2}, {"version": 1}),
        (None, {"version": 1}),
    ]
    assert by_action["label.delete"][0]["before"] == {"version": 1}
    assert by_action["label.delete"][0]["after"] is None
    assert by_action["sync.run"][0]["after"] == {
        "created": ["greet@1"],
        "labels": ["greet:staging -> 1"],
        "errors": 0,
    }

    # Never a secret: not the key, not its hash.
    text = server.admin.get("/admin/v1/audit").text
    key_hash = query(database_url, "SELECT key_hash FROM api_keys")[0][0]
    assert key["key"] not in text and key_hash not in text

    # Filters.
    assert {r["action"] for r in audit(server, action="label.move")["records"]} == {"label.move"}
    assert len(audit(server, action="label.move")["records"]) == 3
    assert {r["prompt"] for r in audit(server, prompt="greet")["records"]} == {"greet"}
    assert [r["action"] for r in audit(server, target="echo@1")["records"]] == [
        "version.publish",
        "version.deprecate",
        "prompt.create",
    ]
    assert audit(server, actor="cli")["records"] == []
    assert len(audit(server, actor="admin")["records"]) == len(records)
    middle = records[6]["at"]
    since = audit(server, since=middle)["records"]
    until = audit(server, until=middle)["records"]
    assert since == [r for r in records if r["at"] >= middle]
    assert until == [r for r in records if r["at"] < middle]
    assert len(since) + len(until) == len(records)

    # Keyset paging, newest first: every record once.
    paged, cursor, pages = [], None, 0
    while True:
        params = {"limit": 4, **({"cursor": cursor} if cursor else {})}
        page = audit(server, **params)
        paged += page["records"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert paged == records and pages == 4
    ids = [r["id"] for r in records]
    assert ids == sorted(ids, reverse=True)
    for params, path in [
        ({"cursor": "abc"}, "?cursor"),
        ({"limit": 0}, "?limit"),
        ({"since": "yesterday"}, "?since"),
        ({"until": "2026-01-01"}, "?until"),
    ]:
        problem = assert_problem(server.admin.get("/admin/v1/audit", params=params), 400)
        assert problem["errors"][0]["path"] == path


def test_a_version_has_one_digest_in_the_api_the_diff_the_catalog_and_the_audit(
    server, database_url, fake
):
    register(server)  # numbered by the server
    register(server, "Say again", version=2)  # numbered by the caller
    prompts_dir = server.settings.prompts_dir
    (prompts_dir / "echo-3.yaml").write_text(
        orjson.dumps({**echo("Once more"), "version": 3}).decode()
    )
    assert ok(server.admin.post("/admin/v1/sync"))["created"] == ["echo@3"]
    digests = {
        n: ok(server.admin.get(f"/admin/v1/prompts/echo/versions/{n}"))["digest"] for n in (1, 2, 3)
    }
    assert len(set(digests.values())) == 3
    created = {
        int(r["target"].split("@")[1]): r["after"]["digest"]
        for r in audit(server, prompt="echo")["records"]
        if r["action"] in ("prompt.create", "version.create")
    }
    assert created == digests
    diffed = ok(server.admin.get("/admin/v1/prompts/echo/diff", params={"from": 1, "to": 3}))
    assert (diffed["from"]["digest"], diffed["to"]["digest"]) == (digests[1], digests[3])
    page = server.client.get("/prompts/echo")
    assert page.status_code == 200
    assert all(digests[n][:12] in page.text for n in (1, 2, 3))


def test_cli_changes_and_the_generated_admin_token_are_audited(
    make_server, database_url, tmp_path, fake
):
    server = make_server(admin_token=None)  # generates and stores a token at start
    server.stop()
    created = run_cli(
        "keys", "create", "batch", "--allow-drafts", database_url=database_url, cwd=tmp_path
    )
    assert created.returncode == 0, created.stderr
    key = orjson.loads(created.stdout)
    assert key["allow_drafts"] is True
    assert (
        run_cli("keys", "revoke", key["id"], database_url=database_url, cwd=tmp_path).returncode
        == 0
    )
    reset = run_cli("admin-token", "reset", database_url=database_url, cwd=tmp_path)
    assert reset.returncode == 0, reset.stderr
    token = reset.stdout.strip()

    rows = query(database_url, "SELECT actor, action, target FROM audit_log ORDER BY id")
    assert rows == [
        ("system", "admin_token.create", "admin_token"),
        ("cli", "key.create", f"key:{key['id']}"),
        ("cli", "key.revoke", f"key:{key['id']}"),
        ("cli", "admin_token.reset", "admin_token"),
    ]
    everything = str(query(database_url, "SELECT before, after FROM audit_log"))
    stored = query(database_url, "SELECT value FROM meta")
    for secret in (token, key["key"], *[row[0] for row in stored]):
        assert secret not in everything
