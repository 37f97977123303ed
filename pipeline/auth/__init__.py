"""Who is acting: principals established by the server, never by a form field, and who may decide what."""

from pipeline.auth.authorize import ApproverCheck, four_eyes
from pipeline.auth.principal import Authenticator, Principal

__all__ = ["ApproverCheck", "Authenticator", "Principal", "four_eyes"]
