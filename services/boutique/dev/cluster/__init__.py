"""The test node: a real single-node Kubernetes on this machine (`boutique cluster`)."""
