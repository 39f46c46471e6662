"""The service's log: what the service does, as text lines or as one JSON object per line (``OFEDREPO_LOG_FORMAT``),
for a person reading ``journalctl`` or a log collector reading fields.

The service (``serve``, ``worker``) always logs at INFO: builds queued, started, succeeded or failed with their
reason, versions published, feeds polled, workers starting and stopping, and the web server's access lines.
One-shot commands log only warnings unless ``-v`` asks for their steps."""

import json
import logging
from datetime import UTC, datetime

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonLines(logging.Formatter):
    """``{"time", "level", "logger", "message"}`` (and ``"exception"`` with its traceback), one object per line."""

    def format(self, record: logging.LogRecord) -> str:
        document = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document)


def configure(log_format: str, level: int) -> None:
    """One handler on the root logger, to standard error; every library's logger (uvicorn's too) goes through it."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLines() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
