"""modelapi operator: turns ModelAPI resources into Kubernetes objects."""
