"""Default settings; each can be overridden in instance/config.py or as a MAIA_<KEY> variable."""

# SQLAlchemy URL of the database; None means sqlite:///<instance>/trainings.sqlite3.
DATABASE_URL: str | None = None
# Seconds a SQLite connection waits for a competing writer before giving up.
SQLITE_BUSY_TIMEOUT = 30
# Largest request body accepted, in bytes; larger ones get 413.
MAX_CONTENT_LENGTH = 1024 * 1024
# Folder that every binaryPath is relative to; None means <instance>/models.
MODELS_DIR: str | None = None
# Page size of GET /trainings when _limit is not given.
DEFAULT_PAGE_SIZE = 100
# Seconds between writes of a token's last_used_at (each use would cost a write).
TOKEN_TOUCH_INTERVAL = 60
# Seconds a valid token is remembered without a database look-up. A revocation made anywhere
# (the CLI, another node) is refused at the next request whatever this is: each request reads
# the revocation count.
TOKEN_CACHE_SECONDS = 5.0
# Failed authentications an address may make before it is shut out for a while (429).
AUTH_FAILURES_ALLOWED = 10
# The longest an address is shut out, in seconds (the wait doubles with each further failure).
AUTH_BACKOFF_MAX = 60

# The function that trains a model, as "package.module:function" (see maia_trainings.trainers).
TRAINER = "maia_trainings.trainers.scoring:train"
# Folder of the CSV files trainings may name as their dataset; None means <instance>/datasets.
DATASETS_DIR: str | None = None
# Databases trainings may query by name: {"warehouse": "postgresql+psycopg://..."}.
DATASOURCES: dict[str, str] = {}
# Loans in the generated demo portfolio a training uses when it names no dataset.
DEMO_ROWS = 20_000
# This node's name (lease owners, logs, /healthz); None means the host name.
NODE_NAME: str | None = None
# Run trainings inside the server process; False makes an API-only node (worker nodes or
# run-pending do the work).
SCHEDULER_ENABLED = True
# Trainings run at the same time by one server.
WORKERS = 2
# Seconds between looks at the database for work other processes queued and for dead runs.
POLL_INTERVAL = 5.0
# Seconds a claimed training stays claimed without a heartbeat before others may take it over.
LEASE_SECONDS = 30.0
# Seconds between heartbeats of a running training (progress, log, cancel checks).
HEARTBEAT_INTERVAL = 1.0
# Attempts a training gets when its run dies or its trainer asks to be retried.
MAX_ATTEMPTS = 3
# Seconds before the first retry; each further retry waits twice as long.
RETRY_DELAY = 10.0
# Seconds a run may take before it is stopped and failed as "timed out".
MAX_RUNTIME = 3600.0
# Seconds running trainings get to finish on shutdown before they are stopped and re-queued.
SHUTDOWN_GRACE = 30.0
# Bytes of a run's log kept (its beginning and its end).
LOG_LIMIT = 64 * 1024

# What becomes of a training that succeeds: "always" published (its model's new champion),
# "manual" (a challenger until POST /trainings/{id}/publish), or "if_better" (published when
# its metrics' gini beats the champion's by at least PUBLISH_MARGIN).
PUBLISH_POLICY = "always"
# How much higher a challenger's gini must be for "if_better" to publish it.
PUBLISH_MARGIN = 0.0

# Rows one POST /models/{model_name}/score may carry (a JSON array); more are refused (400).
SCORE_MAX_ROWS = 10_000
# Largest body POST /models/{model_name}/score reads, in bytes (batches are larger than the
# bodies MAX_CONTENT_LENGTH is for); larger ones get 413.
SCORE_MAX_CONTENT_LENGTH = 16 * 1024 * 1024
# Points of score that double the odds of repaying (good:bad): the scale's "points to double
# the odds".
SCORE_PDO = 20
# The score at odds of 50:1 (good:bad).
SCORE_BASE = 600

# Seconds after a schedule's fire within which a missed fire (the service was down) still
# creates its training on restart; older missed fires are skipped and counted.
MISFIRE_GRACE = 86400
# Hosts webhooks and callback_url may name: host names, IP addresses or networks
# ("10.0.0.0/8"). Empty: no webhook may be subscribed.
WEBHOOK_ALLOWED_HOSTS: list[str] = []
# Attempts a webhook delivery gets before it is given up.
WEBHOOK_MAX_ATTEMPTS = 8
# Seconds before a delivery's first retry; each further retry waits twice as long.
WEBHOOK_RETRY_DELAY = 10.0
# Seconds a webhook request may take (connecting and answering).
WEBHOOK_TIMEOUT = 5.0
# The key that signs the deliveries to a training's own callback_url; callback_url is
# refused while it is not set.
WEBHOOK_CALLBACK_SECRET: str | None = None

# GET /metrics answers anyone on the service's port; False: only requests with a valid token
# (read scope is enough).
METRICS_PUBLIC = True
# Log lines (one per request, one per training transition): "text" (readable) or "json" (a
# JSON object per line, for log shippers).
LOG_FORMAT = "text"
