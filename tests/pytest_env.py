"""Loaded with `-p tests.pytest_env` before Django is configured: test-only environment defaults.

A per-session queue name keeps test runs that share one Redis (CI) from seeing each other's tasks.
"""

import os
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

os.environ.setdefault("SECRET_KEY", "insecure-key-for-tests-only")
os.environ.setdefault("ORCHESTRATOR_DATA_DIR", str(ROOT / "var" / "test"))
os.environ.setdefault("ORCHESTRATOR_QUEUE_NAME", f"orchestrator-test-{uuid.uuid4().hex[:8]}")
os.environ.setdefault("ANTHROPIC_API_KEY", "test-key")
# Never let a developer's real endpoint leak into tests; the fake server's URL is set per test.
os.environ["ANTHROPIC_BASE_URL"] = "http://127.0.0.1:9"
# The test servers speak plain http, in hosted mode (DATABASE_URL) too.
os.environ.setdefault("ORCHESTRATOR_HTTPS", "false")
