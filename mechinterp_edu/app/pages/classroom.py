from mechinterp_edu.app.lesson_page import classroom_page

classroom_page()
