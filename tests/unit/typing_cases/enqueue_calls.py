# Checked by mypy in test_typing.py: each line marked "E:" must be reported, and only those.
from conveyor import Conveyor, Job

app = Conveyor("memory://")


@app.task(retries=1)
def add(a: int, b: int = 2) -> int:
    return a + b


@app.task
async def fetch(url: str) -> bytes:
    return url.encode()


good: Job[int] = add.enqueue(1, b=3)
also_good: Job[bytes] = fetch.enqueue("https://example.com")
total: int = add.options(delay=5).enqueue(1).result()
add.enqueue("one")  # E: arg-type
add.options(priority=3).enqueue(1, c=3)  # E: call-arg
fetch.enqueue(42)  # E: arg-type
wrong: Job[str] = add.enqueue(1)  # E: assignment
