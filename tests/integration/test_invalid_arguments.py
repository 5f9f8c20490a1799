"""A job whose arguments are invalid never reaches storage: not from Python, not from the CLI."""

from __future__ import annotations

from typing import Any

import pytest
from cli_procs import Procs

from conveyor import ValidationError


@pytest.mark.timeout(40)
@pytest.mark.parametrize(("flags", "named"), [
    (["--args", '["wide"]'], "width"),
    (["--args", "[1]", "--kwargs", '{"label": 3}'], "label"),
    (["--kwargs", '{"height": 3}'], "width"),
    (["--args", "[1, 2, 3]"], "too many positional arguments"),
    (["--args", "[1"], "must be JSON"),
    (["--args", '{"width": 1}'], "args must be a list"),
])
def test_the_cli_refuses_invalid_arguments_with_exit_2_and_stores_nothing(
        procs: Procs, core: Any, flags: list[str], named: str) -> None:
    result = procs.run("enqueue", "typed", *flags)
    assert result.returncode == 2, result
    assert result.stdout == ""
    [line] = result.stderr.splitlines()  # one line, no traceback
    assert line.startswith("conveyor: error: ") and named in line, line
    assert core.app.stats() == {}
    assert len(core.app.list_jobs()) == 0


@pytest.mark.timeout(20)
def test_a_bad_call_from_python_raises_in_the_caller_and_stores_nothing(core: Any) -> None:
    with pytest.raises(ValidationError, match="'width' must be int") as info:
        core.typed.enqueue("wide")  # type: ignore[arg-type]
    assert info.value.errors[0]["pointer"] == "#/args/0"
    with pytest.raises(ValidationError, match="label"):
        core.typed.enqueue(1, label=object())  # type: ignore[arg-type]
    assert core.app.stats() == {}
    # the same call with good arguments is stored
    assert core.typed.enqueue(3).status == "queued"
    assert core.app.stats() == {"default": {"queued": 1}}
