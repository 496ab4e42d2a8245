"""One JSON object per log line (ORCHESTRATOR_LOG_FORMAT=json), for log collectors.

Fields: time (UTC, ISO 8601), level, logger, message; exc_info and stack_info as formatted text
when present; and every `extra` field of the call. Values JSON can't encode are written as str().
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

# Attributes every LogRecord has; anything else on a record came from `extra`.
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {key: value for key, value in vars(record).items() if key not in _RECORD_ATTRIBUTES}
        entry.update(
            time=datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            level=record.levelname,
            logger=record.name,
            message=record.getMessage(),
        )
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)
