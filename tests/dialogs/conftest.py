from tests.controls.support import (  # noqa: F401  (fixtures)
    clock,
    controlled_app,
    controlled_settings,
    cosmos_server,
    store_backend,
)
