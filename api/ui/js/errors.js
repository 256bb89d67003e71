// A failed request as text in the user's language, chosen by the server's error `code`.
//
// English: the server's own sentence, which is the most specific. Chinese: the text for the
// code (a view may refine it: `<context>.<code>`, e.g. "upload.payload_too_large"), then the
// fields at fault with their problem by pydantic type. A code the console does not know falls
// back to the server's sentence. The server's sentence stays available as a tooltip (serverText).

import { ApiError } from "./api.js";
import { getLang, has, t } from "./i18n.js";

// "body.top_k" -> "top_k": where it came from says nothing to a person filling a form.
function fieldName(detail) {
  const loc = Array.isArray(detail.loc) ? detail.loc : String(detail.field || "").split(".");
  const parts =
    loc.length > 1 && ["body", "query", "path", "header"].includes(loc[0]) ? loc.slice(1) : loc;
  return parts.join(".") || "–";
}

// The problem of one field: by its pydantic type where we have words for it (a limit is read
// from the server's sentence), else the server's sentence.
export function fieldProblem(detail) {
  const key = `field.${detail.type}`;
  if (getLang() === "en" || !has(key)) return detail.message || detail.type || "";
  const limit = /-?\d+(?:\.\d+)?/.exec(detail.message || "");
  return t(key, { n: limit ? limit[0] : "?" });
}

export function fieldsText(details) {
  return details
    .map((d) => t("error.field", { field: fieldName(d), problem: fieldProblem(d) }))
    .join(t("error.field_sep"));
}

export function errorText(exc, context) {
  if (!(exc instanceof ApiError)) return exc?.message || String(exc);
  const { code, status, details } = exc;
  if (code === "network") return t("error.network"); // the browser's words are not for people
  const specific = context && has(`${context}.${code}`) ? `${context}.${code}` : null;
  const general = has(`error.${code}`) ? `error.${code}` : null;
  if (getLang() === "en" && exc.message) return exc.message;
  if (!specific && !general) return exc.message || t("error.http_error", { status });
  const text = t(specific || general, { status });
  return details?.length ? `${text} ${t("error.fields", { fields: fieldsText(details) })}` : text;
}

// The server's sentence, for a tooltip, when the text shown is not already it.
export function serverText(exc) {
  return exc instanceof ApiError && exc.message && exc.message !== errorText(exc)
    ? exc.message
    : null;
}
