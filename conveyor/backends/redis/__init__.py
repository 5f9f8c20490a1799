"""``redis://`` and ``rediss://``: scale-out on Redis, one Lua script per state change.

Layout (every key starts with the prefix, ``conveyor:`` by default)::

    job:<id>               hash, one field per JobRecord attribute; absent field = None
    key:<key>              string -> id of the job holding an idempotency key
    ready:<queue>          zset, score -priority, member "<run_at:020.6f><id>": ZPOPMIN
                           yields (priority desc, run_at, id)
    sched:<queue>          zset of scheduled jobs by run_at, promoted into ready by claim
    running                zset of running jobs by lease expiry (requeue_expired)
    expires                zset of finished jobs by result_expires_at (prune)
    idx:qs:<q>:<s>         score-0 zset of the ids of queue q in status s; ids are UUIDv7,
                           so ZREVRANGEBYLEX lists newest first. Listing by status, queue or
                           neither merges these; ZCARD of each gives stats
    idx:task:<t>           score-0 zset of the ids of task t (listing by task)
    queues                 set of queue names ever used
    wake:<queue>           list of wake tokens, BLPOPed by idle workers
    idle:<queue>, idler:<worker>, handoff:<worker>
                           idle workers' registrations and the jobs handed to them
    watch:<id>, waiter:*, watching
                           wait_for_change registrations (see below)
    schedule:<id>, schedules
                           schedule hashes and their ids (score-0 zset, ordered by id)
    workers, workers:alive hash id -> WorkerInfo JSON; zset id -> heartbeat expiry
    layout                 the layout version of this prefix

Fields are stored as the strings Python writes (``repr`` of floats), so records read back
exactly; Lua never round-trips them through cjson (whose 14-digit numbers would move
timestamps). Every method is one round trip: one script call per batch for enqueue, claim,
finish and leases (sweeps, and batches over 1,000 jobs, loop in bounded calls). docs/redis.md
has the operator's view of this layout.

Wake-ups: a claim with ``wait`` that finds nothing registers its worker as idle
(``idler:<worker>``, listed in ``idle:<queue>``) and BLPOPs ``handoff:<worker>`` and the queues'
``wake:`` lists. An enqueue claims its job for an idle worker on the spot and pushes the row to
that worker's ``handoff`` list, so the job starts one round trip after its enqueue (see
``hand_off`` in ``lua/helpers.lua``). Other scripts that make a job claimable LPUSH a token to
``wake:<queue>`` (trimmed to a few); the timeout is cut to when the earliest scheduled job on
the queues falls due. ``wait_for_change`` registers a private list in
``watch:<id>`` atomically with its version check, then BLPOPs it; every script that changes
the job pushes to the registered lists. Lists rather than pub/sub: the registration and the
check are one atomic step (no missed change), every waiter is woken, and the wait borrows a
pooled connection instead of opening a subscriber socket per call.

The modules, one job each:

* ``backend`` — :class:`RedisBackend`, the protocol methods;
* ``client`` — the connection pool, the scripts loaded on the server, retrying calls;
* ``codec`` — job records to the strings the scripts store, and back;
* ``scripts`` — assembling the Lua scripts of ``lua/*.lua``.
"""

from .backend import RedisBackend

__all__ = ["RedisBackend"]
