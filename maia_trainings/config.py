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
