"""The one error every webhook verifier raises."""


class WebhookRejectedError(ValueError):
    """A delivery that must not be applied; the message is safe to return to the sender."""
