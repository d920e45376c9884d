"""Prompt files both ways: `promptapi export` writes what is stored as files that `sync` reads
back unchanged; `sync --dry-run` (CLI and HTTP) writes nothing; Prompty files are imported."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from promptapi.cli import main
from tests.conftest import SENTIMENT
from tests.helpers import assert_problem, query
from tests.test_files import EXAMPLES_DIR, greet_yaml, outcome, write

DATA = Path(__file__).resolve().parent / "data"

# Content that is easy to get wrong in YAML: multi-line text with trailing spaces, tabs and
# blank lines, strings that look like booleans, numbers and nulls, unicode, quotes, a `$defs`
# reference, an output schema and expectations.
TRICKY: dict[str, Any] = {
    "name": "tricky",
    "description": "Line one.\nLine two with trailing spaces   \n\n\tand a tab.\n",
    "model": "default",
    "params": {"temperature": 0.25, "max_tokens": 64, "stop": ["\n\n", "END"]},
    "input_schema": {
        "type": "object",
        "properties": {
            "answer": {"enum": ["yes", "no", "on", "off", "null", "1.0", "0777"]},
            "text": {
                "type": "string",
                "maxLength": 50,
                "description": "Ünïcödé — “quotes” 'single'",
            },
            "items": {"type": "array", "items": {"$ref": "#/$defs/item"}, "maxItems": 3},
        },
        "required": ["answer"],
        "additionalProperties": False,
        "$defs": {"item": {"type": "string", "maxLength": 5, "pattern": "^[a-z]+$"}},
    },
    "output_schema": {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    },
    "messages": [
        {
            "role": "system",
            "content": "  Leading spaces.\n{% if text is defined %}Text: {{ text }}{% endif %}\n"
            "# not a comment\n- not a list: {{ answer }}\n",
        },
        {"role": "user", "content": "{{ answer }}"},
    ],
    "examples": [
        {
            "name": "a yes",
            "input": {"answer": "yes", "items": ["ab"]},
            "output": {"ok": True},
            "expect": {"fields": {"/ok": True}, "contains": "ok"},
        }
    ],
}


def cli(
    monkeypatch: pytest.MonkeyPatch, database_url: str, *args: str, prompts_dir: Path | None = None
) -> int:
    monkeypatch.setenv("PROMPTAPI_DATABASE_URL", database_url)
    if prompts_dir is not None:
        monkeypatch.setenv("PROMPTAPI_PROMPTS_DIR", str(prompts_dir))
    return main(list(args))


def stored(database_url: str) -> set[tuple[str, int, str]]:
    return set(
        query(
            database_url,
            "SELECT p.name, v.version, v.digest FROM prompt_versions v "
            "JOIN prompts p ON p.id = v.prompt_id",
        )
    )


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("PROMPTAPI_", "OPENAI_")):
            monkeypatch.delenv(name)


def test_export_then_sync_round_trip(
    make_server, database_url, tmp_path, monkeypatch, capsys, fake
):
    server = make_server(prompts_dir=EXAMPLES_DIR)
    assert server.admin.post("/admin/v1/prompts", json=TRICKY).status_code == 201
    second = {**copy.deepcopy(TRICKY), "description": "Version two."}
    assert server.admin.post("/admin/v1/prompts", json=second).status_code == 201
    assert server.admin.post("/admin/v1/prompts", json=SENTIMENT).status_code == 201
    before = stored(database_url)
    # The four shipped prompts, tricky 1 and 2, and SENTIMENT as sentiment version 2.
    assert len(before) == 7

    out = tmp_path / "exported"
    assert cli(monkeypatch, database_url, "export", str(out)) == 0
    printed = capsys.readouterr().out
    assert "7 written, 0 unchanged, 0 conflicts" in printed
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.yaml")) == [
        "extract-entities/1.yaml",
        "sentiment/1.yaml",
        "sentiment/2.yaml",
        "summarize/1.yaml",
        "translate/1.yaml",
        "tricky/1.yaml",
        "tricky/2.yaml",
    ]

    # The file reads well: fields in the documented order, templates as block scalars.
    text = (out / "tricky" / "1.yaml").read_text()
    assert [line.split(":")[0] for line in text.splitlines() if line[:1].isalpha()] == [
        "name", "version", "description", "model", "params", "input_schema",
        "output_schema", "messages", "examples", "state",
    ]  # fmt: skip
    assert "content: |" in text
    assert yaml.safe_load(text)["messages"] == TRICKY["messages"]

    # Into a fresh database: every version comes back with the same digest.
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    assert cli(monkeypatch, fresh, "sync", "--dir", str(out)) == 0
    assert stored(fresh) == before
    # Into the same database: nothing changes.
    capsys.readouterr()
    assert cli(monkeypatch, database_url, "sync", "--dir", str(out)) == 0
    assert "0 created, 7 unchanged, 0 errors" in capsys.readouterr().out
    assert stored(database_url) == before
    # Exporting again over the same folder leaves every file alone.
    assert cli(monkeypatch, database_url, "export", str(out)) == 0
    assert "0 written, 7 unchanged, 0 conflicts" in capsys.readouterr().out


def test_export_keeps_hand_written_files_and_refuses_to_overwrite_changed_ones(
    make_server, database_url, tmp_path, monkeypatch, capsys
):
    prompts = tmp_path / "prompts"
    handwritten = write(prompts / "greet.yaml", "# reviewed in PR 12\n" + greet_yaml())
    make_server()  # syncs greet@1 from prompts/greet.yaml at start
    # The file does not say its state: export adds that line and leaves the rest alone.
    assert cli(monkeypatch, database_url, "export", str(prompts)) == 0
    assert f"written    {handwritten}" in capsys.readouterr().out
    text = handwritten.read_text()
    assert text == "# reviewed in PR 12\n" + greet_yaml().rstrip("\n") + "\nstate: published\n"
    assert cli(monkeypatch, database_url, "export", str(prompts)) == 0
    assert "0 written, 1 unchanged, 0 conflicts" in capsys.readouterr().out
    assert handwritten.read_text() == text
    assert not (prompts / "greet").exists()

    handwritten.write_text(greet_yaml(greeting="Wave at"))
    assert cli(monkeypatch, database_url, "export", str(prompts)) == 1
    captured = capsys.readouterr()
    assert f"conflict   {handwritten}: holds other content for this version" in captured.err
    assert "Wave at" in handwritten.read_text()

    assert cli(monkeypatch, database_url, "export", "--force", str(prompts)) == 0
    assert f"written    {handwritten}" in capsys.readouterr().out
    assert yaml.safe_load(handwritten.read_text())["messages"][0]["content"] == (
        "Say hello to {{ who }}."
    )


def test_export_by_name(make_server, database_url, tmp_path, monkeypatch, capsys):
    make_server(prompts_dir=EXAMPLES_DIR)
    out = tmp_path / "out"
    assert cli(monkeypatch, database_url, "export", str(out), "--name", "sentiment") == 0
    assert [p.relative_to(out).as_posix() for p in out.rglob("*.yaml")] == ["sentiment/1.yaml"]


# -- dry run ------------------------------------------------------------------------------


def test_cli_sync_dry_run_writes_nothing(make_server, database_url, tmp_path, monkeypatch, capsys):
    prompts = tmp_path / "prompts"
    write(prompts / "greet" / "1.yaml", greet_yaml())
    make_server()
    write(prompts / "greet" / "2.yaml", greet_yaml(version=2, greeting="Wave at"))
    write(prompts / "other" / "1.yaml", greet_yaml(name="other"))
    write(prompts / "clash" / "1.yaml", greet_yaml(name="greet", greeting="Changed"))
    # Sorted after other/1.yaml: the dry run knows it would have created other@1 by then.
    write(prompts / "zz-other.yaml", greet_yaml(name="other", greeting="Differently"))
    before = stored(database_url)
    revision = query(database_url, "SELECT value FROM revision")

    code = cli(monkeypatch, database_url, "sync", "--dry-run", "--dir", str(prompts))
    captured = capsys.readouterr()
    assert code == 1
    assert "would create greet@2" in captured.out
    assert "would create other@1" in captured.out
    assert "unchanged  greet@1" in captured.out
    assert f"error      {prompts / 'clash' / '1.yaml'}: greet version 1 is already stored" in (
        captured.err
    )
    assert f"error      {prompts / 'zz-other.yaml'}: other version 1 is already stored" in (
        captured.err
    )
    assert "2 to create, 1 unchanged, 2 errors (dry run: nothing was written)" in captured.out
    assert stored(database_url) == before
    assert query(database_url, "SELECT value FROM revision") == revision

    # The real sync does what the dry run said.
    assert cli(monkeypatch, database_url, "sync", "--dir", str(prompts)) == 1
    assert "2 created, 1 unchanged, 2 errors" in capsys.readouterr().out


def test_http_sync_dry_run_writes_nothing(make_server, database_url, tmp_path, fake):
    server = make_server()
    write(tmp_path / "prompts" / "greet" / "1.yaml", greet_yaml())
    before = stored(database_url)
    response = server.admin.post("/admin/v1/sync?dry_run=true")
    assert response.status_code == 200, response.text
    body = response.json()
    assert outcome(body) == {"created": ["greet@1"], "unchanged": [], "errors": []}
    assert body["dry_run"] is True
    assert stored(database_url) == before
    assert server.admin.get("/admin/v1/prompts/greet").status_code == 404
    assert_problem(server.admin.post("/admin/v1/sync?dry_run=perhaps"), 400, "malformed_request")
    # Without dry_run it happens.
    assert outcome(server.admin.post("/admin/v1/sync").json())["created"] == ["greet@1"]
    assert server.admin.get("/admin/v1/prompts/greet").status_code == 200


# -- Prompty import -----------------------------------------------------------------------


def test_import_prompty_file(tmp_path, monkeypatch, capsys):
    out = tmp_path / "prompts"
    code = cli(
        monkeypatch,
        f"sqlite:///{tmp_path / 'unused.db'}",
        "import",
        str(DATA / "support-chat.prompty"),
        "--out",
        str(out),
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    target = out / "support-chat" / "1.yaml"
    assert f"written    {target}" in captured.out
    assert "note: model.parameters: dropped response_format (not promptapi params)" in captured.out
    assert "note: model: 'gpt-4o-mini' is mapped to the alias 'default'" in captured.out
    assert yaml.safe_load(target.read_text()) == {
        "name": "support-chat",
        "version": 1,
        "description": "Answers a customer's question about their order, in the customer's "
        "language.",
        "model": "default",
        "params": {"max_tokens": 400, "temperature": 0.2},
        "input_schema": {
            "type": "object",
            "properties": {
                "customer": {"type": "string", "description": "The customer's first name."},
                "question": {"type": "string", "description": "What the customer asks."},
                "order_count": {
                    "type": "integer",
                    "description": "How many orders the customer has placed.",
                    "default": 0,
                },
                "vip": {"type": "boolean"},
            },
            "required": ["customer", "question", "order_count"],
            "additionalProperties": False,
        },
        "messages": [
            {
                "role": "system",
                "content": "You are a friendly support agent for Contoso.\n"
                "You are helping {{customer}}, who has placed {{order_count}} orders.\n"
                "{% if vip is defined and vip %}Treat them as a VIP customer.{% endif %}\n"
                "Answer briefly and politely.\n",
            },
            {"role": "user", "content": "{{question}}\n"},
        ],
        "examples": [
            {"input": {"customer": "Jane", "question": "Where is my parcel?", "order_count": 3}}
        ],
    }
    # The result renders, and lints with only the warnings an unbounded import deserves.
    assert main(["render", "support-chat", "--dir", str(out), "--input", '{"customer": "Al", '
                 '"question": "Hi?", "order_count": 1, "vip": true}']) == 0  # fmt: skip
    rendered = capsys.readouterr().out
    assert "Treat them as a VIP customer." in rendered
    assert main(["lint", str(out)]) == 0
    assert capsys.readouterr().out.count("[bounded-strings]") == 2

    # A second import does not overwrite without --force.
    again = cli(
        monkeypatch, "sqlite://", "import", str(DATA / "support-chat.prompty"), "--out", str(out)
    )
    assert again == 1
    assert "exists (--force overwrites it)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("---\nname: x\nno closing line\n", "the front matter has no closing '---' line"),
        ("---\nname: [x\n---\nuser:\nhi\n", "invalid YAML front matter"),
        ("---\nname: x\n---\n\n", "the body has no message text"),
        (
            "---\nname: x\n---\n{% for m in history %}\n{{m.role}}:\n{{m.content}}\n{% endfor %}\n",
            "a role marker is produced by template code",
        ),
        (
            "---\nname: x\n---\nuser:\n{{ a ",
            "The prompt definition has 1 problem. Nothing written.",
        ),
    ],
)
def test_import_refuses_what_it_cannot_convert(tmp_path, monkeypatch, capsys, text, message):
    source = write(tmp_path / "bad.prompty", text)
    code = cli(monkeypatch, "sqlite://", "import", str(source), "--out", str(tmp_path / "out"))
    assert code == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# -- lifecycle and labels round trip -------------------------------------------------------


@pytest.fixture
def fresh_url(database_url, tmp_path, request):
    """Makes new, migrated databases of the kind `database_url` is."""
    made: list[str] = []

    def make(tag: str) -> str:
        if database_url.startswith("sqlite"):
            return f"sqlite:///{tmp_path / f'{tag}.db'}"
        from tests.conftest import _pg_execute, _pg_url

        admin = request.getfixturevalue("postgres_admin_url")
        template = request.getfixturevalue("postgres_template")
        name = f"{template}_{tag}_{os.getpid()}_{len(made)}"[:63]
        _pg_execute(admin, f"CREATE DATABASE {name} TEMPLATE {template}")
        made.append(name)
        return _pg_url(admin, name)

    yield make
    if made:
        from tests.conftest import _pg_execute

        admin = request.getfixturevalue("postgres_admin_url")
        for name in made:
            _pg_execute(admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def echo_version(text: str) -> dict[str, Any]:
    return {
        "name": "echo",
        "description": "Says the text back.",
        "input_schema": {
            "type": "object",
            "properties": {"text": {"type": "string", "maxLength": 100}},
            "required": ["text"],
            "additionalProperties": False,
        },
        "messages": [{"role": "user", "content": f"{text}: {{{{ text }}}}"}],
    }


def served(server) -> dict[str, Any]:
    """What callers depend on: every version's state and labels, and what an unpinned call
    (and one per label) gets."""
    seen: dict[str, Any] = {}
    with server.consumer() as client:
        for prompt in server.admin.get("/admin/v1/prompts").json()["prompts"]:
            name = prompt["name"]
            detail = server.admin.get(f"/admin/v1/prompts/{name}").json()
            call = client.post(f"/v1/prompts/{name}", json={"text": "x"})
            by_label = {}
            for label in detail["labels"]:
                answer = client.post(f"/v1/prompts/{name}?label={label}", json={"text": "x"})
                by_label[label] = (answer.status_code, answer.json().get("prompt"))
            seen[name] = {
                "versions": [
                    (v["version"], v["state"], v["digest"], v["successor"], v["sunset"])
                    for v in detail["versions"]
                ],
                "labels": detail["labels"],
                "unpinned": (call.status_code, call.json().get("prompt")),
                "by_label": by_label,
            }
    return seen


def test_export_then_sync_into_a_new_database_serves_the_same_versions(
    make_server, database_url, fresh_url, tmp_path, monkeypatch, capsys, fake
):
    server = make_server()
    admin = server.admin
    for text in ("One", "Two", "Three", "Four", "Five"):
        assert admin.post("/admin/v1/prompts", json=echo_version(text)).status_code == 201
    assert admin.post("/admin/v1/prompts", json={**echo_version("Hi"), "name": "gone"}).is_success
    draft = {**echo_version("Draft"), "state": "draft"}
    assert admin.post("/admin/v1/prompts", json=draft).status_code == 201  # echo@6
    steps = [
        ("echo", 1, "retire"),
        ("echo", 2, "deprecate"),
        ("echo", 4, "deprecate"),
        ("echo", 4, "publish"),  # undeprecated: published again
        ("gone", 1, "retire"),
    ]
    for name, number, action in steps:
        assert admin.post(f"/admin/v1/prompts/{name}/versions/{number}/{action}").is_success
    # production on a deprecated version (unpinned callers get it, not the newest published).
    for label, number in (("production", 2), ("staging", 5), ("canary", 6), ("old", 3)):
        body = {"version": number}
        assert admin.put(f"/admin/v1/prompts/echo/labels/{label}", json=body).is_success
    assert admin.delete("/admin/v1/prompts/echo/labels/old").is_success
    before = served(server)
    assert before["echo"]["unpinned"][1]["version"] == 2
    assert before["gone"]["unpinned"][0] == 410

    out = tmp_path / "exported"
    assert cli(monkeypatch, database_url, "export", str(out)) == 0
    capsys.readouterr()
    files = {
        p.relative_to(out).as_posix(): yaml.safe_load(p.read_text()) for p in out.rglob("*.yaml")
    }
    assert {k: (v["state"], v.get("labels")) for k, v in files.items()} == {
        "echo/1.yaml": ("retired", None),
        "echo/2.yaml": ("deprecated", ["production"]),
        "echo/3.yaml": ("published", None),
        "echo/4.yaml": ("published", None),
        "echo/5.yaml": ("published", ["staging"]),
        "echo/6.yaml": ("draft", ["canary"]),
        "gone/1.yaml": ("retired", None),
    }

    # Into a new database through the CLI ...
    by_cli = fresh_url("cli")
    assert cli(monkeypatch, by_cli, "sync", "--dir", str(out)) == 0
    assert "7 created, 0 unchanged, 0 errors" in capsys.readouterr().out
    # ... and through HTTP (the start-up sync, then POST /admin/v1/sync finds nothing to do).
    copy_ = make_server(database_url=fresh_url("http"), prompts_dir=out)
    again = copy_.admin.post("/admin/v1/sync").json()
    assert (again["created"], again["states"], again["labels"], again["errors"]) == ([], [], [], [])
    assert served(copy_) == before
    copy_.stop()
    from_cli = make_server(database_url=by_cli, prompts_dir=tmp_path / "empty")
    assert served(from_cli) == before


def test_sync_moves_a_stored_version_forward_never_back(
    make_server, database_url, tmp_path, monkeypatch, capsys, fake
):
    folder = tmp_path / "files"
    server = make_server(prompts_dir=folder)
    for text in ("One", "Two"):
        assert server.admin.post("/admin/v1/prompts", json=echo_version(text)).status_code == 201
    assert cli(monkeypatch, database_url, "export", str(folder)) == 0

    def declare(number: int, state: str, labels: str = "") -> None:
        path = folder / "echo" / f"{number}.yaml"
        kept = [x for x in path.read_text().splitlines() if not x.startswith(("state", "labels"))]
        path.write_text("\n".join(kept) + f"\n{labels}state: {state}\n")

    # Forward: 1 is retired (after production, declared on 2, moved off it), 2 deprecated.
    assert server.admin.put(
        "/admin/v1/prompts/echo/labels/production", json={"version": 1}
    ).is_success
    declare(1, "retired")
    declare(2, "deprecated", "labels: [production]\n")
    report = server.admin.post("/admin/v1/sync").json()
    assert report["errors"] == []
    assert report["states"] == ["echo@2: published -> deprecated", "echo@1: published -> retired"]
    assert report["labels"] == ["echo:production -> 2"]
    versions = server.admin.get("/admin/v1/prompts/echo").json()["versions"]
    assert [(v["version"], v["state"]) for v in versions] == [(1, "retired"), (2, "deprecated")]

    # Back: the files say published, the versions stay where they are, without an error.
    declare(1, "published")
    declare(2, "published", "labels: [production]\n")
    report = server.admin.post("/admin/v1/sync").json()
    assert (report["errors"], report["states"]) == ([], [])
    versions = server.admin.get("/admin/v1/prompts/echo").json()["versions"]
    assert [(v["version"], v["state"]) for v in versions] == [(1, "retired"), (2, "deprecated")]

    # A draft file published with production at once: it moves before the label does.
    draft = {**echo_version("Three"), "state": "draft"}
    assert server.admin.post("/admin/v1/prompts", json=draft).status_code == 201
    assert cli(monkeypatch, database_url, "export", str(folder)) == 0
    declare(2, "deprecated")
    declare(3, "published", "labels: [production]\n")
    report = server.admin.post("/admin/v1/sync").json()
    assert report["errors"] == []
    assert report["states"] == ["echo@3: draft -> published"]
    assert server.admin.get("/admin/v1/prompts/echo").json()["labels"] == {"production": 3}
    audit = server.admin.get("/admin/v1/audit", params={"action": "sync.run"}).json()
    assert audit["records"][0]["after"]["states"] == ["echo@3: draft -> published"]
