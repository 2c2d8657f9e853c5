"""One package per lesson, named for the lesson's slug (see ``mechinterp_edu.course``).

A lesson package holds everything particular to its lesson; the engines find its parts by
convention (``reference``, ``derivations``, ``grading``, ``charts``, ``model``) through the
course map and never import a lesson package any other way. Reference implementations are
written for speed and batching; the worked solutions in ``solutions/`` are a second,
step-by-step implementation and tests show the two agree.
"""
