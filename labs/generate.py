"""Write the student version of every lab, ``labs/<lab>.ipynb``, from its solved twin in
``labs/solutions/``, with nbgrader's ``generate_assignment`` (``make labs`` runs this).

The solved notebooks are the only source of the labs: edit those, then run this script, and
``tests/test_labs.py`` fails until the two folders agree. The script makes a temporary nbgrader
course, puts each solved lab in ``source/<lab>/<lab>.ipynb``, runs ``generate_assignment`` with
the labs' configuration (:func:`ondevice.labs_nbgrader.configure`: stubs that name the exercise
and give the hint, predictions set to ``None``, written answers emptied, hidden tests removed)
and copies each ``release/<lab>/<lab>.ipynb`` here. A course on a JupyterHub runs the same
``generate_assignment`` on the same solved notebooks (labs/README.md, "With nbgrader").

Usage: ``python labs/generate.py [--check]`` (``--check``: write nothing, exit 1 and name the
student notebooks that are out of date).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

LABS = Path(__file__).resolve().parent
SOLUTIONS = LABS / "solutions"


def student_versions() -> dict[str, str]:
    """lab id -> the text of its student version, generated in a temporary course."""
    from ondevice.labs_nbgrader import generate

    solved = {p.stem: p.read_text(encoding="utf-8") for p in sorted(SOLUTIONS.glob("*.ipynb"))}
    with tempfile.TemporaryDirectory(prefix="labs-course-") as course:
        released = generate(Path(course), solved)
        texts = {lab: path.read_text(encoding="utf-8") for lab, path in released.items()}
    return {lab: text if text.endswith("\n") else text + "\n" for lab, text in texts.items()}


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for lab, text in student_versions().items():
        target = LABS / f"{lab}.ipynb"
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            stale.append(target)
            if not check:
                target.write_text(text, encoding="utf-8")
    for path in stale:
        print(("out of date: " if check else "wrote: ") + str(path.relative_to(LABS.parent)))
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
