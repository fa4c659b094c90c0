"""Models: RGB+IR teachers with fusion, RGB-only students, one registry for both.

Importing this package registers every teacher and student.
"""

from firekd.models import student as _student  # noqa: F401  (registers students)
from firekd.models import teachers as _teachers  # noqa: F401  (registers teachers)
from firekd.models.registry import (
    create_student,
    create_teacher,
    list_students,
    list_teachers,
    register_student,
    register_teacher,
    resolve_teacher_name,
    teacher_arch,
    teacher_label,
)
from firekd.models.student import build_student

__all__ = ["build_student", "create_student", "create_teacher", "list_students", "list_teachers",
           "register_student", "register_teacher", "resolve_teacher_name", "teacher_arch",
           "teacher_label"]
