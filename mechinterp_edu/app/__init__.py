"""The Streamlit app: home, one page per lesson, exercises, classroom mode.

``app.py`` (repository root) builds the navigation from :mod:`.navigation`; each
page file in ``pages/`` is two lines calling one render function here.

Modules:
    navigation     the page list (URL paths, titles, sections)
    cache          cached lesson sources, models, derivation verdicts, live outputs
    errors         one-line "what went wrong, what to do" messages for exceptions
    state          session-state helpers that survive page switches
    controls       front-matter controls -> widgets -> ctx (validated)
    render         live outputs (altair, DataFrame, markdown, metrics, verdicts) -> Streamlit;
                   charts fitted to their container by mechinterp_edu.charts.fit_layout
    blocks         one lesson step's blocks (markdown, runnable code, derivation line, chart, exercise)
    code_cells     run a lesson's code cells in process, in order, per learner (no Streamlit)
    lesson_page    a lesson page: one step at a time (reader layout) or classroom mode
    steps          the current step (session + ?step= URL), Back / step list / Next, keyboard keys
    classroom      projector mode: a step cut into slides that fit 1280x720
    style          CSS: wrapping equations, metrics that never truncate, classroom sizes
    home           course map, learner progress, device, models
    exercises_page choose, edit/upload, grade and save an exercise
    exercise_files signatures from the stub, notebook -> source, atomic save (no Streamlit)
    progress       the grader's progress store: read for the home page, record after grading
"""
