"""A mail's attachments queued as child documents of the mail, through the upload path.

Each attachment is staged and registered exactly like an upload (typed by its content, size
limit, the same bytes already in the knowledge base are that document), in the mail's knowledge
base, named "mail.eml › report.pdf", with the mail as `parent_id` and the mail's metadata; it is
deleted with its parent. Children queue at batch priority, so a mail with hundreds of attachments
does not hold back someone's interactive upload. What cannot be ingested becomes a warning on
the mail. Queuing again (a retried parse) adds nothing: every attachment is then a duplicate
(one an older version of the same mail brought moves to the new version: add_document).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from sqlalchemy.exc import IntegrityError

from ingest.parsers.base import Attachment
from ingest.parsers.notices import warning
from ingest.upload import safe_filename, stage_upload
from rag.core.errors import InvalidInput, NotFound, PayloadTooLarge, UnsupportedMediaType
from rag.kb.knowledge import KnowledgeBases, StagedFile
from rag.store.models import Document, JobPriority

log = logging.getLogger(__name__)

_NAME_LIMIT = 255  # what safe_filename keeps
_SEPARATOR = " › "
_MAX_NAMES = 5  # names listed in one warning

Stager = Callable[[BinaryIO, str | None, Path, int], StagedFile]


def child_name(parent: str, attachment: str) -> str:
    """ "mail.eml › report.pdf", shortened at the mail's end so the attachment keeps its
    extension (its type is decided by it)."""
    own = safe_filename(attachment)
    room = max(0, _NAME_LIMIT - len(own) - len(_SEPARATOR))
    return f"{parent[:room]}{_SEPARATOR}{own}" if room else own


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_NAMES])
    return shown + (f" (+{len(names) - _MAX_NAMES})" if len(names) > _MAX_NAMES else "")


class ChildDocuments:
    """Queues the files a parsed document carries as its child documents."""

    def __init__(
        self,
        knowledge: KnowledgeBases,
        *,
        data_dir: Path,
        max_upload_bytes: int,
        stage: Stager = stage_upload,
    ) -> None:
        self.knowledge = knowledge
        self.data_dir = data_dir
        self.max_upload_bytes = max_upload_bytes
        self.stage = stage

    def queue(self, parent: Document, attachments: list[Attachment]) -> list[str]:
        """Register and queue each attachment as a child of `parent`; the warnings to add to
        the parent for those that could not be."""
        names = [safe_filename(a.filename) for a in attachments]
        if parent.parent_id is not None:  # one level: a forwarded mail's files stay inside it
            return [warning("attachment_nested", names=_names(names))] if names else []
        unsupported: list[str] = []
        too_large: list[str] = []
        added = 0
        for attachment, name in zip(attachments, names, strict=True):
            try:
                staged = self.stage(
                    io.BytesIO(attachment.data),
                    child_name(parent.filename, attachment.filename),
                    self.data_dir,
                    self.max_upload_bytes,
                )
                try:
                    _, duplicate = self.knowledge.add_document(
                        parent.kb_id,
                        staged,
                        dict(parent.user_metadata or {}),
                        priority=JobPriority.batch,
                        parent_id=parent.id,
                    )
                finally:
                    staged.path.unlink(missing_ok=True)  # moved into place unless it failed
            except PayloadTooLarge:
                too_large.append(name)
            except (UnsupportedMediaType, InvalidInput):  # a type we do not read, or empty
                unsupported.append(name)
            except (NotFound, IntegrityError):  # the mail or its knowledge base is gone
                log.info("document %s was deleted while its attachments were queued", parent.id)
                break
            else:
                added += 0 if duplicate else 1
        log.info("document %s: %d attachment(s) queued as documents", parent.id, added)
        warnings = []
        if unsupported:
            warnings.append(warning("attachment_unsupported", names=_names(unsupported)))
        if too_large:
            warnings.append(warning("attachment_too_large", names=_names(too_large)))
        return warnings
