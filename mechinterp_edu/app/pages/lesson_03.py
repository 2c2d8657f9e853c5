from mechinterp_edu.app.lesson_page import lesson_page

lesson_page(3)
