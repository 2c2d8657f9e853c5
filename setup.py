"""Build hook: an installed package (``pip install .``, a wheel) carries the course's text.

The lesson sources (``lessons/*.md``) and exercise stubs (``exercises/*.py``) live at the top
of the checkout, beside the package. ``build_py`` copies them into the built package as
``mechinterp_edu/_course/lessons`` and ``mechinterp_edu/_course/exercises``;
``mechinterp_edu.course.ROOT`` points there when the package runs from an installation, and
at the checkout otherwise (``pip install -e .``, ``make setup``). Worked solutions are not
shipped. Everything else is declared in pyproject.toml.
"""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
COURSE_FILES = {"lessons": "*.md", "exercises": "*.py"}


class BuildPyWithCourse(build_py):
    def run(self):
        super().run()
        target = Path(self.build_lib) / "mechinterp_edu" / "_course"
        for folder, pattern in COURSE_FILES.items():
            for source in sorted((HERE / folder).glob(pattern)):
                destination = target / folder / source.name
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, destination)


setup(cmdclass={"build_py": BuildPyWithCourse})
