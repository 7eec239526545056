"""Development-only tools of the package (the test node, Go tool builds).

Nothing here is imported by a service, and the service images leave this folder out
(`.dockerignore`), so `boutique cluster` and `boutique tools` exist only in a checkout.
"""
