"""Build scripts for the evaluation sets in tests/fixtures/eval/<set>/ (see README.md here)."""
