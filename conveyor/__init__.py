"""Conveyor: background jobs for Python — embedded on SQLite, scaled out on Redis or PostgreSQL.

::

    from conveyor import Conveyor, current_job

    app = Conveyor("sqlite:///conveyor.db")

    @app.task(retries=3)
    def resize(path: str, width: int = 512) -> dict:
        current_job().progress(50, "resizing")
        return {"path": path, "width": width}

    job = resize.enqueue("cat.png", width=256)
    job.result(timeout=10)
"""

from .app import Conveyor, JobPage
from .backends.base import Backend
from .context import JobContext, current_job
from .errors import (
    BackendError,
    BackendUnavailable,
    Cancelled,
    ConfigurationError,
    ConveyorError,
    InvalidTransition,
    JobCancelled,
    JobFailed,
    JobNotFound,
    JobTimeout,
    PayloadTooLarge,
    Retry,
    ScheduleNotFound,
    SchemaOutdated,
    UnknownTask,
    ValidationError,
)
from .job import Job
from .middleware import Middleware
from .task import BoundTask, Task
from .worker import Worker

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "BackendError",
    "BackendUnavailable",
    "BoundTask",
    "Cancelled",
    "ConfigurationError",
    "Conveyor",
    "ConveyorError",
    "InvalidTransition",
    "Job",
    "JobCancelled",
    "JobContext",
    "JobFailed",
    "JobNotFound",
    "JobPage",
    "JobTimeout",
    "Middleware",
    "PayloadTooLarge",
    "Retry",
    "ScheduleNotFound",
    "SchemaOutdated",
    "Task",
    "UnknownTask",
    "ValidationError",
    "Worker",
    "__version__",
    "current_job",
]
