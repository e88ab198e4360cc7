"""Pure builders: validated spec -> Kubernetes manifests (no I/O)."""
