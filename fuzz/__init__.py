"""Fuzzing of every decoder of untrusted bytes: the registry (``targets``) and the
coverage-guided atheris harness (``harness``, run by ``make fuzz`` through ``run``)."""
