from tests.unit.session.conftest import capture, synthetic_sysfs  # noqa: F401  (shared fixtures)
