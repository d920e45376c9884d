"""Prompt files are read like hostile input: aliases refused (a sub-kilobyte "billion laughs"
would otherwise expand to billions of values), nesting and size bounded before parsing, only
regular files inside the prompts folder, and export never writes through a symbolic link."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from tests.hostile import while_responsive
from tests.test_files import greet_yaml, run_cli, write

MiB = 1024 * 1024


def billion_laughs() -> str:
    """Nine levels of nine aliases: about 387 million strings once expanded, in < 1 KB."""
    lines = [
        "name: bomb",
        "version: 1",
        'l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
    ]
    for level in range(1, 9):
        refs = ",".join([f"*l{level - 1}"] * 9)
        lines.append(f"l{level}: &l{level} [{refs}]")
    lines.append("input_schema: {type: object, default: *l8}")
    text = "\n".join(lines) + "\n"
    assert len(text) < 1024
    return text


def test_lint_refuses_a_billion_laughs_naming_the_file_and_line(tmp_path):
    path = write(tmp_path / "bomb.yaml", billion_laughs())
    result = run_cli("lint", str(path), cwd=tmp_path)
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert result.stdout.splitlines() == [
        f"{path}: /: [file] invalid YAML at line 3, column 5: aliases and anchors "
        "(*name, &name, <<) are not allowed (error)"
    ]


def test_sync_endpoint_reports_a_billion_laughs_and_stays_up(make_server, tmp_path, fake):
    server = make_server()
    folder = tmp_path / "prompts"
    write(folder / "bomb.yaml", billion_laughs())
    write(folder / "greet" / "1.yaml", greet_yaml())
    response = while_responsive(server, lambda: server.admin.post("/admin/v1/sync"))
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["created"] == ["greet@1"]
    assert report["errors"] == [
        {
            "file": str(folder / "bomb.yaml"),
            "detail": "invalid YAML at line 3, column 5: aliases and anchors (*name, &name, "
            "<<) are not allowed",
        }
    ]
    assert server.client.get("/healthz").status_code == 200


def test_server_starts_with_a_billion_laughs_in_its_folder_and_reports_it(
    make_server, tmp_path, fake, caplog
):
    folder = tmp_path / "prompts"
    write(folder / "bomb.yaml", billion_laughs())
    write(folder / "greet" / "1.yaml", greet_yaml())
    with caplog.at_level(logging.ERROR, logger="promptapi"):
        server = make_server()
    assert server.client.get("/healthz").status_code == 200
    assert [p["name"] for p in server.admin.get("/admin/v1/prompts").json()["prompts"]] == ["greet"]
    assert any(
        f"prompt file {folder / 'bomb.yaml'}: invalid YAML at line 3" in r.getMessage()
        for r in caplog.records
    ), [r.getMessage() for r in caplog.records]


def test_cli_sync_of_a_billion_laughs_exits_1(tmp_path):
    folder = tmp_path / "prompts"
    write(folder / "bomb.yaml", billion_laughs())
    database = f"sqlite:///{tmp_path / 'db.sqlite'}"
    result = run_cli("sync", cwd=tmp_path, database_url=database, prompts_dir=folder)
    assert result.returncode == 1, result.stderr
    assert "aliases and anchors" in result.stderr


def test_models_and_policy_files_bound_their_aliases(tmp_path):
    """The operator's own files may share settings through aliases, within a bound."""
    bomb = billion_laughs().replace("name: bomb\nversion: 1\n", "")
    folder = tmp_path / "p"
    folder.mkdir()
    models = write(tmp_path / "models.yaml", bomb)
    linted = run_cli(
        "lint", str(folder), cwd=tmp_path, extra_env={"PROMPTAPI_MODELS_FILE": str(models)}
    )
    assert linted.returncode == 2, linted.stderr
    assert f"cannot read models file {models}: invalid YAML at line" in linted.stderr
    assert "expand to more than 100000 values" in linted.stderr

    policy = write(tmp_path / "policy.yaml", bomb)
    linted = run_cli("lint", str(folder), "--policy", str(policy), cwd=tmp_path)
    assert linted.returncode == 2, linted.stderr
    assert f"cannot read policy file {policy}: invalid YAML at line" in linted.stderr
    assert "expand to more than 100000 values" in linted.stderr

    shared = write(
        tmp_path / "shared.yaml",
        "rules:\n  description: &w warning\n  bounded-strings: *w\n",
    )
    ok = run_cli("lint", str(folder), "--policy", str(shared), cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr


def test_yaml_values_that_are_not_json_are_problems_not_crashes(make_server, tmp_path, fake):
    folder = tmp_path / "prompts"
    write(
        folder / "digits.yaml", greet_yaml() + "examples: [{input: {who: 1" + "1" * 5000 + "}}]\n"
    )
    write(folder / "binary.yaml", greet_yaml(name="bin") + "description: !!binary aGVsbG8=\n")
    write(folder / "deep.yaml", "name: deep\nversion: 1\ninput_schema: " + "[" * 300 + "]" * 300)
    server = make_server()
    report = server.admin.post("/admin/v1/sync").json()
    errors = {Path(e["file"]).name: e["detail"] for e in report["errors"]}
    assert errors["digits.yaml"] == "invalid YAML: a number has too many digits to convert"
    assert errors["binary.yaml"].endswith("the tag 'tag:yaml.org,2002:binary' is not a JSON value")
    assert errors["deep.yaml"].endswith("nested more than 254 levels deep")


def test_a_5_mb_template_is_refused_before_it_is_read(make_server, tmp_path, fake):
    folder = tmp_path / "prompts"
    big = greet_yaml(greeting="x" * (5 * MiB))
    write(folder / "big.yaml", big)
    server = make_server()
    report = while_responsive(server, lambda: server.admin.post("/admin/v1/sync").json())
    size = len(big.encode())
    assert report["errors"] == [
        {
            "file": str(folder / "big.yaml"),
            "detail": f"the file is {size} bytes; the limit is {MiB} bytes",
        }
    ]
    assert report["created"] == []


def test_the_file_limit_is_the_body_limit(tmp_path):
    folder = tmp_path / "prompts"
    path = write(folder / "greet.yaml", greet_yaml(greeting="x" * 3000))
    small = run_cli(
        "lint", str(folder), cwd=tmp_path, extra_env={"PROMPTAPI_MAX_BODY_BYTES": "2000"}
    )
    assert small.returncode == 1
    assert f"{path}: /: [file] the file is" in small.stdout
    assert "the limit is 2000 bytes" in small.stdout
    assert run_cli("lint", str(folder), cwd=tmp_path).returncode == 0


def test_sync_refuses_a_symlink_out_of_the_folder(make_server, tmp_path, fake):
    outside = write(tmp_path / "outside" / "greet.yaml", greet_yaml())
    folder = tmp_path / "prompts"
    folder.mkdir()
    (folder / "greet.yaml").symlink_to(outside)
    (folder / "shared").symlink_to(outside.parent, target_is_directory=True)
    (folder / "loop-a.yaml").symlink_to("loop-b.yaml")
    (folder / "loop-b.yaml").symlink_to("loop-a.yaml")
    (folder / "dangling.yaml").symlink_to("nowhere.yaml")
    server = make_server()
    report = server.admin.post("/admin/v1/sync").json()
    assert report["created"] == []
    nowhere = "is a symbolic link that leads nowhere; not followed"
    assert sorted((Path(e["file"]).name, e["detail"]) for e in report["errors"]) == [
        ("dangling.yaml", nowhere),
        ("greet.yaml", "is a symbolic link out of the prompts folder; not followed"),
        ("loop-a.yaml", nowhere),
        ("loop-b.yaml", nowhere),
        ("shared", "is a symbolic link to a folder; not followed"),
    ]
    assert server.admin.get("/admin/v1/prompts").json()["prompts"] == []


def test_a_symlink_to_a_file_inside_the_folder_is_read(make_server, tmp_path, fake):
    """How a Kubernetes ConfigMap volume lays out its files: links into a hidden folder."""
    folder = tmp_path / "prompts"
    target = write(folder / "..data" / "greet.yaml", greet_yaml())
    (folder / "greet.yaml").symlink_to(Path("..data") / "greet.yaml")
    assert target.exists()
    server = make_server()
    assert [p["name"] for p in server.admin.get("/admin/v1/prompts").json()["prompts"]] == ["greet"]


def test_a_fifo_in_the_folder_does_not_hang_sync(make_server, tmp_path, fake):
    folder = tmp_path / "prompts"
    folder.mkdir()
    os.mkfifo(folder / "pipe.yaml")
    write(folder / "greet" / "1.yaml", greet_yaml())
    server = make_server()
    report = while_responsive(
        server, lambda: server.admin.post("/admin/v1/sync").json(), deadline_s=10
    )
    assert report["errors"] == [
        {
            "file": str(folder / "pipe.yaml"),
            "detail": "not a regular file (a FIFO, socket, device or folder); not read",
        }
    ]
    lint = run_cli("lint", str(folder), cwd=tmp_path)
    assert lint.returncode == 1
    assert "pipe.yaml: /: [file] not a regular file" in lint.stdout


def test_export_force_never_writes_through_a_symlink(tmp_path):
    database = f"sqlite:///{tmp_path / 'db.sqlite'}"
    source = tmp_path / "source"
    write(source / "greet" / "1.yaml", greet_yaml())
    write(source / "other" / "1.yaml", greet_yaml(name="other"))
    assert run_cli("sync", cwd=tmp_path, database_url=database, prompts_dir=source).returncode == 0

    victim = write(tmp_path / "victim.txt", "precious\n")
    victim_dir = tmp_path / "victim_dir"
    victim_dir.mkdir()
    out = tmp_path / "out"
    (out / "greet").mkdir(parents=True)
    (out / "greet" / "1.yaml").symlink_to(victim)
    (out / "other").symlink_to(victim_dir, target_is_directory=True)
    result = run_cli("export", str(out), "--force", cwd=tmp_path, database_url=database)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert victim.read_text() == "precious\n"
    assert list(victim_dir.iterdir()) == []
    assert (out / "greet" / "1.yaml").is_symlink()
    assert f"refused    {out / 'greet' / '1.yaml'}: is a symbolic link" in result.stderr
    assert f"refused    {out / 'other' / '1.yaml'}: other is a symbolic link" in result.stderr


def test_export_replaces_a_hard_linked_file_instead_of_writing_through_it(tmp_path):
    database = f"sqlite:///{tmp_path / 'db.sqlite'}"
    source = tmp_path / "source"
    write(source / "greet" / "1.yaml", greet_yaml())
    assert run_cli("sync", cwd=tmp_path, database_url=database, prompts_dir=source).returncode == 0
    victim = write(tmp_path / "victim.yaml", greet_yaml(greeting="Other text"))
    out = tmp_path / "out"
    (out / "greet").mkdir(parents=True)
    os.link(victim, out / "greet" / "1.yaml")
    result = run_cli("export", str(out), "--force", cwd=tmp_path, database_url=database)
    assert result.returncode == 0, result.stderr
    assert "Other text" in victim.read_text()
    assert yaml.safe_load((out / "greet" / "1.yaml").read_text())["name"] == "greet"
    assert "Say hello" in (out / "greet" / "1.yaml").read_text()


def test_import_never_writes_through_a_symlink(tmp_path):
    victim = write(tmp_path / "victim.txt", "precious\n")
    source = write(tmp_path / "hello.prompty", "---\nname: hello\n---\nuser:\nHi {{who}}\n")
    out = tmp_path / "out"
    (out / "hello").mkdir(parents=True)
    (out / "hello" / "1.yaml").symlink_to(victim)
    result = run_cli("import", str(source), "--out", str(out), "--force", cwd=tmp_path)
    assert result.returncode == 1
    assert victim.read_text() == "precious\n"
    assert "is a symbolic link" in result.stderr


def test_parsing_a_file_at_the_limit_does_not_block_other_requests(make_server, tmp_path, fake):
    """A file just under the limit made of small values is the most parsing work a file can
    ask for (about a second); sync does it off the event loop."""
    items = "".join(f"  - {{a{i}: {i}, b: [1, 2, 3]}}\n" for i in range(40000))
    text = (greet_yaml() + "unknown:\n" + items)[: MiB - 100]
    write(tmp_path / "prompts" / "big.yaml", text[: text.rindex("\n") + 1])
    server = make_server(sync_on_start=False)
    report = while_responsive(server, lambda: server.admin.post("/admin/v1/sync").json())
    assert [Path(e["file"]).name for e in report["errors"]] == ["big.yaml"]


def test_promptapi_serve_starts_with_a_billion_laughs_and_logs_it(tmp_path):
    folder = tmp_path / "prompts"
    write(folder / "bomb.yaml", billion_laughs())
    write(folder / "greet" / "1.yaml", greet_yaml())
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROMPTAPI_", "OPENAI_"))}
    env.update(
        PROMPTAPI_DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite'}",
        PROMPTAPI_PROMPTS_DIR=str(folder),
        PROMPTAPI_ADMIN_TOKEN="serve-test-admin-token-0123456789",
    )
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "promptapi", "serve", "--port", str(port)],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        healthy = False
        while time.monotonic() < deadline and process.poll() is None and not healthy:
            try:
                healthy = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).is_success
            except httpx.TransportError:
                time.sleep(0.1)
        assert healthy, log.read_text()
        listed = httpx.get(
            f"http://127.0.0.1:{port}/admin/v1/prompts",
            headers={"Authorization": f"Bearer {env['PROMPTAPI_ADMIN_TOKEN']}"},
        )
        assert [p["name"] for p in listed.json()["prompts"]] == ["greet"]
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert f"prompt file {folder / 'bomb.yaml'}: invalid YAML at line 3" in log.read_text()
