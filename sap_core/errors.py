"""Errors raised by sap_core. The worker maps each class to a stable job `error.code`."""


class SapError(Exception):
    """Base class; `code` is the stable error code the service reports."""

    code = "internal"


class ConfigError(SapError, ValueError):
    code = "invalid_config"


class DataFormatError(SapError, ValueError):
    code = "invalid_data"


class ModelRegistryError(SapError):
    code = "model_unavailable"


class TrainingDivergedError(SapError):
    code = "training_diverged"


class TrainingCancelled(SapError):
    """Raised by the trainer when a callback asks it to stop (cancel or pause)."""

    code = "cancelled"

    def __init__(self, reason: str = "cancel") -> None:
        super().__init__(reason)
        self.reason = reason


class TrainingDeadlineExceeded(SapError):
    """Raised by the trainer when a callback says the run's time limit passed (checkpoint saved)."""

    code = "training_deadline_exceeded"


class EvaluationError(SapError):
    code = "safety_evaluation_error"
