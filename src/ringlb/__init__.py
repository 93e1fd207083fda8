"""ringlb: a customizable HTTP load balancer with consistent hashing and self-healing replicas."""

from pathlib import Path

from ringlb import hotpath

__version__ = "0.1.0"
# Decided before any other ringlb module is imported: see ringlb.hotpath.
BUILD = hotpath.choose(Path(__file__).parent)
