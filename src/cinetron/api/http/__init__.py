"""The HTTP side of the API server: OpenAI's Videos API (``/v1/videos``) and the web
preview page at ``/``, on the same engine, admission queue and job store as gRPC.

``app.py`` the ASGI app (Starlette) and its uvicorn server, ``videos.py`` the routes,
``schema.py`` request bodies → ``GenerateRequest`` and jobs → video objects, ``errors.py``
OpenAI's error shape and the status mapping, ``static/`` the page (no build step, no CDN).
"""
