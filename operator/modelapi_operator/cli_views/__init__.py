"""What the ``modelapi`` CLI prints: pure functions from API objects (plain dicts) to text, one module a command."""
