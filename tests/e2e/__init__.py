"""The e2e tier: tests against the local cluster (see cluster/README.md)."""
