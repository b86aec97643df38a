"""Report formats: each turns a finished `diagnose.models.Report` into text."""
