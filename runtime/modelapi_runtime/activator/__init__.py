"""The activator: a small HTTP proxy that holds requests for models at zero replicas until one is ready.

It never imports the runtime's model code (onnxruntime, numpy): it runs from the runtime image as
``modelapi-activator`` with a few tens of MiB. docs/autoscaling.md has the design.
"""
