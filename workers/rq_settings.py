"""Settings for `rq worker --config workers.rq_settings`: the service's Redis and queues.

Imported once by the worker's main process, so a bad setting stops it at start with one line,
and JSON logging is configured before RQ forks a work horse for each job.
"""

from app import load_config_or_exit
from app.logs import configure

_config = load_config_or_exit()
configure()

REDIS_URL = _config.redis_url
QUEUES = _config.queues
