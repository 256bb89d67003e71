"""Ingestion: untrusted bytes -> clean text -> chunks -> vectors."""
