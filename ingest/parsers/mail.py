"""Mail: EML with the standard library's email package, Outlook MSG with python-oxmsg.

A message becomes its subject as a heading, one paragraph of headers (from, to, cc, date) and
its body (the plain-text part, else the HTML part's main content); one page. Its attachments are
returned as files, not parsed here: ingestion queues each as a child document of the mail
(ingest/attachments.py), at most `max_attachments` of them, the rest counted in a warning.
"""

from __future__ import annotations

import email
import email.policy
import io
from dataclasses import dataclass, field
from email.message import EmailMessage, Message
from typing import Any

import oxmsg

from ingest.parsers.base import Attachment, Block, ParsedDocument, ParseError, ParseLimits
from ingest.parsers.detect import EML, MARKDOWN, MSG, TEXT
from ingest.parsers.html import html_to_markdown
from ingest.parsers.notices import warning
from ingest.parsers.text import parse_text

_HEADERS = ("From", "To", "Cc", "Date")


@dataclass
class _Mail:
    subject: str
    headers: list[tuple[str, str]]
    body: str
    body_is_html: bool
    attachments: list[Attachment] = field(default_factory=list)
    dropped: int = 0  # attachments beyond the limit
    unreadable: int = 0  # attachments whose bytes could not be had


def _collect(mail: _Mail, limits: ParseLimits, name: str, data: bytes | None) -> None:
    if data is None:
        mail.unreadable += 1
    elif len(mail.attachments) >= limits.max_attachments:
        mail.dropped += 1
    else:
        mail.attachments.append(Attachment(name, data))


def _eml_attachment(part: EmailMessage, number: int) -> tuple[str, bytes | None]:
    if part.get_content_type() == "message/rfc822":  # a forwarded message: its own .eml
        payload = part.get_payload(0) if part.is_multipart() else None
        inner = payload if isinstance(payload, Message) else None
        subject = str(inner.get("Subject", "")).strip() if inner is not None else ""
        name = part.get_filename() or f"{subject or f'message-{number}'}.eml"
        return name, inner.as_bytes() if inner is not None else None
    name = part.get_filename() or f"attachment-{number}"
    payload = part.get_payload(decode=True)
    return name, payload if isinstance(payload, bytes) else None


def _read_eml(data: bytes, limits: ParseLimits) -> _Mail:
    message = email.message_from_bytes(data, policy=email.policy.default)
    if not isinstance(message, EmailMessage) or not message.keys():
        raise ParseError("the file is not an e-mail message: it has no headers")
    headers = [(h, str(message[h])) for h in _HEADERS if message[h]]
    body_part = message.get_body(preferencelist=("plain", "html"))
    body, is_html = "", False
    if body_part is not None:
        content: Any = body_part.get_content()
        body = content if isinstance(content, str) else ""
        is_html = body_part.get_content_type() == "text/html"
    mail = _Mail(str(message.get("Subject", "")).strip(), headers, body, is_html)
    for number, part in enumerate(message.iter_attachments(), start=1):
        _collect(mail, limits, *_eml_attachment(part, number))
    return mail


def _read_msg(data: bytes, limits: ParseLimits) -> _Mail:
    message = oxmsg.Message.load(io.BytesIO(data))  # bytes under 1536 would be read as a path
    to = ", ".join(r.email_address for r in message.recipients if r.email_address)
    date = message.sent_date.isoformat(" ") if message.sent_date else ""
    values = (message.sender or "", to, "", date)
    headers = [(h, v) for h, v in zip(_HEADERS, values, strict=True) if v]
    html = None if message.body else message.html_body
    mail = _Mail(message.subject.strip(), headers, message.body or html or "", html is not None)
    for number, part in enumerate(message.attachments, start=1):
        try:  # an embedded message or a link instead of a file has no bytes to ingest
            body = part.file_bytes if part.attached_by_value else None
            name = part.file_name or f"attachment-{number}"
        except Exception:  # a damaged attachment costs itself, not the message
            body, name = None, ""
        _collect(mail, limits, name, body)
    return mail


def _body_blocks(mail: _Mail, limits: ParseLimits) -> list[Block]:
    text = html_to_markdown(mail.body, limits) if mail.body_is_html else mail.body
    if not text.strip():
        return []
    kind = MARKDOWN if mail.body_is_html else TEXT
    try:
        return parse_text(text.replace("\f", "\n").encode(), limits, kind).blocks
    except ParseError:  # a body of rules or binary noise: the headers still tell something
        if len(text) > limits.max_chars:
            raise
        return []


def parse_mail(data: bytes, limits: ParseLimits, media_type: str = EML) -> ParsedDocument:
    """Parse an .eml or .msg message; its attachments come back as `attachments`."""
    try:
        mail = _read_msg(data, limits) if media_type == MSG else _read_eml(data, limits)
    except ParseError:
        raise
    except Exception as exc:  # email and olefile raise many types on malformed input
        what = "Outlook message" if media_type == MSG else "e-mail message"
        raise ParseError(f"the {what} could not be read: {exc}") from exc
    blocks = [Block(" ".join(mail.subject.split()) or "(no subject)", 1, "heading", 1)]
    if mail.headers:
        blocks.append(Block("\n".join(f"{h}: {' '.join(v.split())}" for h, v in mail.headers), 1))
    blocks.extend(_body_blocks(mail, limits))
    if sum(len(b.text) for b in blocks) > limits.max_chars:
        raise ParseError(f"the message has more than {limits.max_chars} characters")
    warnings = []
    if mail.dropped:
        warnings.append(
            warning("mail_attachments_limit", count=mail.dropped, limit=limits.max_attachments)
        )
    if mail.unreadable:
        warnings.append(warning("mail_attachments_unreadable", count=mail.unreadable))
    return ParsedDocument(blocks, 1, media_type, warnings, mail.attachments)
