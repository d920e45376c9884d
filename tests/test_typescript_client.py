"""The usual TypeScript client works in its default form: openapi-typescript turns
/openapi.json into types, an openapi-fetch client made with `createClient<paths>()` (no other
type parameter) typechecks under `tsc --noEmit --strict`, a wrong input does not, and the same
client calls the live server, plainly and streamed."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Server
from tests.helpers import serve_examples, sqlite_only
from tests.node_tools import NODE_DIR, run

pytestmark = [pytest.mark.slow, sqlite_only]

TSCONFIG = {
    "compilerOptions": {
        "target": "ES2022",
        "module": "NodeNext",
        "moduleResolution": "NodeNext",
        "lib": ["ES2022", "DOM"],
        "strict": True,
        "noUncheckedIndexedAccess": True,
        "skipLibCheck": True,
        "types": [],
        "outDir": "out",
    },
    "files": ["client.ts"],
}

# The client a user writes: typed calls, typed answers, no media-type argument anywhere.
CLIENT = """
import createClient from "openapi-fetch";
import type { paths } from "./schema.js";

declare const process: { env: Record<string, string | undefined> };

const client = createClient<paths>({
  baseUrl: process.env.PROMPTAPI_URL,
  headers: { Authorization: `Bearer ${process.env.PROMPTAPI_KEY}` },
});

const sentiment = await client.POST("/v1/prompts/sentiment", { body: { text: "I love it" } });
if (sentiment.error) throw new Error(`sentiment failed: ${sentiment.error.status}`);
const label: "positive" | "negative" | "neutral" | "mixed" = sentiment.data.output.label;
const score: number = sentiment.data.output.score;
const version: number = sentiment.data.prompt.version;
const mock: boolean = sentiment.data.mock;

// openapi-typescript's default (--default-non-nullable) types a property with a `default` as
// present, so the client passes `style` and `length` too.
const summary = await client.POST("/v1/prompts/summarize", {
  body: { text: "A long text.", style: "paragraph", length: 3 },
});
if (summary.error) throw new Error(`summarize failed: ${summary.error.status}`);

const described = await client.GET("/v1/prompts/sentiment");
if (described.error) throw new Error("describe failed");

// A problem is typed too: a wrong input caught at run time by the server.
const refused = await client.POST("/v1/prompts/sentiment", { body: { text: "" } });
const problem: string | undefined = refused.error?.code;

// The streaming operation, read as the stream it is.
const streamed = await client.POST("/v1/prompts/sentiment/stream", {
  body: { text: "I love it" },
  parseAs: "text",
});
const events: string = streamed.data ?? "";

console.log(JSON.stringify({
  label, score, version, mock,
  summary: typeof summary.data.output,
  described: described.data.name,
  problem, status: refused.response.status,
  streamType: streamed.response.headers.get("content-type"),
  done: events.includes("event: done"),
}));
"""

# Each line is a mistake the types must catch: `@ts-expect-error` fails the build if it is not.
WRONG = """
import createClient from "openapi-fetch";
import type { paths } from "./schema.js";

const client = createClient<paths>({ baseUrl: "http://127.0.0.1:1" });

// @ts-expect-error a field the input schema does not have
await client.POST("/v1/prompts/sentiment", { body: { txt: "x" } });
// @ts-expect-error the required field missing
await client.POST("/v1/prompts/sentiment", { body: {} });
// @ts-expect-error a value outside the enum
await client.POST("/v1/prompts/summarize", { body: { text: "x", style: "haiku", length: 3 } });
// @ts-expect-error a prompt that does not exist
await client.POST("/v1/prompts/no-such-prompt", { body: { text: "x" } });
const { data } = await client.POST("/v1/prompts/sentiment", { body: { text: "x" } });
if (data) {
  // @ts-expect-error a label the output schema does not allow
  const wrong: "angry" = data.output.label;
  // @ts-expect-error a field the output does not have
  console.log(data.output.confidence, wrong);
}
"""


@pytest.fixture
def project(make_server: Callable[..., Server], tmp_path: Path) -> tuple[Server, Path]:
    server = serve_examples(make_server, tmp_path)
    work = tmp_path / "ts"
    work.mkdir()
    (work / "node_modules").symlink_to(NODE_DIR / "node_modules", target_is_directory=True)
    (work / "package.json").write_text(json.dumps({"type": "module", "private": True}))
    (work / "openapi.json").write_bytes(server.client.get("/openapi.json").content)
    done = run("openapi-typescript", "openapi.json", "--output", "schema.d.ts", cwd=work)
    assert done.returncode == 0, done.stdout + done.stderr
    (work / "client.ts").write_text(CLIENT)
    return server, work


def tsc(work: Path, *files: str) -> str:
    config = {**TSCONFIG, "files": list(files)}
    (work / "tsconfig.json").write_text(json.dumps(config))
    done = run("tsc", "--noEmit", "--project", "tsconfig.json", cwd=work)
    return "" if done.returncode == 0 else done.stdout + done.stderr


def test_the_default_client_typechecks_and_wrong_inputs_do_not(
    project: tuple[Server, Path],
) -> None:
    _, work = project
    assert tsc(work, "client.ts") == ""
    (work / "wrong.ts").write_text(WRONG)
    assert tsc(work, "wrong.ts") == ""  # every mistake was caught, as expected
    # And without the expectations, the same mistakes are compile errors.
    (work / "bare.ts").write_text(WRONG.replace("// @ts-expect-error", "//"))
    errors = tsc(work, "bare.ts")
    assert errors.count("error TS") == WRONG.count("@ts-expect-error"), errors


def test_the_client_calls_the_live_server(project: tuple[Server, Path]) -> None:
    server, work = project
    (work / "tsconfig.json").write_text(json.dumps(TSCONFIG))
    done = run("tsc", "--project", "tsconfig.json", cwd=work)
    assert done.returncode == 0, done.stdout + done.stderr
    key = server.admin.post("/admin/v1/keys", json={"name": "ts"}).json()["key"]
    env = {**os.environ, "PROMPTAPI_URL": server.url, "PROMPTAPI_KEY": key}
    node = run("node", str(work / "out" / "client.js"), cwd=work, env=env)
    assert node.returncode == 0, node.stdout + node.stderr
    result = json.loads(node.stdout.strip().splitlines()[-1])
    assert result["label"] in ("positive", "negative", "neutral", "mixed")
    assert 0 <= result["score"] <= 1
    assert result["version"] == 1 and result["mock"] is True
    assert result["summary"] == "string" and result["described"] == "sentiment"
    assert result["problem"] == "input_invalid" and result["status"] == 422
    assert result["streamType"].startswith("text/event-stream") and result["done"] is True
