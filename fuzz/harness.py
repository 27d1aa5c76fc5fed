"""Coverage-guided fuzzing of one decoder with atheris (libFuzzer), outside CI.

    python -m fuzz.harness NAME [libFuzzer options...] [CORPUS_DIR...]

``NAME`` is a key of :data:`fuzz.targets.TARGETS`. The stack's packages are instrumented
for coverage; an exception other than :class:`uptane.errors.UptaneError` (or any
exception, for targets that must never raise) is a finding: libFuzzer writes the input to
``-artifact_prefix`` and stops. ``python -m fuzz.run`` drives every decoder in turn.
"""

from __future__ import annotations

import sys

MISSING = (
    "atheris is not installed: install the fuzz extra (pip install -e '.[fuzz]'); "
    "it builds from PyPI and needs clang/libFuzzer where no wheel fits. "
    "The bounded CI run (tests/security/test_fuzz_decoders.py) needs only hypothesis."
)


def main(argv: list[str]) -> int:
    try:
        import atheris
    except ImportError:
        print(MISSING, file=sys.stderr)
        return 2
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    name = argv[1]
    with atheris.instrument_imports(include=["uptane", "hardware", "secondary", "fuzz"]):
        from fuzz import targets
    if name not in targets.TARGETS:
        print(f"unknown target {name!r}; known: {', '.join(targets.TARGETS)}", file=sys.stderr)
        return 2
    target = targets.TARGETS[name]
    target.seeds()  # build keys and the provisioned Secondary before fuzzing starts

    def one_input(data: bytes) -> None:
        targets.check_one(target, data)

    atheris.Setup([argv[0], *argv[2:]], one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
