"""Boutique Mesh: Online Boutique compatible gRPC services in Python."""

__version__ = "0.1.0"
