"""nbgrader configuration for a course that grades these labs (labs/README.md, "With nbgrader").

Copy this file into the course folder (where ``nbgrader`` runs). It keeps nbgrader's pipeline
and swaps two steps (``ondevice.labs_nbgrader``): the student stubs name the exercise and give a
hint, and ``nbgrader autograde`` runs the checks on the submission's definitions in a sandbox.
"""

from ondevice.labs_nbgrader import configure

c = get_config()  # noqa: F821 (nbgrader defines it when it reads this file)
configure(c, timeout=600)
