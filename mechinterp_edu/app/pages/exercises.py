from mechinterp_edu.app.exercises_page import exercises_page

exercises_page()
