"""Settings for `rq worker --config workers.rq_settings`: the service's Redis and queues.

Imported once by the worker's main process, so a bad setting stops it at start with one line,
and JSON logging and the job code are loaded before RQ forks a work horse for each job.
"""

from app.config import share_metrics_dir

# Before workers.jobs imports prometheus_client: this worker writes its metrics to files in the
# directory the web process's /metrics reads (see share_metrics_dir).
share_metrics_dir()

from app import load_config_or_exit  # noqa: E402
from app.logs import configure  # noqa: E402

_config = load_config_or_exit()
configure()

# The Procfile runs rq.worker.SimpleWorker, which runs jobs in this process instead of forking a work
# horse per job: the engine, its connection pool and SQLAlchemy's statement cache then live across
# jobs (about 5x the events per second of a fork per job, measured with scripts/bench_worker.py).
# Jobs are short database transactions with no native code that could take the process down.
from workers.jobs import database, queue, schedule_reconcile, schedule_sweep  # noqa: E402

database()
# The Verisoul sweep reschedules itself; scheduling it here restarts the chain after any outage.
schedule_sweep(queue())
schedule_reconcile(queue())

REDIS_URL = _config.redis_url
QUEUES = _config.queues
