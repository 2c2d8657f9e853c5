from mechinterp_edu.app.home import home_page

home_page()
