"""The diagnostic autograder; learner code runs in a bubblewrap jail.

* :mod:`.spec`        what lessons list (Exercise / Case / Mistake); each lesson's in lessons/<slug>/grading.py
* :mod:`.grade`       ``grade_file`` / ``grade_source`` -> ``FileReport`` (the API)
* :mod:`.sources`     .py files and notebooks (nbformat, 'graded' tags, magics) -> source code
* :mod:`.prepare`     cases, reference answers and wrong variants, computed in the parent
* :mod:`.protocol`    the result format (npz, headers checked against the reference first)
* :mod:`.sandbox`     attempts, hard deadlines, reading results; trusted in-process runs
* :mod:`.server`      the fork server (imports torch once), inside the jail when it can be
* :mod:`.jail`        bubblewrap: what the jail sees; whether isolation works here
* :mod:`._child`      the standalone child process (rlimits, the fork server's loop)
* :mod:`._learner_io` running the learner's code and describing its results (child and parent)
* :mod:`.compare`     tolerance and per-case structural checks
* :mod:`.assess`      one exercise's verdict: catalogue, relational diagnoses, feedback
* :mod:`.cache`       disk cache of cases and reference answers
* :mod:`.progress`    the learner's progress store (``record_report`` / ``load_progress``)
* :mod:`.gradebook`   a class: one folder per student, CSV and Gradescope results
* :mod:`.cli`         ``python -m mechinterp_edu grade``
* :mod:`.bench`       grading speed for ``python -m mechinterp_edu bench``
"""
