"""Who is acting: principals established by the server, never by a form field."""

from pipeline.auth.principal import Authenticator, Principal

__all__ = ["Authenticator", "Principal"]
