"""``postgresql://`` / ``postgres://``: jobs in PostgreSQL tables, shared by any number of workers.

``postgresql://user:pass@host:5432/app?schema=conveyor&auto_migrate=1`` — every table lives in
``schema`` (default ``conveyor``); the query options Conveyor understands (see
:data:`~conveyor.backends.postgres.settings.OPTIONS`) are removed before the URL reaches libpq,
the rest (``sslmode`` ...) pass through.

How the protocol maps onto PostgreSQL:

* One row per job; each protocol method is one SQL statement in autocommit (plus a lookup
  when an enqueue meets a taken key or id), or one explicit transaction where several
  statements must agree (``claim_fire``). Batch operations (enqueue, claim, finish,
  extend_leases) send arrays and touch every row in one statement, so a commit — not Python, not
  round trips — is the unit of cost.
* Claims walk a partial index in claim order under ``FOR UPDATE SKIP LOCKED``: concurrent
  claimers skip each other's rows instead of queueing behind them.
* Idempotency keys are a partial unique index over live jobs; enqueue is
  ``INSERT ... ON CONFLICT DO NOTHING`` and only then looks up the job holding the key.
* Wake-ups: statements that make work available ``pg_notify`` the schema's *work* channel with
  the queue name; statements that change a job notify its *changes* channel with the job id. One
  background thread per backend holds a dedicated ``LISTEN`` connection (it listens to changes
  only once someone waits for one). When that connection is down, waits fall back to polling
  every ``poll_interval`` and the thread reconnects with backoff, so a lost notification costs at
  most one poll interval.
* Connection loss: a failed statement is retried (bounded, with backoff) on a fresh pooled
  connection, then raised as ``BackendUnavailable``.
* Transactional enqueue: :meth:`PostgresBackend.enqueue_in` writes jobs through the caller's own
  connection, inside the caller's transaction.

The modules, one job each:

* ``backend`` — :class:`PostgresBackend`, the protocol methods;
* ``settings`` — the options, from keywords and the URL's query string;
* ``connections`` — the connection pool, and retrying statements over lost connections;
* ``rows`` — job records to SQL parameters and back;
* ``queries`` — the text of every statement, rendered once per schema;
* ``listener`` — the LISTEN thread, and waits that fall back to polling without it;
* ``schema`` — the migrations in ``migrations/*.sql``: discover, check, apply.
"""

from .backend import PostgresBackend

__all__ = ["PostgresBackend"]
