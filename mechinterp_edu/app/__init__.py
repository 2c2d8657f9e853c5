"""The Streamlit app: home, one page per lesson, exercises, classroom mode.

``app.py`` (repository root) builds the navigation from :mod:`.navigation`; each
page file in ``pages/`` is two lines calling one render function here.

Modules:
    navigation     the page list (URL paths, titles, sections)
    cache          cached lesson sources, models, derivation verdicts, live outputs
    errors         one-line "what went wrong, what to do" messages for exceptions
    state          session-state helpers that survive page switches
    controls       front-matter controls -> widgets -> ctx (validated)
    render         live outputs (altair, DataFrame, markdown, metrics, verdicts) -> Streamlit
    blocks         one lesson step's blocks (markdown, code, derivation, chart, exercise)
    lesson_page    a lesson page: full page with table of contents, or classroom mode
    classroom      the one-step-at-a-time stepper (Next/Back, step counter)
    home           course map, learner progress, device, models
    exercises_page choose, edit/upload, grade and save an exercise
    exercise_files signatures from the stub, notebook -> source, atomic save (no Streamlit)
    progress       the grader's progress store: read for the home page, record after grading
"""
