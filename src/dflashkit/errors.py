"""One exception family so callers (CLI, server) can turn our errors into clear messages."""


class DFlashError(ValueError):
    """Bad input or an incompatible model: the message names the value and the fix."""


class ConfigError(DFlashError):
    """A drafter config or checkpoint that cannot be used as given."""


class ModelMismatchError(DFlashError):
    """Drafter and target do not fit together (hidden size, vocab, layers)."""


class RequestError(DFlashError):
    """A generation request with invalid parameters (empty prompt, bad sampling values, too long)."""
