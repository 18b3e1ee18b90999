"""Coverage-guided fuzz harnesses (atheris); see docs/fuzzing.md. Run them with ``scripts/fuzz``."""
