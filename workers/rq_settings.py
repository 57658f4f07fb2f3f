"""Settings for `rq worker --config workers.rq_settings`: the service's Redis and queues.

Imported once by the worker's main process, so a bad setting stops it at start with one line,
and JSON logging and the job code are loaded before RQ forks a work horse for each job.
"""

from app import load_config_or_exit
from app.logs import configure

_config = load_config_or_exit()
configure()

# Load the jobs and build the engine (which imports the database driver) once, here, rather than
# in every work horse RQ forks; the engine holds no connection yet, so each horse opens its own.
from workers.jobs import database  # noqa: E402

database()

REDIS_URL = _config.redis_url
QUEUES = _config.queues
