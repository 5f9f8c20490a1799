"""``sqlite:///path.db``: the embedded default, one database file shared by every process.

URLs: ``sqlite:///relative/path.db`` (relative to the working directory) and
``sqlite:////absolute/path.db``. Options, as keyword arguments or in the URL's query string
(``sqlite:///app.db?busy_timeout=10``):

* ``busy_timeout`` (seconds, default 5): how long a writer waits for another *process* holding the
  write lock before the call fails with :class:`~conveyor.errors.BackendUnavailable`.
* ``synchronous`` (``"NORMAL"``, the default, or ``"FULL"``). In WAL mode ``NORMAL`` never loses a
  committed job when a *process* dies (``kill -9``, OOM): the commit is in the WAL file, in the
  operating system's cache, before ``enqueue`` returns. What it trades away is durability against
  *power loss or a kernel crash*: the transactions committed since the last WAL sync (at most
  those since the last checkpoint) can roll back — the file is never corrupted, the newest jobs
  are just gone. ``FULL`` syncs the WAL on every commit and closes that window, at a large cost
  in enqueue rate on most disks. NORMAL is the default because a job queue on a server's local
  disk fears process death far more than power loss, and the enqueue rate is part of the product.
* ``auto_migrate`` (default True): apply pending schema migrations when the backend opens, so
  embedded mode just works. With False, :meth:`SQLiteBackend.check` reports a stale schema and
  ``conveyor migrate`` applies it.

Concurrency model:

* One connection per thread (``threading.local``), autocommit (``isolation_level=None``); every
  write is an explicit ``BEGIN IMMEDIATE`` transaction, which takes SQLite's single write lock up
  front, so a transaction never fails half-way on a lock upgrade and two processes' claims
  serialize.
* Within a process, writers of one file first queue on a Python lock. SQLite allows one writer
  anyway; its busy handler sleeps in steps of up to 100 ms, a Python lock hands over at once, so
  threads of one process never pay those sleeps — only other processes do.
* ``wait_for_work`` / ``wait_for_change``: SQLite has no notifications. In-process writes notify a
  condition variable (instant); commits of other processes are seen by polling
  ``PRAGMA data_version`` on a per-thread connection that never writes — cheap (no table is read)
  and it changes whenever *another* connection commits. The poll runs every 1 ms for a second
  after the last change seen, then backs off to 20 ms.
* Connections opened before ``os.fork()`` are never used by the child: it opens its own.

The modules, one job each:

* ``backend`` — :class:`SQLiteBackend`, the protocol methods;
* ``settings`` — the URL and the options;
* ``connections`` — per-thread connections, the write lock, fork handling;
* ``waiting`` — the ``data_version`` poller, ``wait_for_work`` and ``wait_for_change``;
* ``rows`` — job records to statement parameters and back;
* ``queries`` — the text of the statements;
* ``schema`` — the tables and indexes, as migrations, and applying them.
"""

from .backend import SQLiteBackend

__all__ = ["SQLiteBackend"]
