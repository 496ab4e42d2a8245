"""Settings, from the environment only.

Embedded default: SQLite in the data dir, django-q2's ORM broker, the in-memory channel layer.
Hosted: DATABASE_URL (PostgreSQL) and REDIS_URL (channel layer and django-q2 broker).
"""

import os
import secrets
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

# Embedded mode (no DATABASE_URL) is local use: DEBUG defaults on. Hosted mode defaults it off.
EMBEDDED = "DATABASE_URL" not in env
DEBUG = env.bool("DEBUG", default=EMBEDDED)
DATA_DIR = Path(env.str("ORCHESTRATOR_DATA_DIR", default=str(BASE_DIR / "var"))).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    """SECRET_KEY from the environment; for local use (DEBUG on) one generated once and kept."""
    # Read as is: django-environ takes a value starting with "$" for the name of another variable,
    # and Django's get_random_secret_key() starts one key in fifty with "$".
    if key := os.environ.get("SECRET_KEY", ""):
        return key
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY must be set when DEBUG is off (for local use, DEBUG=true generates and keeps one)."
        )
    key_file = DATA_DIR / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# --- HTTPS ----------------------------------------------------------------------------------
# With DEBUG off the site is served over HTTPS: http is redirected, cookies are secure-only and
# HSTS is sent, so `manage.py check --deploy` has nothing to say. Local use (DEBUG on) stays on
# plain http://127.0.0.1. ORCHESTRATOR_HTTPS=false serves a DEBUG-off instance over plain HTTP
# (an internal network): a choice `check --deploy` warns about. See docs/deploy.md.
ORCHESTRATOR_HTTPS = env.bool("ORCHESTRATOR_HTTPS", default=not DEBUG)
if env.bool("ORCHESTRATOR_BEHIND_TLS_PROXY", default=False):
    # Trust the proxy's X-Forwarded-Proto; it must set it on every request, replacing a client's.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = ORCHESTRATOR_HTTPS
# Container health checks ask the process itself over http, not through the TLS proxy.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SESSION_COOKIE_SECURE = ORCHESTRATOR_HTTPS
CSRF_COOKIE_SECURE = ORCHESTRATOR_HTTPS
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=365 * 24 * 3600 if ORCHESTRATOR_HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_htmx",
    "django_q",
    "teams",
    "agents",
    "budgets",
    "workflows",
    "api",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "orchestrator.urls"
ASGI_APPLICATION = "orchestrator.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        # WAL lets the web process read while a worker writes; IMMEDIATE takes the write lock at
        # BEGIN so two writers queue on busy_timeout instead of failing with "database is locked".
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
    # A file, not :memory:, so worker subprocesses started by the tests share the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test-db.sqlite3")}
else:
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # Our queries are short; PostgreSQL's JIT misjudges the overview's recursive tree query
    # (estimated millions of rows) and spends more compiling it than running it (docs/benchmarks.md).
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("options", "-c jit=off")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis, channels and the task queue -----------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [REDIS_URL],
                "capacity": 1000,
                "prefix": env.str("ORCHESTRATOR_QUEUE_NAME", default="orchestrator"),
            },
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 1000}}
    }

# How events reach browsers (see agents/fanout.py): "push" (workers send through the channel
# layer; needs Redis) or "tail" (each web process reads new events from the database and fans
# them out in-process; the embedded default). A dropped push is caught up from the database.
ORCHESTRATOR_EVENT_TRANSPORT = env.str(
    "ORCHESTRATOR_EVENT_TRANSPORT", default="push" if REDIS_URL else "tail"
)
ORCHESTRATOR_EVENT_POLL_SECONDS = env.float("ORCHESTRATOR_EVENT_POLL_SECONDS", default=0.05)

# One run of an agent (until it completes, waits or fails) is one django-q2 task. The database
# lease on the agent row, not the queue, decides who runs it: a redelivered task finds the agent
# claimed and does nothing. See docs/architecture.md.
QUEUE_WORKERS = env.int("ORCHESTRATOR_WORKERS", default=4)
TASK_TIMEOUT = env.int("ORCHESTRATOR_TASK_TIMEOUT", default=6 * 3600)
_queue_limit = max(1, QUEUE_WORKERS)
Q_CLUSTER = {
    "name": env.str("ORCHESTRATOR_QUEUE_NAME", default="orchestrator"),
    "workers": QUEUE_WORKERS,
    "timeout": TASK_TIMEOUT,
    # The ORM broker's lease starts at prefetch, so retry must cover timeout plus time queued.
    "retry": TASK_TIMEOUT * (1 + _queue_limit // QUEUE_WORKERS) + 60,
    "queue_limit": _queue_limit,
    "max_attempts": 1,
    "ack_failures": True,
    "save_limit": 1000,
    "catch_up": False,
    "poll": env.float("ORCHESTRATOR_QUEUE_POLL", default=0.05),
    "label": "Task queue",
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

# --- Agents ---------------------------------------------------------------------------------
ANTHROPIC_API_KEY = env.str("ANTHROPIC_API_KEY", default="")
ANTHROPIC_BASE_URL = env.str("ANTHROPIC_BASE_URL", default="")
ORCHESTRATOR_DEFAULT_MODEL = env.str("ORCHESTRATOR_DEFAULT_MODEL", default="claude-sonnet-5-5")
ORCHESTRATOR_MAX_TOKENS = env.int("ORCHESTRATOR_MAX_TOKENS", default=8192)
ORCHESTRATOR_WORKTREES_DIR = Path(
    env.str("ORCHESTRATOR_WORKTREES_DIR", default=str(DATA_DIR / "worktrees"))
).resolve()
# How long a worker's claim on an agent lasts without a heartbeat.
ORCHESTRATOR_LEASE_SECONDS = env.int("ORCHESTRATOR_LEASE_SECONDS", default=30)
# Claims in a row that ended without a clean release (a crashed worker) before the agent fails.
ORCHESTRATOR_MAX_ATTEMPTS = env.int("ORCHESTRATOR_MAX_ATTEMPTS", default=3)
# How often a running agent checks for cancel/pause (and a Bash command with it).
ORCHESTRATOR_CONTROL_POLL_SECONDS = env.float("ORCHESTRATOR_CONTROL_POLL_SECONDS", default=0.5)
# How often each worker cluster re-queues agents whose lease expired and wakes parked ones.
ORCHESTRATOR_REAP_SECONDS = env.float("ORCHESTRATOR_REAP_SECONDS", default=5)
# API failures (429/5xx/529, dropped streams) are retried for this long, then the agent is parked
# (waiting, no worker held) and retried after ORCHESTRATOR_PARK_SECONDS, doubling up to 10 minutes.
ORCHESTRATOR_API_RETRY_SECONDS = env.float("ORCHESTRATOR_API_RETRY_SECONDS", default=120)
ORCHESTRATOR_PARK_SECONDS = env.float("ORCHESTRATOR_PARK_SECONDS", default=30)
# A tool call waiting for a person longer than this is escalated (a badge and an event).
ORCHESTRATOR_APPROVAL_ESCALATE_SECONDS = env.float("ORCHESTRATOR_APPROVAL_ESCALATE_SECONDS", default=600)
# Spawns a minute through the API (agents and workflows), per user and per team.
ORCHESTRATOR_SPAWN_RATE_USER = env.int("ORCHESTRATOR_SPAWN_RATE_USER", default=60)
ORCHESTRATOR_SPAWN_RATE_TEAM = env.int("ORCHESTRATOR_SPAWN_RATE_TEAM", default=300)

# --- Auth, static, i18n ---------------------------------------------------------------------
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard:agents"
LOGOUT_REDIRECT_URL = "login"

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)  # WhiteNoise warns about a missing one before collectstatic
STATICFILES_DIRS = [BASE_DIR / "static"]
WHITENOISE_USE_FINDERS = True

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# Every process (web, worker, commands) logs to stderr: lines of text, or one JSON object a line
# (time, level, logger, message, exc_info, extra fields) for a log collector.
LOG_FORMAT = env.str("ORCHESTRATOR_LOG_FORMAT", default="text")
if LOG_FORMAT not in ("text", "json"):
    raise ImproperlyConfigured(f"ORCHESTRATOR_LOG_FORMAT must be text or json, not {LOG_FORMAT!r}.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "orchestrator.logging.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "httpx2": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        "anthropic": {"level": "WARNING"},
        "django-q": {"level": env.str("QUEUE_LOG_LEVEL", default="WARNING")},
    },
}
