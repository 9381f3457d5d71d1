"""Admin conversation review: a sub-app mounted at /admin/ (see `admin.web`)."""

from admin.settings import AdminSettings, AuthMode
from admin.web import create_admin_app

__all__ = ["AdminSettings", "AuthMode", "create_admin_app"]
