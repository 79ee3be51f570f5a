"""Translation helper: Slicer's ``tr`` inside the application, the identity in headless ``slicer-core``."""

try:
    from slicer.i18n import tr as _  # noqa: F401  (re-exported)
except ImportError:  # slicer-core ships MRML without the application's translation layer

    def _(text: str) -> str:
        """Returns ``text`` unchanged (no translator outside the Slicer application)."""
        return text


__all__ = ["_"]
