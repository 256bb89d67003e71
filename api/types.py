"""Field types shared by the API's response models."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator

from rag.store.db import as_utc

# SQLite hands back naive datetimes even for timezone-aware columns; the API always answers
# RFC 3339 timestamps with an offset, whatever the database.
UtcDateTime = Annotated[datetime, AfterValidator(as_utc)]
