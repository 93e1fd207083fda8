"""ringlb: a customizable HTTP load balancer with consistent hashing and self-healing replicas."""

__version__ = "0.1.0"
