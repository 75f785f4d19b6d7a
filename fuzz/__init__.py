"""Coverage-guided fuzz targets (atheris) for every parser a remote reaches.

``python -m fuzz.run NAME`` fuzzes one target (``scripts/fuzz`` runs them all, longer);
``tests/test_fuzz.py`` runs each over its seed corpus and for a short pass in CI.
"""
