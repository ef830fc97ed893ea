"""The daemon's HTTP API (``zdmproxy serve``): FastAPI on uvicorn, inside zdmproxy's own event loop."""
