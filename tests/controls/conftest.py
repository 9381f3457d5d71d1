from tests.controls.support import (  # noqa: F401  (fixtures)
    clock,
    controlled_app,
    controlled_settings,
    open_store,
)
from tests.stores import cosmos_server, settings_on_store, store_backend  # noqa: F401
