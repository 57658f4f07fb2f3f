"""Settings for `rq worker --config workers.rq_settings`: the service's Redis and queues.

Imported once by the worker's main process, so a bad setting stops it at start with one line, JSON
logging is configured before RQ's own log set-up, and the database engine is built before the first
job. It waits for Redis here, before RQ's command line first touches it (a suspension check that
would exit on a connection error), so a worker started during a Redis outage starts when Redis does.
"""

import os

from runtime.config import share_metrics_dir

# Before workers.jobs imports prometheus_client: this worker writes its metrics to files in the
# directory the web process's /metrics reads (see share_metrics_dir).
share_metrics_dir()

from runtime.config import load_config_or_exit  # noqa: E402
from runtime.errors import init_error_reporting  # noqa: E402
from runtime.logs import configure  # noqa: E402
from store.queue import connect_redis  # noqa: E402

_config = load_config_or_exit()
configure()
init_error_reporting(_config, "worker")

import rq.cli.workers  # noqa: E402

# The Procfile runs workers.worker.Worker, a SimpleWorker: jobs run in this process instead of a forked
# work horse per job, so the engine, its connection pool and SQLAlchemy's statement cache live across
# jobs (about 5x the events per second of a forked work horse per job, measured when this was chosen).
from workers.jobs import database  # noqa: E402
from workers.worker import riding_out_outages, wait_for_redis  # noqa: E402

database()
wait_for_redis(connect_redis(_config.redis_url).ping, what="worker start: ")
# RQ's command line checks suspension next, once, and exits on a connection error: it waits instead.
rq.cli.workers.is_suspended = riding_out_outages(rq.cli.workers.is_suspended)
if _config.worker_metrics_port is not None:  # a host without a web process: this worker serves its metrics
    from runtime.metrics import serve_host_metrics  # noqa: E402

    serve_host_metrics(_config.worker_metrics_port, os.environ.get("HOST", "0.0.0.0"))

REDIS_URL = _config.redis_url
# Events first: a worker takes a Verisoul sync only when no event is waiting.
QUEUES = _config.queues
