"""The diagnostic, sandboxed autograder.

* :mod:`.spec`      what lessons list (Exercise / Case / Mistake); each lesson's in lessons/<slug>/grading.py
* :mod:`.grade`     ``grade_file`` / ``grade_source`` -> ``FileReport`` (the API)
* :mod:`.sources`   .py files and notebooks (nbformat, 'graded' tags, magics) -> source code
* :mod:`.sandbox`   the fork server, sandboxed attempts, timeouts, validation of results
* :mod:`._child`    the standalone sandbox process (seccomp, Landlock, audit hook, limits)
* :mod:`.compare`   tolerance, structural / catalogue / relational diagnostics
* :mod:`.cache`     disk cache of cases and reference answers
* :mod:`.progress`  the learner's progress store (``record_report`` / ``load_progress``)
* :mod:`.gradebook` a class: one folder per student, CSV and Gradescope results
* :mod:`.cli`       ``python -m mechinterp_edu grade``
* :mod:`.bench`     grading speed for ``python -m mechinterp_edu bench``
"""
