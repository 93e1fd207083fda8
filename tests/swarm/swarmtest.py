"""Swarm test constants shared by the fixtures and the tests."""

from __future__ import annotations

import os

# The replica image copied into the private engines (make build makes ringlb:latest).
IMAGE = os.environ.get("RINGLB_IMAGE", "ringlb:latest")
