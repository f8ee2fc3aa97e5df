"""A driver for runner tests only (registered by monkeypatching the registry)."""

from one_drivers.core.contract import Call
from one_drivers.core.errors import NotFound
from one_drivers.core.registry import Driver

DRIVER = Driver(
    family="datastore",
    name="fake",
    description="test driver",
    actions={
        "stat": "tests.unit.fake_driver:stat",
        "rm": "tests.unit.fake_driver:rm",
        "clone": "tests.unit.fake_driver:clone",
        "monitor": "tests.unit.fake_driver:monitor",
    },
    defaults={"ANSWER": ("42", "what stat prints"), "ACTION_TIMEOUT": ("5", "")},
)


def stat(call: Call) -> str:
    return call.settings.over(call.doc.image.template).require("ANSWER")


def rm(call: Call) -> None:
    raise NotFound("RBD image one/one-7 does not exist", hint="nothing to remove")


def clone(call: Call) -> None:
    raise ZeroDivisionError("boom\nsecond line")


def monitor(call: Call) -> str:
    return f"TIMEOUT={call.deadline.seconds:g}"
