"""The quickstart, runnable: ``python examples/quickstart.py``.

Defines a task, enqueues it, runs an embedded worker and prints the result. Uses a SQLite file
in a temporary directory so it leaves nothing behind.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from conveyor import Conveyor, ValidationError, current_job

directory = tempfile.mkdtemp()
app = Conveyor(f"sqlite:///{Path(directory) / 'quickstart.db'}")


@app.task(retries=3, timeout=60)
def generate_image(prompt: str, width: int = 512, height: int = 512) -> dict:
    job = current_job()
    job.progress(10, "Refining prompt")
    job.check_cancelled()
    job.progress(90, "Rendering")
    return {"prompt": prompt, "width": width, "height": height}


def main() -> dict:
    try:
        generate_image.enqueue("sunset", width="wide")  # type: ignore[arg-type]
    except ValidationError as exc:
        print("refused:", exc)
    job = generate_image.enqueue("sunset over mountains", width=256)
    print("enqueued", job.id, job.status)
    with app.embedded(concurrency=2):
        result = job.result(timeout=30)
    print("result", result)
    app.close()
    return result


if __name__ == "__main__":
    main()
