"""User-facing errors: raised for bad input, printed by the CLIs as one line, never as a traceback."""


class LoopMDMError(Exception):
    """A problem with what the user asked for (config, files, paths), not a bug in the library."""


class ConfigError(LoopMDMError):
    """One or more invalid config values; each problem names its dotted path and the fix."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class DataError(LoopMDMError):
    """A corpus that is missing, unreadable or too small."""


class CheckpointError(LoopMDMError):
    """A checkpoint that is corrupt, incomplete or does not match the run."""
