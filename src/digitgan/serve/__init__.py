"""A local web page and JSON/PNG API for drawing digits with a trained model.

from digitgan.serve import create_app, serve

serve("runs/demo", host="127.0.0.1", port=8000)   # what `digitgan serve` runs
app = create_app(digitgan.load("runs/demo"))       # a Starlette app (ASGI)
app = create_app(gan, hosts="testserver")          # for Starlette's TestClient and its Host
"""

from ..errors import missing_extra

try:
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError:
    raise missing_extra("serve", "starlette and uvicorn", "digitgan serve") from None

from .app import create_app, serve  # noqa: E402

__all__ = ["create_app", "serve"]
