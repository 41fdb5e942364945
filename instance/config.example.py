# Example instance configuration: copy to instance/config.py and adjust.
# Every key can also be set as an environment variable MAIA_<KEY> (which wins over this file).
# Keep secrets out of version control: instance/config.py is git-ignored.

# DATABASE_URL = "sqlite:////var/lib/maia-trainings/trainings.sqlite3"
# DATABASE_URL = "postgresql+psycopg://maia@db.internal/maia"   # several instances, one database
# MODELS_DIR = "/var/lib/maia-trainings/models"
# MAX_CONTENT_LENGTH = 1024 * 1024
# DEFAULT_PAGE_SIZE = 100
