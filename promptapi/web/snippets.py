"""Copy-ready code that calls a prompt endpoint: curl, Python (httpx) and JavaScript (fetch)."""

from __future__ import annotations

import json
import shlex
from typing import Any

KEY_ENV = "PROMPTAPI_KEY"


def python_literal(value: Any, indent: int = 0) -> str:
    """`value` (JSON data) as Python source, indented like `json.dumps(indent=4)`."""
    pad, inner = "    " * indent, "    " * (indent + 1)
    if isinstance(value, dict):
        if not value:
            return "{}"
        parts = [
            f"{inner}{json.dumps(k)}: {python_literal(v, indent + 1)}," for k, v in value.items()
        ]
        return "{\n" + "\n".join(parts) + f"\n{pad}}}"
    if isinstance(value, list):
        if not value:
            return "[]"
        parts = [f"{inner}{python_literal(v, indent + 1)}," for v in value]
        return "[\n" + "\n".join(parts) + f"\n{pad}]"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if value is None:
        return "None"
    return json.dumps(value, ensure_ascii=False)


def curl(url: str, body: Any) -> str:
    data = json.dumps(body, ensure_ascii=False, indent=2)
    return (
        f"curl -X POST {shlex.quote(url)} \\\n"
        f'  -H "Authorization: Bearer ${KEY_ENV}" \\\n'
        "  -H 'Content-Type: application/json' \\\n"
        f"  -d {shlex.quote(data)}"
    )


def python(url: str, body: Any) -> str:
    return (
        "import os\n\n"
        "import httpx\n\n"
        f"payload = {python_literal(body)}\n\n"
        "response = httpx.post(\n"
        f"    {json.dumps(url)},\n"
        f'    headers={{"Authorization": f"Bearer {{os.environ[{KEY_ENV!r}]}}"}},\n'
        "    json=payload,\n"
        "    timeout=60,\n"
        ")\n"
        "answer = response.json()\n"
        "if response.is_error:\n"
        "    raise RuntimeError(f\"{answer['title']}: {answer['detail']}\")\n"
        'print(answer["output"], answer["usage"])\n'
    )


def javascript(url: str, body: Any) -> str:
    return (
        f"const payload = {json.dumps(body, ensure_ascii=False, indent=2)};\n\n"
        f"const response = await fetch({json.dumps(url)}, {{\n"
        '  method: "POST",\n'
        "  headers: {\n"
        f'    "Authorization": `Bearer ${{process.env.{KEY_ENV}}}`,\n'
        '    "Content-Type": "application/json",\n'
        "  },\n"
        "  body: JSON.stringify(payload),\n"
        "});\n"
        "const answer = await response.json();\n"
        "if (!response.ok) throw new Error(`${answer.title}: ${answer.detail}`);\n"
        "console.log(answer.output, answer.usage);\n"
    )


def all_snippets(url: str, body: Any) -> list[tuple[str, str, str]]:
    """(id, title, code) for each language."""
    return [
        ("curl", "curl", curl(url, body)),
        ("python", "Python (httpx)", python(url, body)),
        ("javascript", "JavaScript (fetch)", javascript(url, body)),
    ]
