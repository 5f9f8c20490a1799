"""The /docs explorer's script, run in Node against a stub DOM: it must render every
operation of the OpenAPI document and prefill a valid submission (skipped without Node)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from api_support import build_app
from starlette.testclient import TestClient

from conveyor.web import create_app

NODE = shutil.which("node")
HARNESS = Path(__file__).with_name("explorer_harness.js")


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed")
def test_the_explorer_renders_every_operation(tmp_path: Path) -> None:
    app = build_app("memory://")
    with TestClient(create_app(app, tokens=[], read_only_tokens=[])) as client:
        document = client.get("/openapi.json").json()
        script = client.get("/docs/explorer.js").text
    (tmp_path / "openapi.json").write_text(json.dumps(document))
    (tmp_path / "explorer.js").write_text(script)
    assert NODE is not None
    out = subprocess.run([NODE, str(HARNESS), str(tmp_path / "openapi.json"),
                          str(tmp_path / "explorer.js")], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    rendered = json.loads(out)
    operations = sum(1 for item in document["paths"].values()
                     for method in ("get", "post", "delete") if method in item)
    assert rendered["operations"] == operations
    assert rendered["body"] == {"task": "add", "kwargs": {"a": 0, "b": 2}}
