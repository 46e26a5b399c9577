"""Package data: the project's own URDFs (see LICENSES.md for provenance)."""
