"""Developer tools that are not part of rtcore (python -m tools.<name>)."""
