"""The prediction service: a FastAPI app over the compiled predictor.

`create_app(settings)` builds the app; nothing happens at import time. The model is
loaded (verified, compiled, warmed up) in the app's lifespan and swapped atomically
on reload, so the process starts and stays up even without a usable bundle.
"""
